#!/usr/bin/env bash
# Issue #15's side-by-side run: for each of RUNS rounds, a fresh three-node mokv cluster
# (example/config*.yaml, mutual TLS, data in a temporary directory) and then a fresh etcd 3.4
# cluster (../shared/anchor-bench's etcd_cluster.sh --tls) get the same Go load generator:
# anchor-bench's matrix (put c=1/16/64/256, get c=16/64; mokv through api.KV, etcd through
# its KV API), then the ingest of INGEST_KEYS keys (prefill, c=64), put c=64 on that store,
# and each node's RSS 20 s after. Prints every run's rows and the medians per row.
#
#   flock /tmp/mokv-heavy.lock bash bench/side_by_side.sh
# Knobs: RUNS (2), INGEST_KEYS (300000), SKIP_ETCD=1, SKIP_MOKV=1, and anchor-bench's
# REQUESTS, DURATION, WARMUP (default here 3s). Needs /tmp/anchor-bench/bin/loadgen
# (anchor-bench's setup.sh) and the certificates in ~/.mokv (deno task gencert).
set -uo pipefail
cd "$(dirname "$0")/.."
ANCHOR="${ANCHOR:-$(cd .. && pwd)/shared/anchor-bench}"
export WARMUP=${WARMUP:-3s}
# shellcheck source=/dev/null
. "$ANCHOR/lib.sh"
[[ -x $LOADGEN ]] || { echo "no $LOADGEN: run $ANCHOR/setup.sh first" >&2; exit 1; }
CERTS="${MOKV_CONFIG_DIR:-$HOME/.mokv}"
MOKV_TLS="-cacert $CERTS/ca.pem -cert $CERTS/root-client.pem -key $CERTS/root-client-key.pem -tls-server-name localhost"
MOKV_EPS=localhost:8400,localhost:8402,localhost:8404
INGEST_KEYS=${INGEST_KEYS:-300000}
LABEL="mokv-$(git rev-parse --short HEAD)"
RESULTS=/tmp/anchor-bench/results
mkdir -p "$RESULTS"
OUT=$RESULTS/side-by-side-$(date +%Y%m%d-%H%M%S).jsonl
: >"$OUT"
DATA=$(mktemp -d /tmp/mokv-side-by-side-XXXXXX)
MOKV_PIDS=()
stop_mokv() {
  [[ ${#MOKV_PIDS[@]} -gt 0 ]] && kill -TERM "${MOKV_PIDS[@]}" 2>/dev/null
  for p in "${MOKV_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  MOKV_PIDS=()
}
cleanup() { stop_mokv; "$ANCHOR/etcd_cluster.sh" stop >/dev/null 2>&1; rm -rf "$DATA"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_mib() { # PIDS (comma-separated) -> "a,b,c" MiB
  local out=() p
  for p in ${1//,/ }; do out+=("$(awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$p/status" 2>/dev/null)"); done
  (IFS=,; echo "${out[*]}")
}

# ingest_rows TARGET ENDPOINTS TLSFLAGS PIDS LABEL: the 300,000-key ingest, put c=64 on it, RSS.
ingest_rows() {
  local target=$1 eps=$2 tlsf=$3 pids=$4 label=$5 t0 t1
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$LOADGEN" -mode prefill -target "$target" -endpoints "$eps" $tlsf -keys "$INGEST_KEYS" \
    -key-size "$KEY_SIZE" -value-size "$VALUE_SIZE" -concurrency 64 -conns 2 -duration 10m >/dev/null ||
    echo "ingest failed" >&2
  t1=$(date +%s.%N)
  python3 -c "import json,sys; print(json.dumps({'mode':'ingest','target':sys.argv[1],'label':sys.argv[2],'keys':int(sys.argv[3]),'throughput_ops':int(sys.argv[3])/(float(sys.argv[5])-float(sys.argv[4]))}))" \
    "$target" "$label" "$INGEST_KEYS" "$t0" "$t1" >>"$OUT"
  # shellcheck disable=SC2086
  "$LOADGEN" -mode bench -target "$target" -endpoints "$eps" $tlsf -watch-pids "$pids" \
    -keys "$INGEST_KEYS" -key-size "$KEY_SIZE" -value-size "$VALUE_SIZE" -label "$label" \
    -workload put -concurrency 64 -conns 2 -requests "$REQUESTS" -duration "$DURATION" \
    -warmup "$WARMUP" | sed 's/"mode":"bench"/"mode":"bench300k"/' >>"$OUT"
  sleep 20
  echo "{\"mode\":\"rss\",\"target\":\"$target\",\"label\":\"$label\",\"rss_mib\":\"$(rss_mib "$pids")\"}" >>"$OUT"
}

for run in $(seq 1 "${RUNS:-2}"); do
  if [[ ${SKIP_MOKV:-0} != 1 ]]; then
    echo "run $run: mokv ($LABEL)" >&2
    rm -rf "$DATA"/n*
    for i in 1 2 3; do
      cfg=example/config.yaml
      [[ $i -gt 1 ]] && cfg=example/config$i.yaml
      deno run --allow-all --unstable-kv --unstable-net main.ts --config-file "$cfg" \
        --data-dir "$DATA/n$i" --log-level warn >"$DATA/node$i.log" 2>&1 &
      MOKV_PIDS+=($!)
    done
    pids=$(IFS=,; echo "${MOKV_PIDS[*]}")
    # shellcheck disable=SC2086
    "$LOADGEN" -mode leader -target mokv -endpoints "$MOKV_EPS" $MOKV_TLS -duration 30s >/dev/null ||
      { echo "no mokv leader" >&2; exit 1; }
    run_prefill mokv "$MOKV_EPS" "$MOKV_TLS" || { echo "prefill failed" >&2; exit 1; }
    run_matrix mokv "$MOKV_EPS" "$MOKV_TLS" "$pids" "$OUT" "$LABEL"
    ingest_rows mokv "$MOKV_EPS" "$MOKV_TLS" "$pids" "$LABEL"
    stop_mokv
  fi
  if [[ ${SKIP_ETCD:-0} != 1 ]]; then
    echo "run $run: etcd" >&2
    "$ANCHOR/etcd_cluster.sh" start --tls >/dev/null || exit 1
    eval "$("$ANCHOR/etcd_cluster.sh" env)" # ENDPOINTS, PIDS, TLSFLAGS
    run_prefill etcd "$ENDPOINTS" "$TLSFLAGS" || { echo "prefill failed" >&2; exit 1; }
    run_matrix etcd "$ENDPOINTS" "$TLSFLAGS" "$PIDS" "$OUT" etcd
    ingest_rows etcd "$ENDPOINTS" "$TLSFLAGS" "$PIDS" etcd
    "$ANCHOR/etcd_cluster.sh" stop >/dev/null
  fi
done

echo "results: $OUT"
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    who = "etcd" if r.get("target") == "etcd" or r.get("label") == "etcd" else "mokv"
    mode = r.get("mode")
    if mode in ("bench", "bench300k"):
        # mokv's reads are linearizable (ReadIndex): its get rows line up with etcd's "get l".
        cons = r.get("consistency") or ("l" if r["workload"] == "get" else "")
        name = r["workload"] + (" " + cons if cons else "")
        name += f" c={r['concurrency']}" + (" on the ingested store" if mode == "bench300k" else "")
        rows.setdefault(name, {}).setdefault(who, []).append((r["throughput_ops"], r.get("p99_ms")))
    elif mode == "ingest":
        rows.setdefault(f"ingest of {r['keys']} keys", {}).setdefault(who, []).append((r["throughput_ops"], None))
    elif mode == "rss":
        rows.setdefault("RSS MiB 20 s after", {}).setdefault(who, []).append((r["rss_mib"], None))
print(f"{'row':44} {'etcd':>30} {'mokv':>30} ratio")
for name, by in rows.items():
    def show(xs):
        if not xs:
            return "-", None
        if isinstance(xs[0][0], str):
            return " | ".join(x for x, _ in xs), None
        ops = statistics.median(x for x, _ in xs)
        p99s = [p for _, p in xs if p is not None]
        p99 = f" p99 {statistics.median(p99s):.1f}" if p99s else ""
        return f"{ops:,.0f}{p99} ({', '.join(f'{x:,.0f}' for x, _ in xs)})", ops
    e, eo = show(by.get("etcd", []))
    m, mo = show(by.get("mokv", []))
    ratio = f"{mo / eo:.2f}" if eo and mo else ""
    print(f"{name:44} {e:>30} {m:>30} {ratio}")
PY
