/**
 * The load generator behind `mokv bench` / `deno task bench`: a bounded run (a request count
 * or a duration) of puts, gets or a mix, from `concurrency` workers over `connections`
 * clients, measuring latency in an HDR histogram, throughput, errors by code, how reads and
 * writes spread over the nodes, and the longest time without a successful write (kill nodes
 * while it runs to measure fail-over).
 */
import * as hdr from "hdr-histogram-js";
import cliProgress from "cli-progress";
import process from "node:process";
import { type ConnectOptions, errorCode, MokvClient, type ReadConsistency } from "../client/mod.ts";
import { InvalidArgumentError } from "../errors.ts";

/** What a bench run does. */
export type Workload = "put" | "get" | "mixed";

/** Settings of one run. */
export interface BenchOptions {
  /** How to reach the cluster (addresses, TLS). */
  readonly connect: ConnectOptions;
  readonly workload: Workload;
  /** Share of gets in "mixed", 0..1. */
  readonly readRatio: number;
  readonly readConsistency: ReadConsistency;
  /** Clients, each with its own TCP connection per server. */
  readonly connections: number;
  /** Requests in flight. */
  readonly concurrency: number;
  /** Stop after this many requests... */
  readonly requests?: number;
  /** ...or after this long (one of the two is required). */
  readonly durationMs?: number;
  /** Distinct keys touched (get and mixed write them all first). */
  readonly keys: number;
  readonly keySizeBytes: number;
  readonly valueSizeBytes: number;
  /** Report every write gap longer than this on stderr while running (0 = never). */
  readonly reportGapsOverMs: number;
  /** Draw a progress bar on stderr. */
  readonly progress: boolean;
  /** Where progress notes go (stderr). */
  readonly note: (text: string) => void;
}

/** Latency percentiles, in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** Everything a run measured; `--json` prints exactly this. */
export interface BenchReport {
  readonly workload: Workload;
  readonly read_ratio: number;
  readonly read_consistency: ReadConsistency;
  readonly connections: number;
  readonly concurrency: number;
  readonly keys: number;
  readonly key_size: number;
  readonly value_size: number;
  readonly requests: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly duration_s: number;
  readonly throughput_ops_s: number;
  readonly latency_ms: LatencySummary;
  readonly latency_ms_by_op: { readonly get?: LatencySummary; readonly put?: LatencySummary };
  readonly errors: Record<string, number>;
  /** Successful reads answered by each node (address → count). */
  readonly read_spread: Record<string, number>;
  /** Successful writes answered by each node. */
  readonly write_spread: Record<string, number>;
  /** Longest time without a successful write, from start to end (null without writes). */
  readonly longest_write_gap_ms: number | null;
}

/** Largest latency the histograms track: 10 minutes in microseconds. */
const MAX_LATENCY_US = 600_000_000;

function histogram(): hdr.Histogram {
  return hdr.build({
    bitBucketSize: 64,
    highestTrackableValue: MAX_LATENCY_US,
    numberOfSignificantValueDigits: 3,
    autoResize: false,
  } as hdr.BuildRequest);
}

function summary(h: hdr.Histogram): LatencySummary {
  const ms = (us: number) => Number((us / 1000).toFixed(3));
  // A percentile is its bucket's highest equivalent value, which can exceed the exact max.
  const at = (p: number) => ms(Math.min(h.getValueAtPercentile(p), h.maxValue));
  return {
    count: h.totalCount,
    p50: at(50),
    p90: at(90),
    p99: at(99),
    max: ms(h.maxValue),
    mean: ms(h.totalCount === 0 ? 0 : h.mean),
  };
}

/** The key of index `i`: "k" and the index, zero-padded to `sizeBytes`. */
export function benchKey(i: number, sizeBytes: number): string {
  return "k" + String(i).padStart(sizeBytes - 1, "0");
}

/** Checks the settings; throws InvalidArgumentError naming the bad one. */
export function validateBench(o: BenchOptions): void {
  const need = (ok: boolean, what: string) => {
    if (!ok) throw new InvalidArgumentError(what);
  };
  need(o.requests !== undefined || o.durationMs !== undefined, "give --requests or --duration");
  need(o.requests === undefined || o.requests >= 1, "--requests must be >= 1");
  need(o.durationMs === undefined || o.durationMs >= 1, "--duration must be > 0");
  need(o.concurrency >= 1 && o.connections >= 1, "--concurrency and --connections must be >= 1");
  need(o.keys >= 1, "--keys must be >= 1");
  need(o.readRatio >= 0 && o.readRatio <= 1, "--read-ratio must be within 0..1");
  need(
    o.keySizeBytes >= String(o.keys - 1).length + 1,
    `--key-size must be at least ${String(o.keys - 1).length + 1} for ${o.keys} keys`,
  );
  need(o.valueSizeBytes >= 0, "--value-size must be >= 0");
}

/** Runs the benchmark; every loop is bounded by the request count or the duration. */
export async function runBench(o: BenchOptions): Promise<BenchReport> {
  validateBench(o);
  const perClientSessions = Math.ceil(o.concurrency / o.connections);
  const clients: MokvClient[] = [];
  try {
    for (let i = 0; i < o.connections; i++) {
      clients.push(
        await MokvClient.connect({
          ...o.connect,
          maxSessions: Math.max(perClientSessions, 1),
          privateConnections: o.connections > 1,
        }),
      );
    }
    const value = new Uint8Array(o.valueSizeBytes);
    crypto.getRandomValues(value.subarray(0, Math.min(value.length, 65536)));
    if (o.workload !== "put") await preload(o, clients, value);
    const before = spreadOf(clients);
    return await measure(o, clients, value, before);
  } finally {
    for (const c of clients) c.close();
  }
}

async function preload(o: BenchOptions, clients: MokvClient[], value: Uint8Array): Promise<void> {
  o.note(`writing ${o.keys} keys first...\n`);
  let next = 0;
  const workers = Math.min(o.concurrency, 64, o.keys);
  await Promise.all(Array.from({ length: workers }, async (_, w) => {
    const client = clients[w % clients.length];
    while (next < o.keys) {
      const i = next++;
      await client.set(benchKey(i, o.keySizeBytes), value);
    }
  }));
}

interface Spread {
  reads: Map<string, number>;
  writes: Map<string, number>;
}

function spreadOf(clients: MokvClient[]): Spread {
  const reads = new Map<string, number>();
  const writes = new Map<string, number>();
  for (const c of clients) {
    for (const s of c.nodeStats()) {
      reads.set(s.addr, (reads.get(s.addr) ?? 0) + s.reads);
      writes.set(s.addr, (writes.get(s.addr) ?? 0) + s.writes);
    }
  }
  return { reads, writes };
}

function diff(after: Map<string, number>, before: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [addr, n] of [...after].sort(([a], [b]) => a.localeCompare(b))) {
    const d = n - (before.get(addr) ?? 0);
    if (d > 0) out[addr] = d;
  }
  return out;
}

async function measure(
  o: BenchOptions,
  clients: MokvClient[],
  value: Uint8Array,
  before: Spread,
): Promise<BenchReport> {
  const all = histogram();
  const byOp = { get: histogram(), put: histogram() };
  const errors: Record<string, number> = {};
  let issued = 0;
  let done = 0;
  let failed = 0;
  let writes = 0;
  const startMs = performance.now();
  const deadlineMs = o.durationMs === undefined ? Infinity : startMs + o.durationMs;
  const maxRequests = o.requests ?? Infinity;
  let lastWriteMs = startMs;
  let longestGapMs = 0;

  const bar = o.progress ? startProgress(o) : undefined;
  const tick = bar
    ? setInterval(() => {
      bar.update(
        o.requests !== undefined
          ? done
          : Math.min(Math.round((performance.now() - startMs) / 1000), bar.getTotal()),
        { ops: Math.round(done / Math.max((performance.now() - startMs) / 1000, 0.001)) },
      );
    }, 200)
    : undefined;

  const worker = async (w: number) => {
    const client = clients[w % clients.length];
    while (issued < maxRequests && performance.now() < deadlineMs) {
      issued++;
      const isGet = o.workload === "get" ||
        (o.workload === "mixed" && Math.random() < o.readRatio);
      const key = benchKey(Math.floor(Math.random() * o.keys), o.keySizeBytes);
      const t0 = performance.now();
      try {
        if (isGet) await client.get(key, { consistency: o.readConsistency });
        else await client.set(key, value);
        const t1 = performance.now();
        const us = Math.max(1, Math.round((t1 - t0) * 1000));
        all.recordValue(us);
        (isGet ? byOp.get : byOp.put).recordValue(us);
        if (!isGet) {
          writes++;
          const gap = t1 - lastWriteMs;
          if (gap > longestGapMs) longestGapMs = gap;
          if (o.reportGapsOverMs > 0 && gap > o.reportGapsOverMs) {
            o.note(
              `write gap of ${gap.toFixed(0)} ms ended at ${
                ((t1 - startMs) / 1000).toFixed(1)
              } s\n`,
            );
          }
          if (t1 > lastWriteMs) lastWriteMs = t1;
        }
      } catch (error) {
        failed++;
        const code = errorCode(error);
        errors[code] = (errors[code] ?? 0) + 1;
      }
      done++;
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, (_, w) => worker(w)));
  } finally {
    if (tick !== undefined) clearInterval(tick);
    bar?.update(bar.getTotal());
    bar?.stop();
  }
  const endMs = performance.now();
  const hasWrites = o.workload !== "get";
  longestGapMs = Math.max(longestGapMs, endMs - lastWriteMs);
  const durationS = (endMs - startMs) / 1000;
  const after = spreadOf(clients);
  const succeeded = done - failed;
  return {
    workload: o.workload,
    read_ratio: o.workload === "mixed" ? o.readRatio : o.workload === "get" ? 1 : 0,
    read_consistency: o.readConsistency,
    connections: o.connections,
    concurrency: o.concurrency,
    keys: o.keys,
    key_size: o.keySizeBytes,
    value_size: o.valueSizeBytes,
    requests: done,
    succeeded,
    failed,
    duration_s: Number(durationS.toFixed(3)),
    throughput_ops_s: Number((succeeded / Math.max(durationS, 1e-9)).toFixed(1)),
    latency_ms: summary(all),
    latency_ms_by_op: {
      ...(o.workload !== "put" ? { get: summary(byOp.get) } : {}),
      ...(hasWrites ? { put: summary(byOp.put) } : {}),
    },
    errors,
    read_spread: diff(after.reads, before.reads),
    write_spread: diff(after.writes, before.writes),
    longest_write_gap_ms: hasWrites ? Number(longestGapMs.toFixed(1)) : null,
  };
}

/** The part of cli-progress's SingleBar the bench uses (the package ships no types). */
interface ProgressBar {
  start(total: number, value: number, payload?: Record<string, unknown>): void;
  update(value: number, payload?: Record<string, unknown>): void;
  getTotal(): number;
  stop(): void;
}

function startProgress(o: BenchOptions): ProgressBar {
  const byTime = o.requests === undefined;
  const Bar = (cliProgress as unknown as {
    SingleBar: new (options: Record<string, unknown>) => ProgressBar;
  }).SingleBar;
  const bar = new Bar({
    stream: process.stderr,
    format: `bench ${o.workload} [{bar}] {percentage}% | {value}/{total}${
      byTime ? " s" : ""
    } | {ops} ops/s`,
    barsize: 30,
    hideCursor: true,
    clearOnComplete: true,
  });
  bar.start(byTime ? Math.ceil(o.durationMs! / 1000) : o.requests!, 0, { ops: 0 });
  return bar;
}

/** The report as text, for people. */
export function formatBenchReport(r: BenchReport): string {
  const lat = (s: LatencySummary) =>
    `p50 ${s.p50.toFixed(2)}  p90 ${s.p90.toFixed(2)}  p99 ${s.p99.toFixed(2)}  max ${
      s.max.toFixed(2)
    }  mean ${s.mean.toFixed(2)}`;
  const spread = (m: Record<string, number>) => {
    const total = Object.values(m).reduce((a, b) => a + b, 0);
    const parts = Object.entries(m).map(([addr, n]) =>
      `${addr} ${n} (${(100 * n / Math.max(total, 1)).toFixed(1)}%)`
    );
    return parts.length > 0 ? parts.join(", ") : "-";
  };
  const lines = [
    `mokv bench: ${r.workload}${
      r.workload === "mixed" ? ` (read ratio ${r.read_ratio})` : ""
    }, ${r.read_consistency} reads, concurrency ${r.concurrency}, connections ${r.connections}, ` +
    `keys ${r.keys} x ${r.key_size} B, values ${r.value_size} B`,
    `requests        ${r.requests} in ${
      r.duration_s.toFixed(2)
    } s (${r.succeeded} ok, ${r.failed} failed)`,
    `throughput      ${r.throughput_ops_s.toFixed(1)} ops/s`,
    `latency ms      ${lat(r.latency_ms)}`,
  ];
  if (r.latency_ms_by_op.get && r.latency_ms_by_op.put) {
    lines.push(`  get           ${lat(r.latency_ms_by_op.get)}`);
    lines.push(`  put           ${lat(r.latency_ms_by_op.put)}`);
  }
  const errs = Object.entries(r.errors).map(([code, n]) => `${code} ${n}`).join(", ");
  lines.push(`errors          ${errs || "none"}`);
  lines.push(`reads by node   ${spread(r.read_spread)}`);
  lines.push(`writes by node  ${spread(r.write_spread)}`);
  if (r.longest_write_gap_ms !== null) {
    lines.push(`longest write gap ${r.longest_write_gap_ms.toFixed(1)} ms`);
  }
  return lines.join("\n") + "\n";
}
