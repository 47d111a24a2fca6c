#!/usr/bin/env bash
# Comparative benchmark: datamon vs cp -a vs borg vs restic, one run, same data
# and disk. See bench/README.md.
#
# usage: bench/run.sh [large|small|tiny]        (default: tiny)
#
# Environment knobs:
#   DATAMON_BIN          datamon binary (default: <repo>/target/release/datamon)
#   DATAMON_STORE_FIRST  1 = pass `--store URL` before the subcommand instead of
#                        after its arguments (default 0)
#   BENCH_TOOLS          tools to run, default "cp datamon borg restic"
#   BENCH_SYNC           1 (default) = every timed step ends with `sync`, so
#                        write-back of the written data is counted for all tools
#   BENCH_KEEP           1 = keep the run's stores and restore dirs
set -euo pipefail

PRESET="${1:-tiny}"
case "$PRESET" in
  large|small|tiny) ;;
  -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
  *) echo "usage: $0 [large|small|tiny]" >&2; exit 2 ;;
esac

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
DATAMON_BIN="${DATAMON_BIN:-$REPO_DIR/target/release/datamon}"
DATAMON_STORE_FIRST="${DATAMON_STORE_FIRST:-0}"
BENCH_TOOLS="${BENCH_TOOLS:-cp datamon borg restic}"
BENCH_SYNC="${BENCH_SYNC:-1}"
BENCH_KEEP="${BENCH_KEEP:-0}"
TIME_BIN=/usr/bin/time

DATA="$BENCH_DIR/data/$PRESET"
STAMP="$(date +%Y%m%d-%H%M%S)"
RUN="$DATA/run-$STAMP"
RESULTS_DIR="$BENCH_DIR/results"
OUT_MD="$RESULTS_DIR/$PRESET-$STAMP.md"

log()  { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[bench %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; NOTES+=("$*"); }

NOTES=()
declare -A WALL CPU RSS STATUS STORE
STEPS=("repo create" "upload v1" "upload v1 again" "upload v2" "download v1" "verify")
TOOLS_RUN=()

# ------------------------------------------------------------------ tools
ensure_tools() {
  local need=()
  [ -x "$TIME_BIN" ] || need+=(time)
  [[ " $BENCH_TOOLS " != *" borg "* ]]   || command -v borg   >/dev/null || need+=(borgbackup)
  [[ " $BENCH_TOOLS " != *" restic "* ]] || command -v restic >/dev/null || need+=(restic)
  if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing: ${need[*]}"
      apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
        || warn "apt-get install ${need[*]} failed"
    else
      warn "missing ${need[*]} and not root: cannot install"
    fi
  fi
  if [ ! -x "$TIME_BIN" ]; then
    echo "error: $TIME_BIN (GNU time) is required" >&2
    exit 1
  fi
}

# ------------------------------------------------------------------ caches
CACHE_DROP="no"
drop_caches() {
  sync
  if [ "$(id -u)" = 0 ] && { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    CACHE_DROP="yes"
  fi
  return 0
}

# ------------------------------------------------------------------ measuring
# measure TOOL STEP CWD CMD [ARGS...]
# Drops caches, runs CMD in CWD under GNU time (+ sync if BENCH_SYNC=1),
# stdout -> $LAST_LOG.out, stderr -> $LAST_LOG.err. Returns CMD's status.
LAST_LOG=""
measure() {
  local tool=$1 step=$2 cwd=$3; shift 3
  local key="$tool|$step" slug rc=0 wall user sys rss
  slug="$(printf '%s-%s' "$tool" "$step" | tr ' /' '__')"
  LAST_LOG="$RUN/logs/$slug"
  drop_caches
  log "$tool: $step"
  "$TIME_BIN" -f '%e %U %S %M' -o "$LAST_LOG.time" \
    bash -c 'cd -- "$0" && "$@" && { [ "$BENCH_SYNC" = 0 ] || sync; }' "$cwd" "$@" \
    >"$LAST_LOG.out" 2>"$LAST_LOG.err" || rc=$?
  read -r wall user sys rss < <(tail -n1 "$LAST_LOG.time" 2>/dev/null || echo "0 0 0 0") || true
  WALL[$key]="$wall"
  CPU[$key]="$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u+s}')"
  RSS[$key]="$rss"
  if ((rc)); then
    STATUS[$key]="FAIL (rc=$rc)"
    warn "$tool '$step' failed with rc=$rc; see $LAST_LOG.err (kept)"
    BENCH_KEEP_LOGS=1
    tail -n 5 "$LAST_LOG.err" | sed 's/^/    /' >&2 || true
  else
    STATUS[$key]="ok"
  fi
  log "  -> ${wall}s wall, ${CPU[$key]}s cpu, $((rss / 1024)) MiB rss, ${STATUS[$key]}"
  return $rc
}

verify() {  # verify TOOL RESTORED_DIR
  local tool=$1 dir=$2
  log "$tool: verify (diff -r)"
  if [ -d "$dir" ] && diff -r -q "$DATA/v1" "$dir" >"$RUN/logs/$tool-verify.diff" 2>&1; then
    STATUS[$tool|verify]="ok"
  else
    STATUS[$tool|verify]="FAIL"
    BENCH_KEEP_LOGS=1
    warn "$tool: restored v1 differs from the original (see $RUN/logs/$tool-verify.diff)"
  fi
}

store_size() { du -sb "$1" | cut -f1; }

# ------------------------------------------------------------------ tools
run_cp() {
  local d="$RUN/cp"
  mkdir -p "$d/store" "$d/restore"
  measure cp "upload v1" "$d" cp -a "$DATA/v1" "$d/store/v1" || return 0
  STORE[cp|v1]="$(store_size "$d/store")"
  STORE[cp|v1b]="${STORE[cp|v1]}"
  if measure cp "upload v2" "$d" cp -a "$DATA/v2" "$d/store/v2"; then
    STORE[cp|v2]="$(store_size "$d/store")"
  fi
  measure cp "download v1" "$d" cp -a "$d/store/v1" "$d/restore/v1" \
    && verify cp "$d/restore/v1"
  return 0
}

run_datamon() {
  local d="$RUN/datamon" url id
  mkdir -p "$d/home" "$d/store" "$d/restore"
  url="file://$d/store"
  dm() {  # argv for a datamon call: dm SUBCOMMAND ARGS...
    DM=(env "DATAMON_HOME=$d/home" "$DATAMON_BIN")
    if [ "$DATAMON_STORE_FIRST" = 1 ]; then DM+=(--store "$url" "$@"); else DM+=("$@" --store "$url"); fi
  }
  dm repo create --repo bench --description bench
  measure datamon "repo create" "$d" "${DM[@]}" || return 0
  dm bundle upload --path "$DATA/v1" --message v1 --repo bench
  measure datamon "upload v1" "$d" "${DM[@]}" || return 0
  id="$(tail -n1 "$LAST_LOG.out" | sed -n 's/^.*Uploaded bundle id: *\([^[:space:]]*\).*$/\1/p')"
  if [ -z "$id" ]; then
    STATUS[datamon|upload v1]="FAIL (no bundle id)"
    BENCH_KEEP_LOGS=1
    warn "datamon: last stdout line of the v1 upload is not 'Uploaded bundle id:<ID>' (see $LAST_LOG.out): remaining datamon steps skipped"
    return 0
  fi
  STORE[datamon|v1]="$(store_size "$d/store")"
  measure datamon "upload v1 again" "$d" "${DM[@]}" || true
  STORE[datamon|v1b]="$(store_size "$d/store")"
  dm bundle upload --path "$DATA/v2" --message v2 --repo bench
  if measure datamon "upload v2" "$d" "${DM[@]}"; then
    STORE[datamon|v2]="$(store_size "$d/store")"
  fi
  log "datamon: v1 bundle id $id"
  dm bundle download --repo bench --bundle "$id" --destination "$d/restore/v1"
  mkdir -p "$d/restore/v1"
  measure datamon "download v1" "$d" "${DM[@]}" && verify datamon "$d/restore/v1"
  return 0
}

run_borg() {
  local d="$RUN/borg" r
  r="$d/repo"
  mkdir -p "$d/home" "$d/restore"
  export BORG_BASE_DIR="$d/home"
  export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
  export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
  # Archive relative paths from inside DATA, so the re-upload sees identical paths.
  measure borg "repo create" "$d" borg init -e none "$r" || return 0
  measure borg "upload v1" "$DATA" borg create --compression lz4 "$r::v1" v1 || return 0
  STORE[borg|v1]="$(store_size "$r")"
  measure borg "upload v1 again" "$DATA" borg create --compression lz4 "$r::v1b" v1 || true
  STORE[borg|v1b]="$(store_size "$r")"
  if measure borg "upload v2" "$DATA" borg create --compression lz4 "$r::v2" v2; then
    STORE[borg|v2]="$(store_size "$r")"
  fi
  measure borg "download v1" "$d/restore" borg extract "$r::v1" \
    && verify borg "$d/restore/v1"
  return 0
}

run_restic() {
  local d="$RUN/restic" r snap dir
  r="$d/repo"
  mkdir -p "$d/restore"
  export RESTIC_PASSWORD=bench
  export RESTIC_CACHE_DIR="$d/cache"
  measure restic "repo create" "$d" restic init --repo "$r" || return 0
  measure restic "upload v1" "$DATA" restic backup --repo "$r" --host bench v1 || return 0
  snap="$(sed -n 's/^snapshot \([0-9a-f]*\) saved.*/\1/p' "$LAST_LOG.out" | tail -n1)"
  STORE[restic|v1]="$(store_size "$r")"
  measure restic "upload v1 again" "$DATA" restic backup --repo "$r" --host bench v1 || true
  STORE[restic|v1b]="$(store_size "$r")"
  if measure restic "upload v2" "$DATA" restic backup --repo "$r" --host bench v2; then
    STORE[restic|v2]="$(store_size "$r")"
  fi
  if [ -z "$snap" ]; then
    warn "restic: could not parse the snapshot id of v1"
    STATUS[restic|download v1]="FAIL (no id)"
    return 0
  fi
  if measure restic "download v1" "$d" restic restore "$snap" --repo "$r" --target "$d/restore"; then
    # restic keeps the absolute path of what it backed up
    dir="$d/restore$DATA/v1"
    [ -d "$dir" ] || dir="$d/restore/v1"
    verify restic "$dir"
  fi
  return 0
}

tool_version() {
  case "$1" in
    cp) cp --version 2>/dev/null | head -n1 ;;
    datamon) local v; v="$("$DATAMON_BIN" --version 2>/dev/null | head -n1 || true)"
             echo "${v:-version unknown} ($DATAMON_BIN)" ;;
    borg) borg --version 2>/dev/null ;;
    restic) restic version 2>/dev/null | head -n1 ;;
  esac
}

# ------------------------------------------------------------------ report
mib() { [ -n "${1:-}" ] && awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}' || echo "-"; }
ratio() {  # ratio A B -> A/B with 2 decimals, or n/a
  awk -v a="${1:-}" -v b="${2:-}" 'BEGIN{ if (a=="" || b=="" || b+0==0) print "n/a"; else printf "%.2f", a/b }'
}
# check DESC VALUE OP LIMIT -> table row with PASS/FAIL
check() {
  local desc=$1 val=$2 op=$3 lim=$4 res
  res="$(awk -v v="$val" -v l="$lim" -v op="$op" 'BEGIN{
    if (v=="" || v=="n/a" || l=="" || l=="n/a") { print "n/a"; exit }
    ok = (op=="<") ? (v+0 < l+0) : (v+0 <= l+0); print ok ? "PASS" : "FAIL" }')"
  printf '| %s | %s | %s %s | %s |\n' "$desc" "${val:-n/a}" "$op" "${lim:-n/a}" "$res"
}
ok_wall() { [ "${STATUS[$1]:-}" = ok ] && echo "${WALL[$1]}" || echo ""; }
added() {  # bytes added by v2 = store after v2 - store after unchanged re-upload
  [ -n "${STORE[$1|v2]:-}" ] && [ -n "${STORE[$1|v1b]:-}" ] && echo $(( STORE[$1|v2] - STORE[$1|v1b] )) || echo ""
}
peak_rss_mib() {  # max over all timed steps of a tool
  local t=$1 s m=0
  for s in "${STEPS[@]}"; do
    [ -n "${RSS[$t|$s]:-}" ] && (( RSS[$t|$s] > m )) && m=${RSS[$t|$s]}
  done
  awk -v k="$m" 'BEGIN{printf "%.1f", k/1024}'
}

targets() {
  local lbl=""
  [ "$PRESET" = tiny ] && lbl=" (informational: tiny is a smoke run; these are the large-preset targets)"
  echo "## Targets$lbl"
  echo
  echo "| check | value | target | result |"
  echo "|---|---|---|---|"
  local dv1 dv1b ddl s ok=1
  for s in "upload v1" "upload v1 again" "upload v2" "download v1" "verify"; do
    [[ " ${TOOLS_RUN[*]} " == *" datamon "* ]] || { ok=""; break; }
    [ "${STATUS[datamon|$s]:-missing}" = ok ] || ok=0
  done
  dv1="$(ok_wall 'datamon|upload v1')"; dv1b="$(ok_wall 'datamon|upload v1 again')"
  ddl="$(ok_wall 'datamon|download v1')"
  if [ "$PRESET" = small ]; then
    check "v1 upload wall / restic" "$(ratio "$dv1" "$(ok_wall 'restic|upload v1')")" "<" 1
    check "v1 upload wall / cp -a" "$(ratio "$dv1" "$(ok_wall 'cp|upload v1')")" "<=" 1.2
    check "unchanged re-upload wall (s), about 1 s" "$dv1b" "<=" 1.5
    check "download wall / cp -a" "$(ratio "$ddl" "$(ok_wall 'cp|download v1')")" "<=" 1.2
    check "store after v1 / restic" "$(ratio "${STORE[datamon|v1]:-}" "${STORE[restic|v1]:-}")" "<=" 1
    check "store after v2 / restic" "$(ratio "${STORE[datamon|v2]:-}" "${STORE[restic|v2]:-}")" "<=" 1
  else
    check "v1 upload wall / borg" "$(ratio "$dv1" "$(ok_wall 'borg|upload v1')")" "<=" 1
    check "v1 upload wall / cp -a" "$(ratio "$dv1" "$(ok_wall 'cp|upload v1')")" "<=" 1.15
    check "unchanged re-upload wall / borg" "$(ratio "$dv1b" "$(ok_wall 'borg|upload v1 again')")" "<" 1
    check "added by v2 / borg" "$(ratio "$(added datamon)" "$(added borg)")" "<" 0.5
    check "download wall / cp -a" "$(ratio "$ddl" "$(ok_wall 'cp|download v1')")" "<=" 1.3
    check "peak RSS (MiB), any step" "$( [ "$ok" = 1 ] && peak_rss_mib datamon || echo n/a)" "<" 256
  fi
  case "$ok" in
    1) echo "| all datamon steps succeeded, download identical | yes | yes | PASS |" ;;
    0) echo "| all datamon steps succeeded, download identical | no | yes | FAIL |" ;;
    *) echo "| all datamon steps succeeded, download identical | not run | yes | n/a |" ;;
  esac
  echo
}

report() {
  local t s key v1f v1b v2f v2b memk fs cpu_model
  read -r v1f v1b < <(find "$DATA/v1" -type f -printf '%s\n' | awk '{n++; b+=$1} END{print n+0, b+0}')
  read -r v2f v2b < <(find "$DATA/v2" -type f -printf '%s\n' | awk '{n++; b+=$1} END{print n+0, b+0}')
  memk="$(awk '/^MemTotal/{print $2}' /proc/meminfo)"
  fs="$(findmnt -no FSTYPE,SOURCE -T "$DATA" 2>/dev/null | head -n1 || stat -f -c %T "$DATA")"
  cpu_model="$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
  echo "# datamon benchmark: preset \`$PRESET\` ($STAMP)"
  echo
  echo "- machine: $(nproc) cores (${cpu_model:-unknown cpu}), $(awk -v k="$memk" 'BEGIN{printf "%.1f GiB", k/1048576}') RAM, kernel $(uname -r)"
  echo "- disk: \`$DATA\` on ${fs:-unknown fs}"
  echo "- dataset: v1 $v1f files, $(mib "$v1b") MiB; v2 $v2f files, $(mib "$v2b") MiB"
  echo "- page cache dropped before every timed step: $CACHE_DROP; sync included in each timed step: $([ "$BENCH_SYNC" = 0 ] && echo no || echo yes)"
  echo "- datamon source: $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO_DIR" diff --quiet HEAD -- 2>/dev/null || echo ' (dirty tree)')"
  for t in "${TOOLS_RUN[@]}"; do
    echo "- $t: $(tool_version "$t")"
  done
  for s in "${NOTES[@]}"; do
    echo "- note: $s"
  done
  echo
  echo "## Steps"
  echo
  echo "| tool | step | wall s | cpu s (user+sys) | peak RSS MiB | status |"
  echo "|---|---|---:|---:|---:|---|"
  for t in "${TOOLS_RUN[@]}"; do
    for s in "${STEPS[@]}"; do
      key="$t|$s"
      if [ "$s" = verify ]; then
        [ -n "${STATUS[$key]:-}" ] && echo "| $t | verify (diff -r) | | | | ${STATUS[$key]} |"
        continue
      fi
      [ -n "${STATUS[$key]:-}" ] || continue
      echo "| $t | $s | ${WALL[$key]:-} | ${CPU[$key]:-} | $(awk -v k="${RSS[$key]:-0}" 'BEGIN{printf "%.1f", k/1024}') | ${STATUS[$key]} |"
    done
  done
  echo
  echo "## Storage"
  echo
  echo "| tool | store after v1 MiB | store after v1 again MiB | store after v2 MiB | added by v2 MiB |"
  echo "|---|---:|---:|---:|---:|"
  for t in "${TOOLS_RUN[@]}"; do
    [ -n "${STORE[$t|v1]:-}" ] || continue
    echo "| $t | $(mib "${STORE[$t|v1]:-}") | $(mib "${STORE[$t|v1b]:-}") | $(mib "${STORE[$t|v2]:-}") | $(mib "$(added "$t")") |"
  done
  echo
  echo "(cp: the \"store\" is plain copies of v1 and v2; \"added by v2\" = store after v2 - store after v1 again.)"
  echo
  if [[ " ${TOOLS_RUN[*]} " == *" datamon "* ]]; then
    echo "## Ratios (datamon / other; < 1 means datamon is faster / smaller)"
    echo
    echo "| ratio | step | wall | cpu | peak RSS |"
    echo "|---|---|---:|---:|---:|"
    local o
    for o in cp borg restic; do
      [[ " ${TOOLS_RUN[*]} " == *" $o "* ]] || continue
      for s in "${STEPS[@]}"; do
        [ "$s" = verify ] && continue
        [ -n "${STATUS[datamon|$s]:-}" ] && [ -n "${STATUS[$o|$s]:-}" ] || continue
        echo "| datamon/$o | $s | $(ratio "$(ok_wall "datamon|$s")" "$(ok_wall "$o|$s")") | $(ratio "${CPU[datamon|$s]:-}" "${CPU[$o|$s]:-}") | $(ratio "${RSS[datamon|$s]:-}" "${RSS[$o|$s]:-}") |"
      done
      [ -n "${STORE[datamon|v1]:-}" ] && [ -n "${STORE[$o|v1]:-}" ] && {
        echo "| datamon/$o | store after v1 | $(ratio "${STORE[datamon|v1]}" "${STORE[$o|v1]}") | | |"
        echo "| datamon/$o | store after v2 | $(ratio "${STORE[datamon|v2]:-}" "${STORE[$o|v2]:-}") | | |"
        echo "| datamon/$o | added by v2 | $(ratio "$(added datamon)" "$(added "$o")") | | |"
      }
    done
    echo
  fi
  targets
}

# ------------------------------------------------------------------ cleanup
BENCH_KEEP_LOGS=0
cleanup() {
  local rc=$?
  if [ -d "$RUN" ] && [ "$BENCH_KEEP" != 1 ]; then
    # keep the (small) logs, drop stores, caches and restore dirs
    find "$RUN" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
    [ "$BENCH_KEEP_LOGS" = 1 ] || [ "$rc" != 0 ] || rm -rf "$RUN"
  fi
  exit "$rc"
}

# ------------------------------------------------------------------ main
main() {
  ensure_tools
  log "dataset: $DATA"
  python3 "$BENCH_DIR/gen_dataset.py" --preset "$PRESET" --out "$DATA" >&2
  mkdir -p "$RUN/logs" "$RESULTS_DIR"
  trap cleanup EXIT
  local t
  for t in $BENCH_TOOLS; do
    case "$t" in
      cp) ;;
      datamon)
        if [ ! -x "$DATAMON_BIN" ]; then
          warn "datamon binary not found at $DATAMON_BIN: datamon skipped (set DATAMON_BIN)"
          continue
        fi ;;
      borg|restic)
        if ! command -v "$t" >/dev/null; then
          warn "$t not installed: skipped"
          continue
        fi ;;
      *) warn "unknown tool '$t' ignored"; continue ;;
    esac
    TOOLS_RUN+=("$t")
    "run_$t"
    # free the disk space used by this tool's store/restore before the next one
    [ "$BENCH_KEEP" = 1 ] || rm -rf "$RUN/$t/restore"
  done
  report | tee "$OUT_MD"
  log "results written to $OUT_MD"
}

main "$@"
