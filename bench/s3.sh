#!/usr/bin/env bash
# Benchmark through a loopback S3 server: datamon vs `rclone copy` (no dedup) vs restic with an
# S3 repository, same data, same server, one run.
#
# usage: bench/s3.sh [tiny|small|large]       (default: tiny; data from bench/gen_dataset.py)
#
# The S3 server must be running (scripts/servers/up.sh starts radosgw on 127.0.0.1:7480):
#   BENCH_S3_ENDPOINT  (default http://127.0.0.1:7480)   BENCH_S3_BUCKET (default datamon)
#   BENCH_S3_KEY / BENCH_S3_SECRET (default probeaccess / probesecret)
#   DATAMON_BIN        (default <repo>/target/release/datamon)
#   BENCH_CONCURRENCY  datamon --concurrency and rclone --transfers (default 16)
#   BENCH_RESTIC       no: leave restic out (its backup of the small preset to radosgw had not
#                      finished after 10 minutes here)
# Writes bench/results/s3-PRESET-STAMP.md and prints it.
set -euo pipefail
PRESET=${1:-tiny}
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
DATAMON_BIN=${DATAMON_BIN:-$REPO_DIR/target/release/datamon}
EP=${BENCH_S3_ENDPOINT:-http://127.0.0.1:7480}
BUCKET=${BENCH_S3_BUCKET:-datamon}
KEY=${BENCH_S3_KEY:-probeaccess}
SECRET=${BENCH_S3_SECRET:-probesecret}
CONC=${BENCH_CONCURRENCY:-16}
DATA="$BENCH_DIR/data/$PRESET"
STAMP=$(date +%Y%m%d-%H%M%S)
WORK=$(mktemp -d)
OUT="$BENCH_DIR/results/s3-$PRESET-$STAMP.md"
mkdir -p "$BENCH_DIR/results"
trap 'rm -rf "$WORK"' EXIT

python3 "$BENCH_DIR/gen_dataset.py" --preset "$PRESET" --out "$DATA" >&2
files=$(find "$DATA/v1" -type f | wc -l)
bytes=$(du -sb "$DATA/v1" | cut -f1)
files2=$(find "$DATA/v2" -type f | wc -l)

export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=$EP AWS_ALLOW_HTTP=true
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Ceph
export RCLONE_CONFIG_BENCH_ENDPOINT=$EP RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$KEY
export RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$SECRET RCLONE_CONFIG_BENCH_REGION=us-east-1
export RESTIC_PASSWORD=bench
rcl() { env -u AWS_CA_BUNDLE rclone "$@"; }

declare -A T
timed() { # name cmd...
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$WORK/$(echo "$name" | tr ' /' '__').log" 2>&1 || { echo "FAILED: $name (see log)" >&2; cat "$WORK/$(echo "$name" | tr ' /' '__').log" >&2; exit 1; }
  t1=$(date +%s.%N)
  T[$name]=$(python3 -c "print(f'{$t1-$t0:.2f}')")
  echo "$name: ${T[$name]} s" >&2
}
objects() { rcl ls "bench:$BUCKET/$1" 2>/dev/null | wc -l; }
stored() { rcl size --json "bench:$BUCKET/$1" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])'; }

# datamon
DM=(env DATAMON_HOME="$WORK/dmhome" "$DATAMON_BIN" --quiet --concurrency "$CONC" --store "s3://$BUCKET/bench-dm-$STAMP")
timed "datamon repo create" "${DM[@]}" repo create --repo bench --description bench
timed "datamon upload v1" "${DM[@]}" bundle upload --repo bench --path "$DATA/v1" --message v1 --label v1
rm -rf "$WORK/dmhome/cache"   # no stat cache: v2 is read and chunked in full
timed "datamon upload v2" "${DM[@]}" bundle upload --repo bench --path "$DATA/v2" --message v2 --label v2
timed "datamon download v1" "${DM[@]}" --json bundle download --repo bench --label v1 --destination "$WORK/dm-v1"
dm_reads=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")][-1]["range_reads"])' "$WORK/datamon_download_v1.log")
dm_index=$(objects "bench-dm-$STAMP/index")
diff -r "$DATA/v1" "$WORK/dm-v1" >/dev/null || { echo "datamon download differs" >&2; exit 1; }
dm_objects=$(objects "bench-dm-$STAMP"); dm_bytes=$(stored "bench-dm-$STAMP")

# rclone (a plain copy of each version)
timed "rclone copy v1" rcl copy --transfers "$CONC" --checkers "$CONC" "$DATA/v1" "bench:$BUCKET/bench-rc-$STAMP/v1"
timed "rclone copy v2" rcl copy --transfers "$CONC" --checkers "$CONC" "$DATA/v2" "bench:$BUCKET/bench-rc-$STAMP/v2"
timed "rclone download v1" rcl copy --transfers "$CONC" --checkers "$CONC" "bench:$BUCKET/bench-rc-$STAMP/v1" "$WORK/rc-v1"
diff -r "$DATA/v1" "$WORK/rc-v1" >/dev/null || { echo "rclone download differs" >&2; exit 1; }
rc_objects=$(objects "bench-rc-$STAMP"); rc_bytes=$(stored "bench-rc-$STAMP")

# restic
RESTIC=${BENCH_RESTIC:-yes}
if [ "$RESTIC" = yes ]; then
export RESTIC_REPOSITORY="s3:$EP/$BUCKET/bench-restic-$STAMP"
timed "restic init" restic init
timed "restic backup v1" bash -c "cd '$DATA/v1' && restic backup --tag v1 ."
timed "restic backup v2" bash -c "cd '$DATA/v2' && restic backup --tag v2 ."
timed "restic restore v1" restic restore latest --tag v1 --target "$WORK/rs-v1"
diff -r "$DATA/v1" "$WORK/rs-v1" >/dev/null || { echo "restic restore differs" >&2; exit 1; }
rs_objects=$(objects "bench-restic-$STAMP"); rs_bytes=$(stored "bench-restic-$STAMP")
fi

mb=$(python3 -c "print(f'{$bytes/1e6:.1f}')")
rate() { python3 -c "print(f'{$bytes/1e6/$1:.1f}')"; }
{
  echo "# S3 benchmark: $PRESET preset ($files files, $mb MB in v1; $files2 files in v2), $(date -u +%FT%TZ)"
  echo
  echo "Server: $EP (loopback). Machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB RAM."
  echo "$("$DATAMON_BIN" version 2>/dev/null | head -1), --concurrency $CONC; $(rclone version | head -1), --transfers $CONC; $(restic version | cut -d' ' -f1-2)."
  echo
  echo "| tool | upload v1 (s) | MB/s | upload v2 (s) | download v1 (s) | MB/s | objects in bucket | bytes in bucket |"
  echo "|---|---|---|---|---|---|---|---|"
  echo "| datamon | ${T[datamon upload v1]} | $(rate "${T[datamon upload v1]}") | ${T[datamon upload v2]} | ${T[datamon download v1]} | $(rate "${T[datamon download v1]}") | $dm_objects | $dm_bytes |"
  echo "| rclone copy | ${T[rclone copy v1]} | $(rate "${T[rclone copy v1]}") | ${T[rclone copy v2]} | ${T[rclone download v1]} | $(rate "${T[rclone download v1]}") | $rc_objects | $rc_bytes |"
  [ "$RESTIC" = yes ] && echo "| restic | ${T[restic backup v1]} | $(rate "${T[restic backup v1]}") | ${T[restic backup v2]} | ${T[restic restore v1]} | $(rate "${T[restic restore v1]}") | $rs_objects | $rs_bytes |"
  echo
  echo "Objects per file (v1+v2 stored): datamon $(python3 -c "print(f'{$dm_objects/($files+$files2):.3f}')"), rclone $(python3 -c "print(f'{$rc_objects/($files+$files2):.3f}')")$([ "$RESTIC" = yes ] && echo ", restic $(python3 -c "print(f'{$rs_objects/($files+$files2):.3f}')")")."
  [ "$RESTIC" = yes ] || echo "restic was left out (BENCH_RESTIC=no)."
  echo "datamon's download of v1 made $dm_reads pack range reads for $files files ($(python3 -c "print(f'{$dm_reads/$files:.4f}')") per file), after loading $dm_index index objects (one GET each) and the tree nodes."
  echo "Every download was compared with diff -r."
} | tee "$OUT"
