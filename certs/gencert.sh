#!/usr/bin/env bash
# Makes the mokv certificate authority, the server certificate, one certificate per example
# node (node-1..node-3: each its own key, CN mokv-server, server and client auth, as the
# peers' allowed CN), and the client certificates (CN "root" and CN "nobody") with cfssl, all
# valid for one year, writes a random gossip key (gossip.key, base64 of 32
# bytes, read by the example configs through gossip-key-file), and copies the Casbin model and
# policy next to them.
#
#   usage: certs/gencert.sh [--force]
#
# Output goes to ${MOKV_CONFIG_DIR:-$HOME/.mokv}; the CA's private key goes to
# ${MOKV_CA_DIR:-<that directory>-ca} (e.g. $HOME/.mokv-ca), outside the directory nodes and
# the CLI read, so copying the config directory to a machine never copies the CA key (a key
# left there by an older gencert is moved). Existing files are kept (run it as often as you
# like); --force makes a new CA and new certificates and copies the model and policy again.
# Works from any working directory: inputs are found relative to this script.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${MOKV_CONFIG_DIR:-${HOME}/.mokv}"
force=0

for arg in "$@"; do
  case "${arg}" in
    --force) force=1 ;;
    -h | --help)
      echo "usage: $(basename "$0") [--force]  (writes to \${MOKV_CONFIG_DIR:-\$HOME/.mokv})"
      exit 0
      ;;
    *)
      echo "gencert: unknown argument '${arg}' (usage: $(basename "$0") [--force])" >&2
      exit 2
      ;;
  esac
done

for tool in cfssl cfssljson; do
  if ! command -v "${tool}" >/dev/null 2>&1; then
    echo "gencert: ${tool} not found; install golang-cfssl (apt-get install golang-cfssl)" >&2
    exit 1
  fi
done

ca_dir="${MOKV_CA_DIR:-${out_dir}-ca}"
mkdir -p "${out_dir}" "${ca_dir}"
chmod 0700 "${out_dir}" "${ca_dir}"
if [[ -s "${out_dir}/ca-key.pem" && ! -s "${ca_dir}/ca-key.pem" ]]; then
  mv "${out_dir}/ca-key.pem" "${ca_dir}/ca-key.pem"
  echo "gencert: moved the CA key to ${ca_dir}"
fi
rm -f "${out_dir}/ca-key.pem"

# gen NAME ARGS...: runs cfssl gencert and writes NAME.pem and NAME-key.pem into out_dir.
gen() {
  local name="$1"
  shift
  cfssl gencert -loglevel 3 "$@" | cfssljson -bare "${out_dir}/${name}"
  rm -f "${out_dir}/${name}.csr"
}

# have NAME: true when both the certificate and its key exist.
have() {
  [[ -s "${out_dir}/$1.pem" && -s "${out_dir}/$1-key.pem" ]]
}

remake=${force}
if [[ ${remake} -eq 1 ]] || [[ ! -s "${out_dir}/ca.pem" || ! -s "${ca_dir}/ca-key.pem" ]]; then
  gen ca -initca "${script_dir}/ca-csr.json"
  mv "${out_dir}/ca-key.pem" "${ca_dir}/ca-key.pem"
  echo "gencert: made CA ${out_dir}/ca.pem (its key in ${ca_dir})"
  remake=1 # certificates signed by an old CA are useless now
fi

sign() {
  local name="$1" profile="$2" csr="$3"
  shift 3
  if [[ ${remake} -eq 1 ]] || ! have "${name}"; then
    gen "${name}" -ca="${out_dir}/ca.pem" -ca-key="${ca_dir}/ca-key.pem" \
      -config="${script_dir}/ca-config.json" -profile="${profile}" "$@" "${csr}"
    echo "gencert: made ${out_dir}/${name}.pem"
  fi
}

sign server server "${script_dir}/server-csr.json"
for n in 1 2 3; do
  sign "node-${n}" server "${script_dir}/server-csr.json"
done
sign root-client client "${script_dir}/client-csr.json" -cn=root
sign nobody-client client "${script_dir}/client-csr.json" -cn=nobody

# The shared gossip key: with TLS on, a node refuses to start without one (or gossip-insecure).
gossip_key="${out_dir}/gossip.key"
if [[ ${force} -eq 1 || ! -s "${gossip_key}" ]]; then
  (umask 077 && head -c 32 /dev/urandom | base64 >"${gossip_key}")
  chmod 0600 "${gossip_key}"
  echo "gencert: made gossip key ${gossip_key}"
fi

for file in model.conf policy.csv; do
  if [[ ${force} -eq 1 || ! -e "${out_dir}/${file}" ]]; then
    cp "${script_dir}/${file}" "${out_dir}/${file}"
    chmod 0644 "${out_dir}/${file}"
  fi
done

echo "gencert: certificates, gossip.key, model.conf and policy.csv are in ${out_dir}"
