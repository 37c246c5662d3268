#!/usr/bin/env bash
# Watch fan-out benchmark with etcd's own Go client: W watchers on one prefix (sharing a few
# connections, spread over the endpoints) while a paced producer puts at R writes/s; prints
# one JSON line: events delivered of those expected, watchers that got every event, the
# writes/s achieved, and the delivery lag from each write's acknowledgement to each watcher's
# event (p50/p99/max). Bounded: D seconds of writes, then at most 30 s to drain.
#
# On a fresh cluster of its own (bench/etcd_cluster.sh, ports from BASE=24791), with each
# node's RSS and peak RSS printed after the run:
#   OWN=1 WATCHERS=1000 RATE=2000 bash bench/etcd_watch.sh
# Against the example cluster (example/start_nodes.sh):  bash bench/etcd_watch.sh
# Against etcd or another cluster: ENDPOINTS=a:1,b:2 CERTS=/dir bash bench/etcd_watch.sh
# Knobs: WATCHERS (1000) RATE (2000) DURATION (10s) CONNS (4) WRITERS (32 concurrent puts).
# Heavy: run it under the machine's benchmark lock, e.g. flock /tmp/mokv-heavy.lock bash bench/etcd_watch.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
CERTS="${CERTS:-${MOKV_CONFIG_DIR:-$HOME/.mokv}}"
ROOT=/tmp/mokv-clientv3
mkdir -p "$ROOT/src/clientv3check"
cp tests/etcd/clientv3/main.go "$ROOT/src/clientv3check/"
GO111MODULE=off GOPATH="$ROOT:/usr/share/gocode" GOCACHE="$ROOT/cache" GOFLAGS= GOPROXY=off \
  CGO_ENABLED=0 go build -o "$ROOT/clientv3check" clientv3check
if [[ ${OWN:-0} == 1 ]]; then
  trap 'bash bench/etcd_cluster.sh stop' EXIT
  eval "$(bash bench/etcd_cluster.sh start | tail -1)"
fi
ENDPOINTS="${ENDPOINTS:-127.0.0.1:8400,127.0.0.1:8402,127.0.0.1:8404}"
"$ROOT/clientv3check" -mode=watch-bench -endpoints="$ENDPOINTS" \
  -cacert="$CERTS/ca.pem" -cert="$CERTS/root-client.pem" -key="$CERTS/root-client-key.pem" \
  -prefix="bench-watch/$(date +%s)/" -watchers="${WATCHERS:-1000}" -rate="${RATE:-2000}" \
  -duration="${DURATION:-10s}" -conns="${CONNS:-4}" -writers="${WRITERS:-32}" -timeout=120s
if [[ ${OWN:-0} == 1 ]]; then bash bench/etcd_cluster.sh rss; fi
