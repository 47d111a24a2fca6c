#!/bin/bash
# moto_server (an S3 emulator: atomic conditional writes, no signature checks) on loopback, with a
# bucket. For quick local runs; CI uses Ceph radosgw (start-rgw.sh).
# usage: start-moto.sh DIR [PORT] [BUCKET]  -> S3 at http://127.0.0.1:PORT; pid in DIR/moto.pid
set -euo pipefail
D=${1:-/tmp/moto}; PORT=${2:-7481}; BUCKET=${3:-datamon}
mkdir -p "$D"
command -v moto_server >/dev/null || { echo "moto_server not found: pip install 'moto[server]'" >&2; exit 1; }
moto_server -H 127.0.0.1 -p "$PORT" > "$D/moto.log" 2>&1 &
echo $! > "$D/moto.pid"
for _ in $(seq 1 600); do curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
curl -sf -X PUT "http://127.0.0.1:$PORT/$BUCKET" -o /dev/null
echo "moto ready on http://127.0.0.1:$PORT, bucket $BUCKET"
