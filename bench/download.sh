#!/usr/bin/env bash
# Download benchmark, repeated: `cp -a` of the tree vs `datamon bundle download` (and a second
# datamon binary, for before/after), ROUNDS rounds, page cache dropped and `sync` included in
# every timed step, as bench/run.sh does. Reports every round and the min-max range.
#
# usage: bench/download.sh [small|large|tiny] [ROUNDS]      (default: small 3)
#
#   DATAMON_BIN       datamon binary (default <repo>/target/release/datamon)
#   DATAMON_BASELINE  a second datamon binary to compare with (optional; its own store, uploaded
#                     by itself)
#   BENCH_STRACE      1 = one more, untimed round of each tool under `strace -c -f` (syscall
#                     summary in the report)
# Writes bench/results/download-PRESET-STAMP.md and prints it.
set -euo pipefail
PRESET=${1:-small}
ROUNDS=${2:-3}
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
DATAMON_BIN=${DATAMON_BIN:-$REPO_DIR/target/release/datamon}
DATAMON_BASELINE=${DATAMON_BASELINE:-}
BENCH_STRACE=${BENCH_STRACE:-0}
DATA="$BENCH_DIR/data/$PRESET"
STAMP=$(date +%Y%m%d-%H%M%S)
WORK="$DATA/dl-$STAMP"
OUT="$BENCH_DIR/results/download-$PRESET-$STAMP.md"
mkdir -p "$BENCH_DIR/results" "$WORK"
trap 'rm -rf "$WORK"' EXIT
log() { printf '[download %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

python3 "$BENCH_DIR/gen_dataset.py" --preset "$PRESET" --out "$DATA" >&2
drop() { sync; { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null || true; }

# Stores: a copy for cp, an upload per datamon binary.
log "setup: cp -a v1 and uploads"
cp -a "$DATA/v1" "$WORK/cp-src"
declare -A BIN ID
BIN[datamon]=$DATAMON_BIN
[ -n "$DATAMON_BASELINE" ] && BIN[baseline]=$DATAMON_BASELINE
TOOLS=(cp datamon)
[ -n "$DATAMON_BASELINE" ] && TOOLS+=(baseline)
dm() { local t=$1; shift; env DATAMON_HOME="$WORK/$t-home" "${BIN[$t]}" "$@" --store "file://$WORK/$t-store"; }
for t in "${TOOLS[@]}"; do
  [ "$t" = cp ] && continue
  dm "$t" repo create --repo bench --description bench >/dev/null
  ID[$t]=$(dm "$t" bundle upload --path "$DATA/v1" --message v1 --repo bench | sed -n 's/^.*Uploaded bundle id: *\([^[:space:]]*\).*$/\1/p' | tail -n1)
done

declare -A ROWS
cmd_of() { # tool dest -> the download command
  local t=$1 dest=$2
  if [ "$t" = cp ]; then
    echo cp -a "$WORK/cp-src" "$dest"
  else
    echo env DATAMON_HOME="$WORK/$t-home" DATAMON_LOG=datamon=debug "${BIN[$t]}" bundle download \
      --repo bench --bundle "${ID[$t]}" --destination "$dest" --store "file://$WORK/$t-store"
  fi
}
for r in $(seq 1 "$ROUNDS"); do
  for t in "${TOOLS[@]}"; do
    dest="$WORK/restore-$t"
    rm -rf "$dest"; [ "$t" = cp ] || mkdir -p "$dest"
    drop
    # shellcheck disable=SC2046
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" bash -c '"$@" && sync' _ $(cmd_of "$t" "$dest") \
      >/dev/null 2>"$WORK/err-$t"
    read -r wall user sys rss < "$WORK/time"
    reads=$(sed -n 's/.*range_reads=\([0-9]*\).*/\1/p' "$WORK/err-$t" | tail -n1)
    if [ "$r" = 1 ]; then
      diff -r -q "$DATA/v1" "$dest" >/dev/null || { echo "$t: restored tree differs" >&2; exit 1; }
    fi
    ROWS[$t]+="$wall $user $sys $rss ${reads:--}"$'\n'
    log "round $r $t: ${wall}s wall, ${user}s user, ${sys}s sys, $((rss / 1024)) MiB, reads ${reads:--}"
  done
done

STRACE_OUT=""
if [ "$BENCH_STRACE" = 1 ] && command -v strace >/dev/null; then
  for t in "${TOOLS[@]}"; do
    dest="$WORK/restore-$t"
    rm -rf "$dest"; [ "$t" = cp ] || mkdir -p "$dest"
    drop
    # shellcheck disable=SC2046
    strace -c -f -o "$WORK/strace-$t" $(cmd_of "$t" "$dest") >/dev/null 2>&1 || true
    STRACE_OUT+=$'\n'"### $t"$'\n\n```\n'"$(head -n 22 "$WORK/strace-$t")"$'\n```\n'
  done
fi

files=$(find "$DATA/v1" -type f | wc -l)
{
  echo "# download benchmark: preset \`$PRESET\` ($STAMP), $ROUNDS rounds"
  echo
  echo "- machine: $(nproc) cores ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), $(findmnt -no FSTYPE -T "$DATA" 2>/dev/null || echo '?')"
  echo "- dataset: v1 $files files, $(du -sb "$DATA/v1" | awk '{printf "%.1f MiB", $1/1048576}')"
  echo "- page cache dropped before each timed step, \`sync\` included; load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  for t in "${TOOLS[@]}"; do [ "$t" = cp ] || echo "- $t: ${BIN[$t]}"; done
  echo
  echo "| tool | round | wall s | user s | sys s | peak RSS MiB | range reads | reads per file |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${TOOLS[@]}"; do
    n=0
    while read -r wall user sys rss reads; do
      [ -n "$wall" ] || continue
      n=$((n + 1))
      per=$([ "$reads" = - ] && echo - || awk -v r="$reads" -v f="$files" 'BEGIN{printf "%.4f", r/f}')
      echo "| $t | $n | $wall | $user | $sys | $(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}') | $reads | $per |"
    done <<< "${ROWS[$t]}"
  done
  echo
  echo "| tool | wall s (min-max) | sys s (min-max) | peak RSS MiB (max) |"
  echo "|---|---|---|---:|"
  for t in "${TOOLS[@]}"; do
    awk -v t="$t" 'NF{w[NR]=$1; s[NR]=$3; if ($4>m) m=$4; n=NR}
      END{wmin=wmax=w[1]; smin=smax=s[1]; for(i=1;i<=n;i++){if(w[i]<wmin)wmin=w[i]; if(w[i]>wmax)wmax=w[i]; if(s[i]<smin)smin=s[i]; if(s[i]>smax)smax=s[i]}
      printf "| %s | %.2f-%.2f | %.2f-%.2f | %.1f |\n", t, wmin, wmax, smin, smax, m/1024}' <<< "${ROWS[$t]}"
  done
  if [ -n "$STRACE_OUT" ]; then
    echo
    echo "## Syscall summaries (\`strace -c -f\`, one untimed round each)"
    echo "$STRACE_OUT"
  fi
} | tee "$OUT"
