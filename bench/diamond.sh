#!/usr/bin/env bash
# Diamond benchmark: 16 concurrent `diamond split add`s of 6,000 small files each, then one
# timed `diamond commit`, on a local directory store. Writes bench/results/diamond-<stamp>.md.
#
# usage: bench/diamond.sh
#
# Environment knobs:
#   DATAMON_BIN   datamon binary (default: <repo>/target/release/datamon)
#   SPLITS        number of splits (default 16)
#   FILES         files per split (default 6000)
#   BENCH_WORK    scratch directory (default: a new temporary directory, removed at the end)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
DATAMON_BIN="${DATAMON_BIN:-$REPO_DIR/target/release/datamon}"
SPLITS="${SPLITS:-16}"
FILES="${FILES:-6000}"
WORK="${BENCH_WORK:-$(mktemp -d /tmp/datamon-diamond-bench.XXXXXX)}"
STAMP="$(date +%Y%m%d-%H%M%S)"
OUT_MD="$BENCH_DIR/results/diamond-$STAMP.md"
[ -n "${BENCH_WORK:-}" ] || trap 'rm -rf "$WORK"' EXIT

export DATAMON_HOME="$WORK/home" DATAMON_STORE="file://$WORK/store" NO_COLOR=1
dm() { "$DATAMON_BIN" "$@"; }
now() { date +%s.%N; }
log() { printf '[diamond %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "making $SPLITS folders of $FILES files in $WORK"
for i in $(seq 0 $((SPLITS - 1))); do
  python3 - "$WORK/src$i" "$i" "$FILES" <<'PY'
import os, sys
root, i, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for j in range(n):
    d = os.path.join(root, f"part{i:02}", f"d{j // 500:02}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{j:05}.txt"), "w") as f:
        f.write(f"split {i} file {j}\n" * (1 + j % 7))
PY
done

dm repo create --repo bench --description "diamond benchmark" >/dev/null
D="$(dm diamond initialize --repo bench)"
log "diamond $D: $SPLITS concurrent split adds"
t0="$(now)"
pids=()
for i in $(seq 0 $((SPLITS - 1))); do
  dm -q diamond split add --repo bench --diamond "$D" --path "$WORK/src$i" >"$WORK/split$i.out" 2>&1 &
  pids+=("$!")
done
for p in "${pids[@]}"; do wait "$p"; done
t1="$(now)"
log "commit"
dm --json diamond commit --repo bench --diamond "$D" --message bench >"$WORK/commit.json"
t2="$(now)"
files="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bundle"]["files"])' "$WORK/commit.json")"
splits_s="$(echo "$t1 - $t0" | bc)"
commit_s="$(echo "$t2 - $t1" | bc)"
expected=$((SPLITS * FILES))
[ "$files" = "$expected" ] || { echo "bundle has $files files, expected $expected" >&2; exit 1; }

mkdir -p "$BENCH_DIR/results"
{
  echo "# Diamond benchmark, $STAMP"
  echo
  echo "$(nproc) CPUs, $(uname -sr), local directory store; $("$DATAMON_BIN" version 2>/dev/null | head -1)"
  echo
  echo "| step | seconds |"
  echo "|---|---|"
  echo "| $SPLITS concurrent \`split add\` of $FILES files each | $splits_s |"
  echo "| \`diamond commit\` ($files files in the bundle) | $commit_s |"
} >"$OUT_MD"
cat "$OUT_MD"
