#!/usr/bin/env bash
# Encrypted vs plain store: `bundle upload` and `bundle download` of a preset's v1 on a fresh
# local store, plain and encrypted (opened by a key file, so the numbers are the data path's;
# a passphrase adds one Argon2id derivation, about 0.3 s, per command), interleaved round by
# round, with wall, user, system time and peak RSS from GNU time.
#
# usage: bench/encryption.sh [small|large|tiny] [ROUNDS]        (default: small 3)
#
#   DATAMON_BIN       datamon binary (default <repo>/target/release/datamon)
# Needs GNU time (/usr/bin/time; Debian: apt-get install time). Writes
# bench/results/encryption-PRESET-STAMP.md and prints it.
set -euo pipefail
PRESET=${1:-small}
ROUNDS=${2:-3}
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
DATAMON_BIN=${DATAMON_BIN:-$REPO_DIR/target/release/datamon}
[ -x /usr/bin/time ] || { echo "encryption.sh: needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }
[ -x "$DATAMON_BIN" ] || { echo "encryption.sh: no datamon binary at $DATAMON_BIN (cargo build --release)" >&2; exit 1; }
DATA="$BENCH_DIR/data/$PRESET"
STAMP=$(date +%Y%m%d-%H%M%S)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/datamon-encryption.XXXXXX")
OUT="$BENCH_DIR/results/encryption-$PRESET-$STAMP.md"
trap 'rm -rf "$WORK"' EXIT
python3 "$BENCH_DIR/gen_dataset.py" --preset "$PRESET" --out "$DATA" >&2
mkdir -p "$BENCH_DIR/results"

# Warm the page cache with the source tree, so that round 1's plain upload does not pay for
# reading it from disk alone (it did: 5.3 s against 2.6 s for every later upload).
tar cf - -C "$DATA" v1 >/dev/null

rows=""
declare -A SUM
for round in $(seq 1 "$ROUNDS"); do
  for mode in plain encrypted; do
    d="$WORK/$mode-$round"
    mkdir -p "$d"
    export DATAMON_HOME="$d/home"
    store="file://$d/store"
    if [ "$mode" = encrypted ]; then
      "$DATAMON_BIN" context create --name bench --store-url "$store" --encrypt \
        --key-file "$d/key" --use >/dev/null 2>&1
    else
      "$DATAMON_BIN" context create --name bench --store-url "$store" --use >/dev/null
    fi
    "$DATAMON_BIN" repo create --repo bench >/dev/null
    sync
    /usr/bin/time -o "$d/up.time" -f "%e %U %S %M" \
      "$DATAMON_BIN" bundle upload --repo bench --path "$DATA/v1" --message v1 >"$d/up.out"
    id=$(sed -n 's/.*id:\([0-9A-Za-z]*\).*/\1/p' "$d/up.out" | tail -n1)
    sync
    echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    /usr/bin/time -o "$d/down.time" -f "%e %U %S %M" \
      "$DATAMON_BIN" bundle download --repo bench --bundle "$id" --destination "$d/out" >/dev/null
    diff -r -q "$DATA/v1" "$d/out" >/dev/null || { echo "encryption.sh: the $mode download differs from the source" >&2; exit 1; }
    for step in up down; do
      read -r wall user sys rss < "$d/$step.time"
      name=$([ "$step" = up ] && echo "upload v1" || echo "download v1")
      rows+="| $round | $mode | $name | $wall | $user | $sys | $(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}') |"$'\n'
      SUM[$mode-$step]=$(awk -v a="${SUM[$mode-$step]:-0}" -v b="$wall" 'BEGIN{print a+b}')
    done
    rm -rf "$d"
  done
done

ratio() { awk -v e="${SUM[encrypted-$1]}" -v p="${SUM[plain-$1]}" 'BEGIN{printf "%.2f", e/p}'; }
{
  echo "# encryption benchmark: $PRESET preset ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "$(du -sh "$DATA/v1" | cut -f1) in $(find "$DATA/v1" -type f | wc -l) files; local stores; page cache dropped before each download when allowed."
  echo
  echo "| round | store | step | wall s | user s | sys s | peak RSS MiB |"
  echo "|---|---|---|---:|---:|---:|---:|"
  printf "%s" "$rows"
  echo
  echo "Encrypted / plain, total wall time over $ROUNDS rounds: upload $(ratio up)x, download $(ratio down)x."
} | tee "$OUT"
