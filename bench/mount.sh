#!/usr/bin/env bash
# Mount benchmark: datamon's read-only FUSE mount vs local disk vs `restic mount`, one run, same
# data and disk. See bench/README.md ("Mount benchmark").
#
# usage: bench/mount.sh [tiny|large|small]     (default: tiny)
#
# Needs root (FUSE mounts, dropping the page cache) and fuse3. Environment knobs:
#   DATAMON_BIN   datamon binary (default: <repo>/target/release/datamon)
#   BENCH_RESTIC  1 (default) = also measure `restic mount` (skipped if restic is missing)
#   BENCH_RANDOM  random 4 KiB reads per measurement (default 2000)
#   BENCH_KEEP    1 = keep the run's stores, caches and mount points
set -euo pipefail

PRESET="${1:-tiny}"
case "$PRESET" in
  large|small|tiny) ;;
  -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
  *) echo "usage: $0 [tiny|large|small]" >&2; exit 2 ;;
esac

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
DATAMON_BIN="${DATAMON_BIN:-$REPO_DIR/target/release/datamon}"
BENCH_RESTIC="${BENCH_RESTIC:-1}"
BENCH_RANDOM="${BENCH_RANDOM:-2000}"
BENCH_KEEP="${BENCH_KEEP:-0}"
DATA="$BENCH_DIR/data/$PRESET"
STAMP="$(date +%Y%m%d-%H%M%S)"
RUN="$DATA/mount-run-$STAMP"
OUT_MD="$BENCH_DIR/results/mount-$PRESET-$STAMP.md"
SRC="$DATA/v1"

log() { printf '[mount-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
mbps() { python3 -c "print(f'{$1 / 1048576 / max($2, 1e-9):.0f}')"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || log "cannot drop the page cache"; }

[ "$(id -u)" = 0 ] || { echo "run as root (FUSE mounts, drop_caches)" >&2; exit 1; }
[ -x "$DATAMON_BIN" ] || { echo "no datamon binary at $DATAMON_BIN: cargo build --release" >&2; exit 1; }
command -v fusermount3 >/dev/null || apt-get install -y -qq fuse3 >/dev/null

python3 "$BENCH_DIR/gen_dataset.py" --preset "$PRESET" --out "$DATA" >&2
mkdir -p "$RUN" "$BENCH_DIR/results"
export DATAMON_HOME="$RUN/home"
MNT="$RUN/mnt"
mkdir -p "$MNT"
PIDS=()
cleanup() {
  for m in "$MNT" "$RUN/restic-mnt"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ "$BENCH_KEEP" = 1 ] || rm -rf "$RUN"
}
trap cleanup EXIT

# The large files: the 3 largest of the dataset (relative paths).
mapfile -t LARGE < <(cd "$SRC" && find . -type f -printf '%s %P\n' | sort -rn | head -3 | cut -d' ' -f2-)
LARGE_BYTES=$(cd "$SRC" && stat -c %s "${LARGE[@]}" | awk '{s += $1} END {print s}')
NFILES=$(find "$SRC" -type f | wc -l)
log "dataset $PRESET: $NFILES files; large files: ${LARGE[*]} ($LARGE_BYTES bytes)"

read_files() { # DIR -> seconds to cat the large files
  local t0 t1; t0=$(now)
  (cd "$1" && cat "${LARGE[@]}" > /dev/null)
  t1=$(now); secs "$t0" "$t1"
}

random_reads() { # DIR -> random 4 KiB reads per second over the large files
  python3 - "$1" "$BENCH_RANDOM" "${LARGE[@]}" <<'EOF'
import os, random, sys, time
root, n, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rng = random.Random(42)
fds = [(os.open(os.path.join(root, f), os.O_RDONLY), os.path.getsize(os.path.join(root, f))) for f in files]
t = time.time()
for _ in range(n):
    fd, size = rng.choice(fds)
    os.pread(fd, 4096, rng.randrange(0, max(size - 4096, 1)))
print(f"{n / (time.time() - t):.0f}")
EOF
}

mount_dm() { # extra args...
  "$DATAMON_BIN" bundle mount --repo bench --label v1 --mount "$MNT" --daemon "$@" > "$RUN/mount.out" 2> "$RUN/mount.err"
  PIDS+=("$(sed -n 's/.*Serving from process \([0-9]*\).*/\1/p' "$RUN/mount.err")")
}
umount_dm() {
  kill "${PIDS[-1]}"
  while mountpoint -q "$MNT" || kill -0 "${PIDS[-1]}" 2>/dev/null; do sleep 0.1; done
}

log "upload"
"$DATAMON_BIN" repo create --repo bench --description bench > /dev/null
t0=$(now); "$DATAMON_BIN" -q bundle upload --repo bench --path "$SRC" --message v1 --label v1 > /dev/null; t1=$(now)
UPLOAD_S=$(secs "$t0" "$t1")

log "local disk"
drop_caches; LOCAL_COLD=$(read_files "$SRC")
LOCAL_WARM=$(read_files "$SRC")
drop_caches; t0=$(now); find "$SRC" -printf '%s %T@ %m\n' > /dev/null; t1=$(now); LOCAL_FIND=$(secs "$t0" "$t1")
drop_caches; LOCAL_RAND=$(random_reads "$SRC")

log "datamon mount: cold chunk cache"
CACHE="$RUN/cache"
drop_caches
t0=$(now); mount_dm --cache "$CACHE"; t1=$(now); MOUNT_S=$(secs "$t0" "$t1")
t0=$(now); find "$MNT" -printf '%s %T@ %m\n' > /dev/null; t1=$(now); DM_FIND=$(secs "$t0" "$t1")
DM_COLD=$(read_files "$MNT")
umount_dm

log "datamon mount: warm chunk cache (page cache dropped)"
drop_caches; mount_dm --cache "$CACHE"
DM_WARM=$(read_files "$MNT")
umount_dm
log "datamon mount: warm chunk cache, cache files in the page cache"
mount_dm --cache "$CACHE"
DM_WARM2=$(read_files "$MNT")
umount_dm
log "datamon mount: random reads, warm chunk cache (fresh mount)"
mount_dm --cache "$CACHE"
DM_RAND_WARM=$(random_reads "$MNT")
umount_dm

log "datamon mount: random reads, cold cache"
drop_caches; mount_dm --cache "$RUN/cache-rand"
DM_RAND_COLD=$(random_reads "$MNT")
umount_dm

RESTIC_COLD=skipped; RESTIC_FIND=skipped; RESTIC_RAND=skipped; RESTIC_NOTE=""
if [ "$BENCH_RESTIC" = 1 ] && command -v restic > /dev/null; then
  log "restic"
  export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$RUN/restic"
  restic init -q > /dev/null
  restic backup -q "$SRC" > /dev/null
  mkdir -p "$RUN/restic-mnt"
  drop_caches
  restic mount "$RUN/restic-mnt" > "$RUN/restic.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 100); do [ -d "$RUN/restic-mnt/snapshots/latest" ] && break; sleep 0.2; done
  RDIR="$RUN/restic-mnt/snapshots/latest$SRC"
  if [ -d "$RDIR" ]; then
    t0=$(now); find "$RDIR" -printf '%s %T@ %m\n' > /dev/null; t1=$(now); RESTIC_FIND=$(secs "$t0" "$t1")
    RESTIC_COLD=$(read_files "$RDIR")
    RESTIC_RAND=$(random_reads "$RDIR")
  else
    RESTIC_NOTE="restic mount did not come up: $(tail -2 "$RUN/restic.log" | tr '\n' ' ')"
  fi
  kill "${PIDS[-1]}" 2>/dev/null || true
  sleep 1; mountpoint -q "$RUN/restic-mnt" && umount -l "$RUN/restic-mnt" || true
fi

row() { # name seconds
  if [ "$2" = skipped ]; then echo "| $1 | skipped | |"; else echo "| $1 | $2 | $(mbps "$LARGE_BYTES" "$2") |"; fi
}
{
  echo "# Mount benchmark: $PRESET ($STAMP)"
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM; $(uname -r). Dataset: $NFILES files;"
  echo "large files read: ${LARGE[*]} ($(mbps "$LARGE_BYTES" 1) MiB). Upload took ${UPLOAD_S} s; mounting (--daemon until ready) ${MOUNT_S} s."
  echo
  echo "## Sequential read of the large files"
  echo
  echo "| source | seconds | MiB/s |"
  echo "|---|---|---|"
  row "local disk, page cache dropped" "$LOCAL_COLD"
  row "local disk, page cache warm" "$LOCAL_WARM"
  row "datamon mount, cold chunk cache" "$DM_COLD"
  row "datamon mount, warm chunk cache, page cache dropped" "$DM_WARM"
  row "datamon mount, warm chunk cache, cache files in page cache" "$DM_WARM2"
  row "restic mount (cold)" "$RESTIC_COLD"
  echo
  echo "## Metadata: \`find -printf '%s %T@ %m'\` of every entry ($NFILES files)"
  echo
  echo "| source | seconds |"
  echo "|---|---|"
  echo "| local disk, page cache dropped | $LOCAL_FIND |"
  echo "| datamon mount (fresh mount) | $DM_FIND |"
  echo "| restic mount | $RESTIC_FIND |"
  echo
  echo "## Random 4 KiB reads over the large files ($BENCH_RANDOM reads)"
  echo
  echo "| source | reads/s |"
  echo "|---|---|"
  echo "| local disk, page cache dropped | $LOCAL_RAND |"
  echo "| datamon mount, cold chunk cache | $DM_RAND_COLD |"
  echo "| datamon mount, warm chunk cache (fresh mount) | $DM_RAND_WARM |"
  echo "| restic mount | $RESTIC_RAND |"
  [ -z "$RESTIC_NOTE" ] || { echo; echo "Note: $RESTIC_NOTE"; }
  if [ "$LARGE_BYTES" -lt $((16 << 20)) ]; then
    echo
    echo "Note: this preset has no large files, so the sequential and random-read sections measure"
    echo "a few small files only; the metadata section is the meaningful one."
  fi
} | tee "$OUT_MD"
log "report: $OUT_MD"
