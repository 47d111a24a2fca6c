#!/bin/bash
# Single-node Ceph (mon + memstore OSD + radosgw) on loopback, auth none for cluster, S3 SigV4 for clients.
# usage: start-rgw.sh DIR [PORT] [BUCKET] -> S3 at http://127.0.0.1:PORT, key probeaccess/probesecret,
#        with BUCKET (default datamon) created. Stop with stop-rgw.sh DIR. Packages (Debian):
#        radosgw ceph-mon ceph-osd (--no-install-recommends). About 16-19 s to start.
set -euo pipefail
C=${1:-/tmp/ceph}; PORT=${2:-7480}; BUCKET=${3:-datamon}
rm -rf "$C"; mkdir -p "$C"/{mon/a,osd/0,run,log,rgw}
FSID=$(cat /proc/sys/kernel/random/uuid)
cat > "$C/ceph.conf" <<EOF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:6789
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 5
mon data avail crit = 1
ms bind msgr2 = false
run dir = $C/run
log file = $C/log/\$name.log
admin socket = $C/run/\$name.asok
pid file = $C/run/\$name.pid
keyring = $C/keyring
[mon]
mon data = $C/mon/\$id
mon cluster log file = $C/log/cluster.log
[osd]
osd data = $C/osd/\$id
osd objectstore = memstore
memstore device bytes = 2147483648
osd max object name len = 256
osd max object namespace len = 64
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw data = $C/rgw
EOF
CE="ceph -c $C/ceph.conf"
ceph-authtool --create-keyring "$C/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --add a 127.0.0.1:6789 --fsid "$FSID" "$C/monmap" >/dev/null
ceph-mon -c "$C/ceph.conf" --mkfs -i a --monmap "$C/monmap" --keyring "$C/keyring"
ceph-mon -c "$C/ceph.conf" -i a || { echo "ceph-mon did not start: see $C/log/mon.a.log (a nearly full disk stops it)" >&2; exit 1; }
$CE osd create >/dev/null
ceph-osd -c "$C/ceph.conf" -i 0 --mkfs >/dev/null 2>&1
$CE osd crush add-bucket localhost host >/dev/null 2>&1
$CE osd crush move localhost root=default >/dev/null 2>&1
$CE osd crush add osd.0 1.0 host=localhost >/dev/null 2>&1
ceph-osd -c "$C/ceph.conf" -i 0 2>/dev/null
until $CE osd stat 2>/dev/null | grep -q "1 up"; do sleep 0.2; done
radosgw -c "$C/ceph.conf" -n client.rgw.a
for _ in $(seq 1 600); do curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
radosgw-admin -c "$C/ceph.conf" user create --uid=probe --display-name=probe \
  --access-key=probeaccess --secret-key=probesecret >/dev/null 2>&1
curl -sf -X PUT -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 'aws:amz:us-east-1:s3' \
  --user probeaccess:probesecret "http://127.0.0.1:$PORT/$BUCKET" -o /dev/null
echo "radosgw ready on http://127.0.0.1:$PORT, bucket $BUCKET"
