#!/usr/bin/env bash
# Peak memory of the big commands: `bundle upload` and `bundle download` of a preset's v1 on a
# fresh local store, with wall, user, system time and peak RSS from GNU time; with
# DATAMON_BASELINE, the same steps with a second binary, interleaved round by round.
#
# usage: bench/memory.sh [small|large|tiny] [ROUNDS]        (default: small 2)
#
#   DATAMON_BIN       datamon binary (default <repo>/target/release/datamon)
#   DATAMON_BASELINE  a second datamon binary to compare with (optional)
# Needs GNU time (/usr/bin/time; Debian: apt-get install time). Writes
# bench/results/memory-PRESET-STAMP.md and prints it.
set -euo pipefail
PRESET=${1:-small}
ROUNDS=${2:-2}
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
DATAMON_BIN=${DATAMON_BIN:-$REPO_DIR/target/release/datamon}
DATAMON_BASELINE=${DATAMON_BASELINE:-}
[ -x /usr/bin/time ] || { echo "memory.sh: needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }
[ -x "$DATAMON_BIN" ] || { echo "memory.sh: no datamon binary at $DATAMON_BIN (cargo build --release)" >&2; exit 1; }
DATA="$BENCH_DIR/data/$PRESET"
STAMP=$(date +%Y%m%d-%H%M%S)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/datamon-memory.XXXXXX")
OUT="$BENCH_DIR/results/memory-$PRESET-$STAMP.md"
trap 'rm -rf "$WORK"' EXIT
python3 "$BENCH_DIR/gen_dataset.py" --preset "$PRESET" --out "$DATA" >&2
mkdir -p "$BENCH_DIR/results"

declare -a TOOLS=(datamon)
declare -A BIN=([datamon]=$DATAMON_BIN)
if [ -n "$DATAMON_BASELINE" ]; then TOOLS+=(baseline); BIN[baseline]=$DATAMON_BASELINE; fi

rows=""
for round in $(seq 1 "$ROUNDS"); do
  for t in "${TOOLS[@]}"; do
    b=${BIN[$t]}
    d="$WORK/$t-$round"
    mkdir -p "$d"
    export DATAMON_HOME="$d/home"
    store="file://$d/store"
    "$b" repo create --repo bench --store "$store" >/dev/null
    sync
    /usr/bin/time -o "$d/up.time" -f "%e %U %S %M" \
      "$b" bundle upload --repo bench --path "$DATA/v1" --message v1 --store "$store" >"$d/up.out"
    id=$(sed -n 's/.*id:\([0-9A-Za-z]*\).*/\1/p' "$d/up.out" | tail -n1)
    sync
    /usr/bin/time -o "$d/down.time" -f "%e %U %S %M" \
      "$b" bundle download --repo bench --bundle "$id" --destination "$d/out" --store "$store" >/dev/null
    diff -r -q "$DATA/v1" "$d/out" >/dev/null || { echo "memory.sh: $t's download differs from the source" >&2; exit 1; }
    for step in up down; do
      read -r wall user sys rss < "$d/$step.time"
      name=$([ "$step" = up ] && echo "upload v1" || echo "download v1")
      rows+="| $round | $t | $name | $wall | $user | $sys | $(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}') |"$'\n'
    done
    rm -rf "$d"
  done
done

{
  echo "# memory benchmark: $PRESET preset ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "datamon: \`$DATAMON_BIN\`${DATAMON_BASELINE:+; baseline: \`$DATAMON_BASELINE\`}"
  echo
  echo "| round | binary | step | wall s | user s | sys s | peak RSS MiB |"
  echo "|---|---|---|---:|---:|---:|---:|"
  printf '%s' "$rows"
} | tee "$OUT"
