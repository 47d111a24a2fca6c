#!/usr/bin/env bash
# Garbage collection on a local store: bytes reclaimed against bytes unreferenced, time and peak
# RSS of both passes, upload speed while gc runs against upload speed alone, and gc of a store of
# about a million chunks with half of them dead.
#
# usage: bench/gc.sh [small|tiny|large] [BUNDLES] [MILLION]   (default: small 8 yes)
#
#   BUNDLES bundles are uploaded: each is the preset's v1 or v2 (alternately) plus 2,000 files
#   of its own (8 kB of random bytes each); every other bundle is then deleted, so about half of
#   the unique data and none of the shared data is unreferenced. "Needed" is the packs of a fresh
#   store that holds only the kept bundles; reclaimed / unreferenced is (before - after) /
#   (before - needed).
#   MILLION=no skips the million-chunk store (1,000,000 files of 100-300 random bytes in two
#   bundles of half each; the first is deleted).
#
#   DATAMON_BIN  datamon binary (default <repo>/target/release/datamon)
# Needs GNU time (/usr/bin/time). Writes bench/results/gc-PRESET-STAMP.md and prints it.
set -euo pipefail
PRESET=${1:-small}
BUNDLES=${2:-8}
MILLION=${3:-yes}
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
BIN=${DATAMON_BIN:-$REPO_DIR/target/release/datamon}
[ -x /usr/bin/time ] || { echo "gc.sh: needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "gc.sh: no datamon binary at $BIN (cargo build --release)" >&2; exit 1; }
DATA="$BENCH_DIR/data/$PRESET"
STAMP=$(date +%Y%m%d-%H%M%S)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/datamon-gc.XXXXXX")
OUT="$BENCH_DIR/results/gc-$PRESET-$STAMP.md"
GC_PID=""
cleanup() {
  # Only the gc loop this script started: it stops after its current run.
  if [ -n "$GC_PID" ]; then rm -f "$WORK/gc-loop"; wait "$GC_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
python3 "$BENCH_DIR/gen_dataset.py" --preset "$PRESET" --out "$DATA" >&2
mkdir -p "$BENCH_DIR/results"
export DATAMON_HOME="$WORK/home"

packs() { du -sb "$1/packs" 2>/dev/null | cut -f1; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }
# unique DIR SEED COUNT SIZE: COUNT files of SIZE random bytes under DIR.
unique() {
  python3 - "$@" <<'EOF'
import os, random, sys
d, seed, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lo, _, hi = size.partition("-")
lo, hi = int(lo), int(hi or lo)
r = random.Random(seed)
for i in range(count):
    sub = os.path.join(d, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:07d}"), "wb") as f:
        f.write(r.randbytes(r.randint(lo, hi)))
EOF
}
timed() { # timed NAME CMD...: wall user sys rss to $WORK/NAME.time
  local name=$1; shift
  /usr/bin/time -o "$WORK/$name.time" -f "%e %U %S %M" "$@" > "$WORK/$name.out"
}
row() { # row LABEL NAME
  read -r wall user sys rss < "$WORK/$2.time"
  rows+="| $1 | $wall | $user | $sys | $(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}') |"$'\n'
}
rows=""

# 1. Bundles with shared and unique data; every other one deleted.
S="$WORK/store"; U="file://$S"
"$BIN" repo create --repo bench --store "$U" >/dev/null
ids=()
for i in $(seq 1 "$BUNDLES"); do
  src="$WORK/src-$i"
  mkdir -p "$src"
  v=$([ $((i % 2)) = 1 ] && echo v1 || echo v2)
  cp -a --reflink=auto "$DATA/$v" "$src/data"
  unique "$src/own" "$i" 2000 8000
  "$BIN" bundle upload --repo bench --path "$src" --message "b$i" --store "$U" > "$WORK/up-$i.out"
  ids+=("$(sed -n 's/.*id:\([0-9A-Za-z]*\).*/\1/p' "$WORK/up-$i.out" | tail -n1)")
done
for i in $(seq 1 2 $((BUNDLES - 1))); do
  "$BIN" bundle delete --repo bench --bundle "${ids[$((i - 1))]}" --remove-refs --store "$U" >/dev/null
done
before=$(packs "$S")
sync
timed gc1 "$BIN" --json gc --grace 0s --store "$U"
timed gc2 "$BIN" --json gc --grace 0s --store "$U"
after=$(packs "$S")
row "gc pass 1 (plan), $BUNDLES bundles, half deleted" gc1
row "gc pass 2 (collect and repack)" gc2
"$BIN" fsck --store "$U" > "$WORK/fsck.out" || { echo "gc.sh: fsck failed after gc" >&2; cat "$WORK/fsck.out" >&2; exit 1; }
# Needed: a fresh store with the kept bundles only.
N="$WORK/needed"; NU="file://$N"
"$BIN" repo create --repo bench --store "$NU" >/dev/null
for i in $(seq 2 2 "$BUNDLES"); do
  "$BIN" bundle upload --repo bench --path "$WORK/src-$i" --message "b$i" --store "$NU" >/dev/null
done
needed=$(packs "$N")
reclaimed=$((before - after)); unref=$((before - needed))
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/$1.out" "$2"; }
copied=$(field gc2 bytes_copied)
chunks=$(field gc2 live_blobs)
# Then everything: two more passes repacking every pack with a dead blob.
timed gc3 "$BIN" --json gc --grace 0s --repack-below 1 --store "$U"
timed gc4 "$BIN" --json gc --grace 0s --repack-below 1 --store "$U"
row "gc pass 3 (plan), --repack-below 1" gc3
row "gc pass 4 (collect and repack), --repack-below 1" gc4
full=$(packs "$S")
copied_full=$(field gc4 bytes_copied)

# 2. Upload speed alone, and while gc runs in a loop (each run plans or collects).
up="$WORK/src-up"; mkdir -p "$up"; cp -a --reflink=auto "$DATA/v2" "$up/data"; unique "$up/own" 999 2000 8000
sync
rm -rf "$DATAMON_HOME/cache"   # no stat cache: both uploads read every file
timed up-alone "$BIN" bundle upload --repo bench --path "$up" --message alone --store "$U"
"$BIN" bundle delete --repo bench --bundle "$(sed -n 's/.*id:\([0-9A-Za-z]*\).*/\1/p' "$WORK/up-alone.out" | tail -n1)" --remove-refs --store "$U" >/dev/null
"$BIN" gc --grace 0s --store "$U" >/dev/null; "$BIN" gc --grace 0s --store "$U" >/dev/null
touch "$WORK/gc-loop"
( while [ -e "$WORK/gc-loop" ]; do "$BIN" gc --grace 0s --store "$U" >/dev/null 2>&1 || true; done ) &
GC_PID=$!
sleep 1
rm -rf "$DATAMON_HOME/cache"
timed up-gc "$BIN" bundle upload --repo bench --path "$up" --message during --store "$U"
rm -f "$WORK/gc-loop"; wait "$GC_PID" 2>/dev/null || true; GC_PID=""""
row "upload (preset v2 + 2,000 new files), alone" up-alone
row "the same upload while gc runs in a loop" up-gc
"$BIN" fsck --store "$U" > "$WORK/fsck2.out" || { echo "gc.sh: fsck failed after the gc loop" >&2; cat "$WORK/fsck2.out" >&2; exit 1; }
rm -rf "$WORK"/src-* "$S" "$N"

# 3. About a million chunks, half dead.
mrow=""
if [ "$MILLION" = yes ]; then
  M="$WORK/million"; MU="file://$M"
  "$BIN" repo create --repo m --store "$MU" >/dev/null
  for half in 0 1; do
    unique "$WORK/m$half" "$((7000 + half))" 500000 100-300
    "$BIN" bundle upload --repo m --path "$WORK/m$half" --message "half $half" --store "$MU" > "$WORK/m$half.out"
    rm -rf "$WORK/m$half"
  done
  first=$(sed -n 's/.*id:\([0-9A-Za-z]*\).*/\1/p' "$WORK/m0.out" | tail -n1)
  "$BIN" bundle delete --repo m --bundle "$first" --remove-refs --store "$MU" >/dev/null
  mbefore=$(packs "$M")
  sync
  timed mgc1 "$BIN" --json gc --grace 0s --store "$MU"
  timed mgc2 "$BIN" --json gc --grace 0s --store "$MU"
  mafter=$(packs "$M")
  blobs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["live_blobs"])' "$WORK/mgc1.out")
  row "million: gc pass 1 (plan), $blobs live blobs" mgc1
  row "million: gc pass 2 (collect)" mgc2
  idx=$(du -sb "$M/index" | cut -f1)
  mrow="Million-chunk store: packs $(mib "$mbefore") MiB before, $(mib "$mafter") MiB after; index objects $(mib "$idx") MiB."
fi

{
  echo "# gc benchmark: $PRESET preset ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "datamon: \`$BIN\`"
  echo
  echo "Store of $BUNDLES bundles, every other one deleted ($chunks live blobs after gc): packs $(mib "$before") MiB before gc, $(mib "$after") MiB after two passes; a store of the kept bundles alone needs $(mib "$needed") MiB."
  pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (b > 0) ? 100*a/b : 100}'; }
  echo "Reclaimed $(mib "$reclaimed") MiB of $(mib "$unref") MiB unreferenced ($(pct "$reclaimed" "$unref")%) with the default --repack-below 0.5; repacking copied $(mib "$copied") MiB of live data."
  echo "Two more passes with --repack-below 1: $(mib "$full") MiB of packs, $(pct "$((before - full))" "$unref")% reclaimed, $(mib "$copied_full") MiB copied."
  [ -n "$mrow" ] && echo "$mrow"
  echo
  echo "| step | wall s | user s | sys s | peak RSS MiB |"
  echo "|---|---:|---:|---:|---:|"
  printf '%s' "$rows"
} | tee "$OUT"
