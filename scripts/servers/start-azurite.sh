#!/bin/bash
# Azurite (the Azure Blob emulator) on loopback, with a container.
# usage: start-azurite.sh DIR [PORT] [CONTAINER]  -> blob endpoint http://127.0.0.1:PORT/devstoreaccount1
# Needs `azurite-blob` on PATH or under DIR/../node_modules/.bin (npm install azurite@3).
# The pid is written to DIR/azurite.pid; stop it with `kill $(cat DIR/azurite.pid)`.
set -euo pipefail
D=${1:-/tmp/azurite}; PORT=${2:-10000}; CONTAINER=${3:-datamon}
mkdir -p "$D/data"
BIN=$(command -v azurite-blob || true)
[ -n "$BIN" ] || BIN="${AZURITE_BIN:-}"
[ -n "$BIN" ] || { echo "azurite-blob not found: npm install azurite@3 (or set AZURITE_BIN)" >&2; exit 1; }
"$BIN" --blobHost 127.0.0.1 --blobPort "$PORT" --location "$D/data" --skipApiVersionCheck --silent --disableTelemetry \
  > "$D/azurite.log" 2>&1 &
echo $! > "$D/azurite.pid"
for _ in $(seq 1 300); do curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
# Create the container with a SharedKey-signed request (the well-known development account).
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
DATE=$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')
VERSION=2021-08-06
SIGN=$(printf 'PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:%s\n/%s/%s/%s\nrestype:container' \
  "$DATE" "$VERSION" "$ACCOUNT" "$ACCOUNT" "$CONTAINER")
HEXKEY=$(printf '%s' "$KEY" | base64 -d | od -An -tx1 | tr -d ' \n')
SIG=$(printf '%s' "$SIGN" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$HEXKEY" -binary | base64 -w0)
code=000
for _ in 1 2 3 4 5; do
  code=$(curl -s --max-time 15 -o "$D/create.out" -w '%{http_code}' -X PUT -H "Content-Length: 0" \
    -H "x-ms-date: $DATE" -H "x-ms-version: $VERSION" -H "Authorization: SharedKey $ACCOUNT:$SIG" \
    "http://127.0.0.1:$PORT/$ACCOUNT/$CONTAINER?restype=container") || true
  case "$code" in 201|409) break ;; esac
  sleep 1
done
case "$code" in
  201|409) ;;
  *) echo "cannot create container $CONTAINER (HTTP $code): $(cat "$D/create.out")" >&2; exit 1 ;;
esac
echo "azurite ready on http://127.0.0.1:$PORT/$ACCOUNT, container $CONTAINER"
