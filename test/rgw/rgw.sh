#!/usr/bin/env bash
# Starts a single-node Ceph RGW on loopback for tests and benchmarks, or stops one.
#
#   test/rgw/rgw.sh start [DIR]   state in DIR (default: a new temp dir); prints DIR
#   test/rgw/rgw.sh stop DIR      signals exactly the PIDs recorded in DIR, then removes DIR
#
# Environment: RGW_PORT (7480), MON_PORT (3300), RGW_STORE (memstore | bluestore),
# RGW_ACCESS_KEY / RGW_SECRET_KEY for the test user.
# After start, DIR/env holds S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY and CEPH_CONF (source it).
# Needs Debian's ceph-mon, ceph-osd, radosgw and ceph-common.
set -euo pipefail

cmd=${1:-}
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-3300}
RGW_STORE=${RGW_STORE:-memstore}
ACCESS_KEY=${RGW_ACCESS_KEY:-lifeboat-test-access}
SECRET_KEY=${RGW_SECRET_KEY:-lifeboat-test-secret-key-0123456789}

die() { echo "rgw.sh: $*" >&2; exit 1; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "rgw.sh: timed out waiting for $what" >&2; tail -n 20 "$DIR"/*.log >&2 || true; return 1; }
    sleep 0.1
  done
}

start_daemon() { # start_daemon NAME COMMAND...: own session, exact PID recorded
  local name=$1; shift
  setsid "$@" >"$DIR/$name.out" 2>&1 < /dev/null &
  echo "$!" >"$DIR/$name.pid"
}

stop() {
  DIR=${1:?usage: rgw.sh stop DIR}
  [ -d "$DIR" ] || return 0
  for name in radosgw osd mon; do
    [ -f "$DIR/$name.pid" ] || continue
    pid=$(cat "$DIR/$name.pid")
    # A memstore OSD flushes everything to disk on SIGTERM; KILL is what we want for throwaway state.
    kill -KILL "$pid" 2>/dev/null || true
  done
  for name in radosgw osd mon; do
    [ -f "$DIR/$name.pid" ] || continue
    pid=$(cat "$DIR/$name.pid")
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done
  rm -rf "$DIR"
}

start() {
  for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool ceph; do
    command -v "$bin" >/dev/null || die "$bin not found; install: apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common"
  done
  DIR=${1:-$(mktemp -d /tmp/lifeboat-rgw.XXXXXX)}
  # A start that fails half-way must not leave daemons behind.
  trap 'stop "$DIR"' ERR
  mkdir -p "$DIR/mon" "$DIR/osd" "$DIR/rgw" "$DIR/run"
  local fsid osd_uuid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)

  local osd_store
  if [ "$RGW_STORE" = bluestore ]; then
    osd_store="osd objectstore = bluestore
bluestore block path = $DIR/bluestore.img
bluestore block create = true
bluestore block size = 21474836480
bluestore block db create = false
bluestore block wal create = false"
  else
    osd_store="osd objectstore = memstore
memstore device bytes = 8589934592"
  fi

  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon max pg per osd = 1000
paxos propose interval = 0.05

[mon]
mon data = $DIR/mon/\$id

[osd]
osd data = $DIR/osd
$osd_store

[client.rgw.local]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw data = $DIR/rgw
rgw gc obj min wait = 60
rgw lc debug interval = ${RGW_LC_DEBUG_INTERVAL:-10}
EOF
  export CEPH_CONF=$DIR/ceph.conf

  local kr=$DIR/keyring
  ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n client.rgw.local --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null

  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$DIR/monmap" --keyring "$kr" >/dev/null 2>&1
  start_daemon mon ceph-mon -f -i a
  wait_for 30 "ceph-mon" timeout 5 ceph mon stat

  ceph osd new "$osd_uuid" 0 >/dev/null
  ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
  start_daemon osd ceph-osd -f -i 0
  wait_for 60 "the OSD to come up" bash -c 'timeout 5 ceph osd stat -f json | grep -q "\"num_up_osds\":1"'

  start_daemon radosgw radosgw -f -n client.rgw.local
  wait_for 60 "radosgw on port $RGW_PORT" curl -sf -o /dev/null "http://127.0.0.1:$RGW_PORT/"

  radosgw-admin user create --uid=lifeboat-test --display-name="Lifeboat test" \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null

  cat >"$DIR/env" <<EOF
export CEPH_CONF=$DIR/ceph.conf
export S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
export S3_ACCESS_KEY=$ACCESS_KEY
export S3_SECRET_KEY=$SECRET_KEY
EOF
  trap - ERR
  echo "$DIR"
}

case "$cmd" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) die "usage: rgw.sh start [DIR] | stop DIR" ;;
esac
