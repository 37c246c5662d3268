#!/usr/bin/env bash
# The StatefulSet's preStop hook. It makes a pod leave the cluster for good only when the pod
# is being scaled away: its ordinal is at or above the StatefulSet's desired replica count,
# read from the Kubernetes API (statefulsets/scale, allowed by the chart's Role). Any other
# stop (a rolling update, an eviction, a node drain, helm uninstall, scaling to zero, or an
# API that cannot be asked) is a restart: the hook does nothing, SIGTERM then stops the node
# as the same member (it hands off leadership), and it comes back with its volume.
#
# Environment: HOSTNAME (the pod name), MOKV_NAMESPACE, MOKV_RPC_PORT (8400),
# MOKV_TLS_DIR (/etc/mokv/tls: ca.pem, root-client.pem, root-client-key.pem; "" = insecure),
# MOKV_BIN (mokv). For tests: MOKV_K8S_API (default https://$KUBERNETES_SERVICE_HOST:
# $KUBERNETES_SERVICE_PORT), MOKV_K8S_TOKEN_FILE and MOKV_K8S_CA_FILE (the service account's),
# MOKV_DRY_RUN=1 (print the leave command, one argument per line, instead of running it).
# The reason for the decision goes to stderr.
# MOKV_PRESTOP_LOG: a file to append the hook's messages to (the chart uses /proc/1/fd/2, the
# node's stderr, so they show in `kubectl logs`); default stderr.
# Always exits 0: a failing hook must not hold the pod for the whole grace period.
set -uo pipefail

sa_dir=/var/run/secrets/kubernetes.io/serviceaccount
pod="${HOSTNAME%%.*}"
namespace="${MOKV_NAMESPACE:-}"
rpc_port="${MOKV_RPC_PORT:-8400}"
tls_dir="${MOKV_TLS_DIR-/etc/mokv/tls}"
bin="${MOKV_BIN:-mokv}"
api_host="${KUBERNETES_SERVICE_HOST:-kubernetes.default.svc}"
[[ "${api_host}" == *:* ]] && api_host="[${api_host}]" # IPv6
api="${MOKV_K8S_API:-https://${api_host}:${KUBERNETES_SERVICE_PORT:-443}}"
token_file="${MOKV_K8S_TOKEN_FILE:-${sa_dir}/token}"
ca_file="${MOKV_K8S_CA_FILE:-${sa_dir}/ca.crt}"

if [[ -n "${MOKV_PRESTOP_LOG:-}" && -w "${MOKV_PRESTOP_LOG}" ]]; then
  exec 2>>"${MOKV_PRESTOP_LOG}"
fi

say() {
  echo "prestop: $*" >&2
}

if [[ ! "${pod}" =~ ^([a-z0-9]([-a-z0-9]*[a-z0-9])?)-([0-9]+)$ || -z "${namespace}" ]]; then
  say "cannot tell the StatefulSet (HOSTNAME=${pod}, MOKV_NAMESPACE=${namespace}); restart, no leave"
  exit 0
fi
statefulset="${BASH_REMATCH[1]}"
ordinal="${BASH_REMATCH[3]}"

curl_args=(-sS --fail --max-time 5)
[[ -r "${token_file}" ]] && curl_args+=(-H "Authorization: Bearer $(cat "${token_file}")")
[[ -r "${ca_file}" ]] && curl_args+=(--cacert "${ca_file}")
url="${api}/apis/apps/v1/namespaces/${namespace}/statefulsets/${statefulset}/scale"
if ! body="$(curl "${curl_args[@]}" "${url}" 2>&1)"; then
  say "cannot read ${statefulset}'s replicas (${body}); restart, no leave"
  exit 0
fi
# A Scale object: {"kind":"Scale",...,"spec":{"replicas":N},"status":{...}}; spec.replicas is
# omitted when it is 0.
replicas="$(tr -d ' \t\r\n' <<<"${body}" | sed -n 's/.*"spec":{"replicas":\([0-9][0-9]*\).*/\1/p')"
if [[ -z "${replicas}" || "${replicas}" == "0" ]]; then
  say "${statefulset} has no replicas wanted (stopping the whole cluster); restart, no leave"
  exit 0
fi
if ((10#${ordinal} < replicas)); then
  say "${pod} stays (ordinal ${ordinal} < replicas ${replicas}); restart, no leave"
  exit 0
fi

cmd=("${bin}" leave --addr "127.0.0.1:${rpc_port}")
if [[ -n "${tls_dir}" ]]; then
  cmd+=(--ca "${tls_dir}/ca.pem" --cert "${tls_dir}/root-client.pem" --key "${tls_dir}/root-client-key.pem")
else
  cmd+=(--insecure)
fi
say "${pod} is scaled away (ordinal ${ordinal} >= replicas ${replicas}); leaving"
if [[ "${MOKV_DRY_RUN:-0}" == "1" ]]; then
  printf '%s\n' "${cmd[@]}"
  exit 0
fi
"${cmd[@]}" || say "mokv leave failed (exit $?); the node stays a voter until 'mokv member remove ${pod}'"
exit 0
