#!/usr/bin/env bash
# The same etcd client code path against both systems: ../shared/anchor-bench's Go generator
# with `-target etcd` (etcd's KV API: Put to the leader found with Maintenance.Status, Range
# round-robin over all endpoints, linearizable and serializable) against a fresh three-node
# mokv cluster (bench/etcd_cluster.sh, mutual TLS), and the same matrix against etcd 3.4 with
# mutual TLS (anchor-bench's run_etcd.sh, SKIP_PLAIN=1 SKIP_FAILOVER=1). Runs alternate,
# mokv then etcd, RUNS times (default 2); prints a table of the medians per row.
#
#   flock /tmp/mokv-heavy.lock bash bench/etcd_anchor.sh
# Knobs: RUNS (2), BASE (mokv's ports, see bench/etcd_cluster.sh), SKIP_ETCD=1 (mokv only),
# and anchor-bench's REQUESTS, DURATION, WARMUP, KEYS. Results: /tmp/anchor-bench/results.
# Needs /tmp/anchor-bench/bin/loadgen (../shared/anchor-bench/setup.sh builds it).
set -uo pipefail
cd "$(dirname "$0")/.."
ANCHOR="${ANCHOR:-$(cd .. && pwd)/shared/anchor-bench}"
# shellcheck source=/dev/null
. "$ANCHOR/lib.sh"
[[ -x $LOADGEN ]] || { echo "no $LOADGEN: run $ANCHOR/setup.sh first" >&2; exit 1; }
CERTS="${MOKV_CONFIG_DIR:-$HOME/.mokv}"
TLSFLAGS="-cacert $CERTS/ca.pem -cert $CERTS/root-client.pem -key $CERTS/root-client-key.pem"
LABEL="mokv-$(git rev-parse --short HEAD)"
RESULTS=/tmp/anchor-bench/results
mkdir -p "$RESULTS"
STAMP=$(date +%Y%m%d-%H%M%S)
MOKV_OUT=$RESULTS/mokv-etcdapi-$STAMP.jsonl
ETCD_FILES=()
: >"$MOKV_OUT"
trap 'bash bench/etcd_cluster.sh stop' EXIT

for run in $(seq 1 "${RUNS:-2}"); do
  echo "run $run: mokv ($LABEL) through etcd's API" >&2
  ENDPOINTS=""
  eval "$(bash bench/etcd_cluster.sh start | tail -1)"
  [[ -n $ENDPOINTS ]] || { echo "the mokv cluster did not start" >&2; exit 1; }
  run_prefill etcd "$ENDPOINTS" "$TLSFLAGS" || { echo "prefill failed" >&2; exit 1; }
  run_matrix etcd "$ENDPOINTS" "$TLSFLAGS" "$PIDS" "$MOKV_OUT" "$LABEL"
  bash bench/etcd_cluster.sh rss >&2
  bash bench/etcd_cluster.sh stop
  if [[ ${SKIP_ETCD:-0} != 1 ]]; then
    echo "run $run: etcd" >&2
    out=$(SKIP_PLAIN=1 SKIP_FAILOVER=1 "$ANCHOR/run_etcd.sh" 2>&1)
    file=$(sed -n 's/.*results -> \(.*\.jsonl\).*/\1/p' <<<"$out" | head -1)
    [[ -n $file ]] && ETCD_FILES+=("$file")
  fi
done

echo "mokv: $MOKV_OUT; etcd: ${ETCD_FILES[*]:-none}"
python3 - "$MOKV_OUT" "${ETCD_FILES[@]}" <<'EOF'
import json, statistics, sys

def rows(paths):
    out = {}
    for path in paths:
        for line in open(path):
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("mode") != "bench":
                continue
            name = r["workload"] + (" " + r["consistency"] if r.get("consistency") else "")
            out.setdefault((name, r["concurrency"]), []).append(r)
    return out

def cell(rs):
    if not rs:
        return "-", None
    ops = statistics.median(r["throughput_ops"] for r in rs)
    p99 = statistics.median(r["p99_ms"] for r in rs)
    errs = sum(r.get("errors", 0) for r in rs)
    runs = ", ".join(f"{r['throughput_ops']:,.0f}" for r in rs)
    return f"{ops:,.0f} ops/s, p99 {p99:.1f} ms ({runs}{'; errors ' + str(errs) if errs else ''})", ops

mokv, etcd = rows(sys.argv[1:2]), rows(sys.argv[2:])
print("| row | mokv via etcd's API (median; runs) | etcd 3.4 (median; runs) | mokv / etcd |")
print("|---|---|---|---|")
for key in sorted(set(mokv) | set(etcd), key=lambda k: (k[0] != "put", k[0], k[1])):
    m, mo = cell(mokv.get(key, []))
    e, eo = cell(etcd.get(key, []))
    ratio = f"{mo / eo:.2f}" if mo and eo else "-"
    print(f"| {key[0]} c={key[1]} | {m} | {e} | {ratio} |")
EOF
