#!/usr/bin/env bash
# Queries across runs at scale: generate a store with RUNS runs over a STEPS-step pipeline (a
# parameter grid, see bench/lineage_gen.rs) and BUNDLES bundle records, then time
# `run compare` (tables and --vary, through lineage too) and `run diff --deep` with a warm local
# catalog, and check that a warm catalog catches up with a run another machine added.
#
#   cargo build --release -p datamon-cli -p datamon --bins --examples
#   bench/compare.sh [RUNS] [BUNDLES] [STEPS]      # default 100000 1000000 5
#
# Each query runs REPEAT times (default 3); the table shows the fastest and the slowest, the
# peak RSS and the output size. BENCH_DIR=... keeps the store there (and reuses it when it holds
# a finished store: delete it to regenerate).
set -euo pipefail
RUNS=${1:-100000}
BUNDLES=${2:-1000000}
STEPS=${3:-5}
REPEAT=${REPEAT:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DATAMON_BIN:-$ROOT/target/release/datamon}
GEN=${LINEAGE_GEN:-$ROOT/target/release/examples/lineage-gen}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/datamon-compare-XXXXXX)}
mkdir -p "$WORK"
STORE="file://$WORK/store"
export DATAMON_HOME="$WORK/home" DATAMON_STORE="$STORE"

echo "# compare benchmark: $RUNS runs, $BUNDLES bundles, $STEPS steps ($(nproc) cores, $(date -u +%FT%TZ))"
if [ -f "$WORK/gen.done" ]; then
  echo "reusing the store in $WORK"
else
  rm -rf "$WORK/store" "$WORK/home"
  start=$(date +%s.%N)
  "$GEN" "$STORE" "$RUNS" "$BUNDLES" "$STEPS" | tee "$WORK/gen.txt"
  end=$(date +%s.%N)
  printf 'generation: %.1f s\n' "$(echo "$end - $start" | bc)"
  touch "$WORK/gen.done"
fi
eval "$(grep -E '^(DEEP_A|DEEP_B|LAST_STEP|TRAIN_INPUT)=' "$WORK/gen.txt")"
echo "store: $(du -sh "$WORK/store" | cut -f1), $(find "$WORK/store/runs" -type f | wc -l) run records"

t() { # label, command...
  local label=$1; shift
  local best="" worst="" rss=0 i s e d r
  for i in $(seq "$REPEAT"); do
    s=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$WORK/rss.txt" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || true
    e=$(date +%s.%N)
    d=$(echo "$e - $s" | bc)
    r=$(tail -1 "$WORK/rss.txt")
    [ -z "$best" ] || [ "$(echo "$d < $best" | bc)" = 1 ] && best=$d
    [ -z "$worst" ] || [ "$(echo "$d > $worst" | bc)" = 1 ] && worst=$d
    [ "$r" -gt "$rss" ] && rss=$r
  done
  printf '| %-62s | %6.3f s | %6.3f s | %4d MiB | %7d lines |\n' "$label" "$best" "$worst" \
    "$((rss / 1024))" "$(wc -l <"$WORK/out.txt")"
}

echo
echo "| command | fastest | slowest | peak RSS | output |"
echo "|---|---|---|---|---|"
REPEAT=1 t "run list (cold: first sync of the catalog)" "$BIN" run list
t "run list (warm)" "$BIN" run list
t "run compare --step train --vary lr" "$BIN" run compare --step train --vary lr
t "run compare --step train --vary lr --json" "$BIN" --json run compare --step train --vary lr
t "run compare --step evaluate --vary lr (lr one step up)" "$BIN" run compare --step evaluate --vary lr
t "run compare --step $LAST_STEP --vary raw-00 ($((STEPS - 1)) steps up)" "$BIN" run compare --step "$LAST_STEP" --vary raw-00
t "run compare --step train --vary code" "$BIN" run compare --step train --vary code
t "run compare --step train (table)" "$BIN" run compare --step train
t "run compare --step train --where lr=0.3 --sort -loss --csv" "$BIN" run compare --step train --where lr=0.3 --sort -loss --csv
t "run diff A B (plain)" "$BIN" run diff "$DEEP_A" "$DEEP_B"
t "run diff A B --deep ($STEPS steps)" "$BIN" run diff "$DEEP_A" "$DEEP_B" --deep
t "run diff A B --deep --json" "$BIN" --json run diff "$DEEP_A" "$DEEP_B" --deep

# Another machine (its own home, so its own catalog) records a run; this machine's warm catalog
# must notice it on the next query.
train_run=$("$BIN" --json run compare --step train --where lr=0.1 | head -1 |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["run"]; print(r["inputs"][0]["repo"]+"@"+r["inputs"][0]["bundle"], r["outputs"][0]["repo"]+"@"+r["outputs"][0]["bundle"])')
read -r in_spec out_spec <<<"$train_run"
before=$("$BIN" run compare --step train --where lr=9 --csv 2>/dev/null | wc -l)
DATAMON_HOME="$WORK/home-other" "$BIN" -q run record --step train --param lr=9 --param epochs=3 \
  --input "$in_spec" --output "$out_spec" --git-commit bench >/dev/null
REPEAT=1 t "run compare --step train --where lr=9 (after another machine's run)" "$BIN" run compare --step train --where lr=9 --csv
after=$(($(wc -l <"$WORK/out.txt") - 1))
before=$((before > 0 ? before - 1 : 0))
echo
echo "catalog catch-up: rows for lr=9 before: $before, after the other machine's run: $after ($([ "$after" = $((before + 1)) ] && echo ok || echo FAIL))"

echo
echo '`run diff --deep A B`:'
echo '```'
"$BIN" run diff "$DEEP_A" "$DEEP_B" --deep || true
echo '```'
echo
echo '`run compare --step '"$LAST_STEP"' --vary raw-00` (head):'
echo '```'
"$BIN" run compare --step "$LAST_STEP" --vary raw-00 | head -12
echo '...'
"$BIN" run compare --step "$LAST_STEP" --vary raw-00 | tail -6
echo '```'
echo
echo "store: $WORK (delete when done)"
