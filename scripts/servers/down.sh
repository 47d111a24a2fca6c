#!/bin/bash
# Stops the servers started by up.sh DIR (by their pid files) and waits for them to exit.
D=${1:-/tmp/datamon-servers}
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$D/ceph" ] && "$here/stop-rgw.sh" "$D/ceph"
for f in "$D/moto/moto.pid" "$D/azurite/azurite.pid" "$D/fake-gcs/fake-gcs.pid"; do
  [ -f "$f" ] || continue
  p=$(cat "$f"); kill "$p" 2>/dev/null || continue
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null
done
exit 0
