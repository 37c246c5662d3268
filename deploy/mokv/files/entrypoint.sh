#!/usr/bin/env bash
# Starts the mokv node of one StatefulSet pod. Every pod runs this script with the same
# ConfigMap and the same environment; only HOSTNAME (the pod name, <statefulset>-<ordinal>)
# differs. From it the script derives, and passes to mokv as flags:
#
#   --node-name         $HOSTNAME                                      (mokv-0, mokv-1, ...)
#   --advertise-addr    $HOSTNAME.$MOKV_SERVICE.$MOKV_NAMESPACE.svc.$MOKV_CLUSTER_DOMAIN
#   --bind-addr         0.0.0.0:$MOKV_GOSSIP_PORT
#   --data-dir          $MOKV_DATA_DIR
#   --start-join-addrs  the stable gossip addresses of pods 0..$MOKV_BOOTSTRAP_EXPECT-1
#   --bootstrap-expect  $MOKV_BOOTSTRAP_EXPECT
#   --gossip-key-file   $MOKV_GOSSIP_KEY_FILE, or a private copy of $MOKV_GOSSIP_KEY under
#                       ${TMPDIR:-/tmp} (only when set): the key itself never goes in argv,
#                       where any process on the host could read it
#
# The join list and bootstrap-expect are the same on every pod, so the first pods form one
# cluster together in any order; a node that already has Raft state never bootstraps again,
# and pods added later (ordinal >= bootstrap-expect) join through the same seeds.
#
# Environment (required): HOSTNAME, MOKV_NAMESPACE, MOKV_SERVICE, MOKV_BOOTSTRAP_EXPECT.
# Optional: MOKV_CLUSTER_DOMAIN (cluster.local), MOKV_GOSSIP_PORT (8401),
# MOKV_DATA_DIR (/var/lib/mokv), MOKV_CONFIG_FILE (/etc/mokv/config/config.yaml),
# MOKV_BIN (mokv), MOKV_GOSSIP_KEY_FILE, MOKV_GOSSIP_KEY, MOKV_DRY_RUN (1: print the command, one argument per
# line, and exit 0 instead of running it).
set -euo pipefail

die() {
  echo "entrypoint: $*" >&2
  exit 2
}

require() {
  local name="$1"
  [[ -n "${!name:-}" ]] || die "${name} must be set"
}

require HOSTNAME
require MOKV_NAMESPACE
require MOKV_SERVICE
require MOKV_BOOTSTRAP_EXPECT

pod="${HOSTNAME%%.*}" # some runtimes put a domain in HOSTNAME; the pod name is the first label
domain="${MOKV_CLUSTER_DOMAIN:-cluster.local}"
gossip_port="${MOKV_GOSSIP_PORT:-8401}"
data_dir="${MOKV_DATA_DIR:-/var/lib/mokv}"
config_file="${MOKV_CONFIG_FILE:-/etc/mokv/config/config.yaml}"
bin="${MOKV_BIN:-mokv}"
expect="${MOKV_BOOTSTRAP_EXPECT}"

[[ "${pod}" =~ ^([a-z0-9]([-a-z0-9]*[a-z0-9])?)-([0-9]+)$ ]] ||
  die "HOSTNAME ${pod} is not a StatefulSet pod name (<name>-<ordinal>)"
statefulset="${BASH_REMATCH[1]}"
[[ "${expect}" =~ ^[1-9][0-9]*$ ]] || die "MOKV_BOOTSTRAP_EXPECT must be a positive integer, got ${expect}"
[[ "${gossip_port}" =~ ^[1-9][0-9]*$ && "${gossip_port}" -le 65535 ]] ||
  die "MOKV_GOSSIP_PORT must be a port number, got ${gossip_port}"

# fqdn NAME: the stable DNS name of pod NAME under the headless service.
fqdn() {
  echo "$1.${MOKV_SERVICE}.${MOKV_NAMESPACE}.svc.${domain}"
}

seeds=()
for ((i = 0; i < expect; i++)); do
  seeds+=("$(fqdn "${statefulset}-${i}"):${gossip_port}")
done
join="$(IFS=,; echo "${seeds[*]}")"

cmd=("${bin}")
if [[ -n "${config_file}" && "${config_file}" != "-" ]]; then
  cmd+=(--config-file "${config_file}")
fi
cmd+=(
  --node-name "${pod}"
  --advertise-addr "$(fqdn "${pod}")"
  --bind-addr "0.0.0.0:${gossip_port}"
  --data-dir "${data_dir}"
  --start-join-addrs "${join}"
  --bootstrap-expect "${expect}"
)
if [[ -n "${MOKV_GOSSIP_KEY_FILE:-}" ]]; then
  cmd+=(--gossip-key-file "${MOKV_GOSSIP_KEY_FILE}")
elif [[ -n "${MOKV_GOSSIP_KEY:-}" ]]; then
  key_file="${TMPDIR:-/tmp}/mokv-gossip.key"
  (umask 077 && printf '%s\n' "${MOKV_GOSSIP_KEY}" >"${key_file}")
  cmd+=(--gossip-key-file "${key_file}")
fi

if [[ "${MOKV_DRY_RUN:-0}" == "1" ]]; then
  printf '%s\n' "${cmd[@]}"
  exit 0
fi
exec "${cmd[@]}"
