#!/usr/bin/env bash
# Lineage at scale: generate a store with RUNS runs and BUNDLES bundle records, then time
# `run list` (first sync, cold cache), `run diff`, `bundle lineage`, `log` and
# `bundle list --where` with a warm local catalog cache.
#
#   cargo build --release -p datamon-cli && cargo build --release -p datamon --example lineage-gen
#   bench/lineage.sh [RUNS] [BUNDLES]        # default 10000 100000
set -euo pipefail
RUNS=${1:-10000}
BUNDLES=${2:-100000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DATAMON_BIN:-$ROOT/target/release/datamon}
GEN=${LINEAGE_GEN:-$ROOT/target/release/examples/lineage-gen}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/datamon-lineage-XXXXXX)}
STORE="file://$WORK/store"
export DATAMON_HOME="$WORK/home" DATAMON_STORE="$STORE"

echo "# lineage benchmark: $RUNS runs, $BUNDLES bundles ($(nproc) cores, $(date -u +%FT%TZ))"
start=$(date +%s.%N)
"$GEN" "$STORE" "$RUNS" "$BUNDLES" | tee "$WORK/gen.txt"
end=$(date +%s.%N)
printf 'generation: %.1f s\n' "$(echo "$end - $start" | bc)"
eval "$(grep -E '^(RUN_A|RUN_B|EVAL_BUNDLE|RAW_BUNDLE)=' "$WORK/gen.txt")"

t() { # label, command...
  local label=$1; shift
  local s e
  s=$(date +%s.%N)
  "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || true
  e=$(date +%s.%N)
  printf '| %-45s | %6.3f s | %7d lines |\n' "$label" "$(echo "$e - $s" | bc)" "$(wc -l <"$WORK/out.txt")"
}

echo
echo "| command | time | output |"
echo "|---|---|---|"
t "run list (cold: first sync of $RUNS runs)" "$BIN" run list
t "run list (warm)" "$BIN" run list
t "run diff A B" "$BIN" run diff "$RUN_A" "$RUN_B"
t "bundle lineage eval (both ways)" "$BIN" bundle lineage --repo eval --bundle "$EVAL_BUNDLE"
t "bundle lineage raw --downstream" "$BIN" bundle lineage --repo raw-00 --bundle "$RAW_BUNDLE" --downstream
t "log --repo features (cold bundles of repo)" "$BIN" log --repo features
t "log --repo features (warm)" "$BIN" log --repo features
t "log --repo raw-00 (cold)" "$BIN" log --repo raw-00
t "log --repo raw-00 (warm)" "$BIN" log --repo raw-00
t "log --repo raw-00 -n 20 (warm)" "$BIN" log --repo raw-00 -n 20
t "bundle list raw-01 --where meta.dataset=set-3 (cold)" "$BIN" bundle list --repo raw-01 --where meta.dataset=set-3
t "bundle list raw-01 --where meta.dataset=set-3 (warm)" "$BIN" bundle list --repo raw-01 --where meta.dataset=set-3
t "run list --step train --since 364d (warm)" "$BIN" run list --step train --since 364d
echo
echo '```'
"$BIN" run diff "$RUN_A" "$RUN_B" || true
echo '```'
echo
echo "store: $WORK (delete when done)"
