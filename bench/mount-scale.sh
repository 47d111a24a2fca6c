#!/usr/bin/env bash
# Mount scale benchmark: a bundle of N small files (default 1,000,000) mounted read-only. Measures
# the time to mount, to list and stat every file (`find -printf`), to list one directory, and the
# mount process's peak memory (VmHWM) after all of it. See bench/README.md ("Mount scale").
#
# usage: bench/mount-scale.sh [FILES]      (default 1000000; files of 1-200 bytes, 1,000 per dir)
#
# Needs root (FUSE, dropping the page cache) and fuse3. Environment knobs:
#   DATAMON_BIN   datamon binary (default: <repo>/target/release/datamon)
#   BENCH_KEEP    1 = keep the store and the generated tree (bench/data/scale-N)
set -euo pipefail

N="${1:-1000000}"
case "$N" in ''|*[!0-9]*) echo "usage: $0 [FILES]" >&2; exit 2 ;; esac
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
DATAMON_BIN="${DATAMON_BIN:-$REPO_DIR/target/release/datamon}"
BENCH_KEEP="${BENCH_KEEP:-0}"
DATA="$BENCH_DIR/data/scale-$N"
STAMP="$(date +%Y%m%d-%H%M%S)"
RUN="$DATA/run-$STAMP"
OUT_MD="$BENCH_DIR/results/mount-scale-$N-$STAMP.md"

log() { printf '[mount-scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || log "cannot drop the page cache"; }

[ "$(id -u)" = 0 ] || { echo "run as root (FUSE mounts, drop_caches)" >&2; exit 1; }
[ -x "$DATAMON_BIN" ] || { echo "no datamon binary at $DATAMON_BIN: cargo build --release" >&2; exit 1; }
command -v fusermount3 >/dev/null || apt-get install -y -qq fuse3 >/dev/null

if [ ! -e "$DATA/.done" ]; then
  log "generating $N files under $DATA/src"
  rm -rf "$DATA/src"
  python3 - "$DATA/src" "$N" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:07d}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1, 200)))
PY
  touch "$DATA/.done"
fi
mkdir -p "$RUN" "$BENCH_DIR/results"
export DATAMON_HOME="$RUN/home"
MNT="$RUN/mnt"
mkdir -p "$MNT"
PID=""
cleanup() {
  mountpoint -q "$MNT" 2>/dev/null && umount -l "$MNT" 2>/dev/null || true
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  [ "$BENCH_KEEP" = 1 ] || rm -rf "$RUN"
}
trap cleanup EXIT

log "upload"
"$DATAMON_BIN" repo create --repo scale --description scale > /dev/null
t0=$(now); "$DATAMON_BIN" -q bundle upload --repo scale --path "$DATA/src" --message v1 --label v1 > /dev/null; t1=$(now)
UPLOAD_S=$(secs "$t0" "$t1")

log "mount"
drop_caches
t0=$(now)
"$DATAMON_BIN" bundle mount --repo scale --label v1 --mount "$MNT" --cache "$RUN/cache" --daemon > "$RUN/mount.out" 2> "$RUN/mount.err"
t1=$(now); MOUNT_S=$(secs "$t0" "$t1")
PID="$(sed -n 's/.*Serving from process \([0-9]*\).*/\1/p' "$RUN/mount.err")"
RSS_MOUNTED=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$PID/status")

log "ls of one directory"
t0=$(now); ls -l "$MNT/d0500" > /dev/null; t1=$(now); LS_S=$(secs "$t0" "$t1")
log "find + stat of every entry"
t0=$(now); COUNT=$(find "$MNT" -printf '%s %T@ %m\n' | wc -l); t1=$(now); FIND_S=$(secs "$t0" "$t1")
RSS_FIND=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$PID/status")
log "second find (kernel caches warm)"
t0=$(now); find "$MNT" -printf '%s %T@ %m\n' > /dev/null; t1=$(now); FIND2_S=$(secs "$t0" "$t1")
log "read 10,000 files (10 directories)"
t0=$(now); for d in $(seq -f 'd%04g' 100 109); do cat "$MNT/$d"/* > /dev/null; done; t1=$(now); READ_S=$(secs "$t0" "$t1")
HWM=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$PID/status")
RSS_END=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$PID/status")
LOCAL_FIND=skipped
drop_caches; t0=$(now); find "$DATA/src" -printf '%s %T@ %m\n' > /dev/null; t1=$(now); LOCAL_FIND=$(secs "$t0" "$t1")

{
  echo "# Mount scale benchmark: $N files ($STAMP)"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM; $(uname -r)."
  echo "Dataset: $N files of 1-200 bytes, 1,000 per directory. Upload took $UPLOAD_S s."
  echo
  echo "| step | result |"
  echo "|---|---|"
  echo "| mount (\`--daemon\` until ready, page cache dropped) | $MOUNT_S s |"
  echo "| \`ls -l\` of one directory (1,000 files) | $LS_S s |"
  echo "| \`find -printf '%s %T@ %m'\` of every entry ($COUNT lines) | $FIND_S s |"
  echo "| same \`find\` again | $FIND2_S s |"
  echo "| same \`find\` on local disk, page cache dropped | $LOCAL_FIND s |"
  echo "| \`cat\` of 10,000 files (10 directories) | $READ_S s |"
  echo "| mount process RSS after mounting / after find / at the end | $RSS_MOUNTED / $RSS_FIND / $RSS_END MiB |"
  echo "| mount process peak RSS (VmHWM) | $HWM MiB |"
} | tee "$OUT_MD"
