#!/usr/bin/env bash
# Starts the local three-node example cluster (example/config*.yaml) with mutual TLS.
# Makes the certificates and the gossip key on first run (deno task gencert -> $HOME/.mokv).
# Ctrl-C stops all.
# Uses ./mokv when it has been built (deno task compile), else runs main.ts with Deno.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG_DIR="${MOKV_CONFIG_DIR:-$HOME/.mokv}"
if [[ ! -f "$CONFIG_DIR/node-1.pem" || ! -f "$CONFIG_DIR/root-client.pem" ||
  ! -f "$CONFIG_DIR/gossip.key" ]]; then
  echo "making certificates and the gossip key in $CONFIG_DIR"
  bash certs/gencert.sh
fi
if [[ -x ./mokv ]]; then
  run=(./mokv)
else
  run=(deno run --allow-all --unstable-kv --unstable-net main.ts)
fi
pids=()
stop() {
  trap - INT TERM
  echo "stopping the cluster"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM
for cfg in example/config.yaml example/config2.yaml example/config3.yaml; do
  "${run[@]}" --config-file "$cfg" &
  pids+=($!)
done
echo "mokv cluster starting: gRPC on 127.0.0.1:8400, :8402, :8404; metrics on :4000, :4001, :4002"
echo "try: deno task mokv kv set hello world --addr 127.0.0.1:8400   (Ctrl-C stops the cluster)"
wait "${pids[@]}"
