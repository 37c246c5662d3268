#!/usr/bin/env bash
# Starts or stops a three-node mokv cluster for the etcd benchmarks (bench/etcd_watch.sh,
# bench/etcd_anchor.sh): example/config*.yaml with mutual TLS and the certificates of
# `deno task gencert` ($MOKV_CONFIG_DIR, default ~/.mokv), on ports away from the example's,
# with fresh data directories under /tmp.
#
#   bash bench/etcd_cluster.sh start     # prints ENDPOINTS=... PIDS=... once all three serve
#   bash bench/etcd_cluster.sh stop
#   bash bench/etcd_cluster.sh rss       # RSS, peak RSS and CPU seconds of each node
# Knobs: BASE (24791): node N serves gRPC on BASE+2(N-1), gossip on the port above, metrics
# on BASE+10+N-1. DENO_FLAGS (e.g. --v8-flags=...) go to each node; INSPECT=1 opens node N's
# V8 inspector on 127.0.0.1:BASE+20+N-1 (for a CPU profile through the DevTools protocol).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${BASE:-24791}"
CERTS="${MOKV_CONFIG_DIR:-$HOME/.mokv}"
RUN=/tmp/mokv-bench-cluster-$BASE
ports() { echo $((BASE + 2 * ($1 - 1))); }
endpoints() { echo "127.0.0.1:$(ports 1),127.0.0.1:$(ports 2),127.0.0.1:$(ports 3)"; }

start() {
  [[ -f $CERTS/node-1.pem ]] || bash certs/gencert.sh
  mkdir -p "$RUN"
  local joins="127.0.0.1:$(($(ports 1) + 1)),127.0.0.1:$(($(ports 2) + 1)),127.0.0.1:$(($(ports 3) + 1))"
  for n in 1 2 3; do
    local rpc
    rpc=$(ports $n)
    rm -rf "$RUN/data$n"
    local inspect=""
    [[ ${INSPECT:-0} == 1 ]] && inspect="--inspect=127.0.0.1:$((BASE + 20 + n - 1))"
    # shellcheck disable=SC2086
    setsid deno run --allow-all --unstable-kv --unstable-net ${DENO_FLAGS:-} $inspect main.ts \
      --config-file "example/config$([[ $n == 1 ]] || echo $n).yaml" --data-dir "$RUN/data$n" \
      --rpc-port "$rpc" --bind-addr "127.0.0.1:$((rpc + 1))" --metrics-port $((BASE + 10 + n - 1)) \
      --start-join-addrs "$joins" --log-level warn >"$RUN/node$n.log" 2>&1 &
    echo $! >"$RUN/node$n.pid"
  done
  # Ready once every node answers etcd's Status with a leader (at most 60 s).
  for _ in $(seq 1 120); do
    local ok=0
    for n in 1 2 3; do
      if ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$(ports $n)" --cacert="$CERTS/ca.pem" \
        --cert="$CERTS/root-client.pem" --key="$CERTS/root-client-key.pem" \
        --command-timeout=2s endpoint status >/dev/null 2>&1; then
        ok=$((ok + 1))
      fi
    done
    if [[ $ok == 3 ]] && ETCDCTL_API=3 etcdctl --endpoints="$(endpoints)" \
      --cacert="$CERTS/ca.pem" --cert="$CERTS/root-client.pem" --key="$CERTS/root-client-key.pem" \
      --command-timeout=2s put bench/ready 1 >/dev/null 2>&1; then
      echo "ENDPOINTS=$(endpoints) PIDS=$(pids)"
      return 0
    fi
    sleep 0.5
  done
  echo "mokv cluster did not become ready; logs in $RUN" >&2
  stop
  return 1
}

pids() {
  local out=()
  for n in 1 2 3; do [[ -f $RUN/node$n.pid ]] && out+=("$(cat "$RUN/node$n.pid")"); done
  (IFS=,; echo "${out[*]}")
}

# The deno process of node N (setsid made the recorded PID its session leader; it is deno).
stop() {
  for n in 1 2 3; do
    [[ -f $RUN/node$n.pid ]] || continue
    kill -TERM "$(cat "$RUN/node$n.pid")" 2>/dev/null || true
  done
  for n in 1 2 3; do
    [[ -f $RUN/node$n.pid ]] || continue
    local pid
    pid=$(cat "$RUN/node$n.pid")
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$RUN/node$n.pid"
  done
}

# Each node's RSS, peak RSS and CPU seconds used so far (user + system).
rss() {
  local tck
  tck=$(getconf CLK_TCK)
  for n in 1 2 3; do
    [[ -f $RUN/node$n.pid ]] || continue
    local pid
    pid=$(cat "$RUN/node$n.pid")
    echo "node$n $(awk '/VmRSS|VmHWM/ {printf "%s %.0f MB ", $1, $2 / 1024}' "/proc/$pid/status")" \
      "cpu $(awk -v t="$tck" '{printf "%.1f s", ($14 + $15) / t}' "/proc/$pid/stat")"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  rss) rss ;;
  pids) pids ;;
  *) echo "usage: $0 start|stop|rss|pids" >&2; exit 2 ;;
esac
