/**
 * The read-back benchmark behind `mokv bench --workload list`: optionally writes N keys, then
 * times full read-backs of the store, each method `runs` times: the List stream (one
 * GetResponse message per key, as mökv clients read it) and the paged Range RPC (what
 * `mokv kv list` uses). Reports seconds, keys/s and MB/s per run and the median.
 */
import { type ConnectOptions, MokvClient, type ReadConsistency } from "../client/mod.ts";
import { InvalidArgumentError } from "../errors.ts";
import { benchKey } from "./bench.ts";

/** How a read-back reads: the List stream or Range pages. */
export type ListMethod = "stream" | "range";

/** Settings of a read-back benchmark. */
export interface ListBenchOptions {
  readonly connect: ConnectOptions;
  /** Keys to write first (0: read what is stored). */
  readonly prefillKeys: number;
  readonly keySizeBytes: number;
  readonly valueSizeBytes: number;
  /** Writes in flight while prefilling. */
  readonly concurrency: number;
  readonly methods: readonly ListMethod[];
  /** Read-backs per method. */
  readonly runs: number;
  readonly readConsistency: ReadConsistency;
  /** Where progress notes go (stderr). */
  readonly note: (text: string) => void;
}

/** One timed read-back. */
export interface ListRun {
  readonly method: ListMethod;
  readonly keys: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly keys_per_s: number;
}

/** Everything a read-back benchmark measured; `--json` prints exactly this. */
export interface ListBenchReport {
  readonly workload: "list";
  readonly read_consistency: ReadConsistency;
  readonly runs: readonly ListRun[];
  /** Median seconds and keys/s per method. */
  readonly median: Readonly<Record<string, { seconds: number; keys_per_s: number }>>;
}

/** Checks the settings; throws InvalidArgumentError naming the bad one. */
export function validateListBench(o: ListBenchOptions): void {
  if (!(o.runs >= 1)) throw new InvalidArgumentError("--runs must be >= 1");
  if (o.methods.length === 0) throw new InvalidArgumentError("--list-method: give a method");
  if (o.prefillKeys > 0 && o.keySizeBytes < String(o.prefillKeys - 1).length + 1) {
    throw new InvalidArgumentError(
      `--key-size must be at least ${
        String(o.prefillKeys - 1).length + 1
      } for ${o.prefillKeys} keys`,
    );
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Runs the read-back benchmark; bounded by the keys stored and `runs`. */
export async function runListBench(o: ListBenchOptions): Promise<ListBenchReport> {
  validateListBench(o);
  const client = await MokvClient.connect({ ...o.connect, maxSessions: o.concurrency });
  try {
    if (o.prefillKeys > 0) await prefill(o, client);
    const runs: ListRun[] = [];
    for (const method of o.methods) {
      for (let r = 0; r < o.runs; r++) {
        const read = method === "stream" ? client.listStream : client.list;
        const startMs = performance.now();
        let keys = 0;
        let bytes = 0;
        for await (const e of read.call(client, { consistency: o.readConsistency })) {
          keys++;
          bytes += e.key.length + e.value.length;
        }
        const seconds = (performance.now() - startMs) / 1000;
        const run = {
          method,
          keys,
          bytes,
          seconds: Number(seconds.toFixed(3)),
          keys_per_s: Math.round(keys / Math.max(seconds, 1e-9)),
        };
        o.note(`${method} run ${r + 1}: ${keys} keys in ${run.seconds} s\n`);
        runs.push(run);
      }
    }
    const byMethod: Record<string, { seconds: number; keys_per_s: number }> = {};
    for (const method of o.methods) {
      const mine = runs.filter((r) => r.method === method);
      byMethod[method] = {
        seconds: Number(median(mine.map((r) => r.seconds)).toFixed(3)),
        keys_per_s: Math.round(median(mine.map((r) => r.keys_per_s))),
      };
    }
    return { workload: "list", read_consistency: o.readConsistency, runs, median: byMethod };
  } finally {
    client.close();
  }
}

async function prefill(o: ListBenchOptions, client: MokvClient): Promise<void> {
  o.note(`writing ${o.prefillKeys} keys first...\n`);
  const value = new Uint8Array(o.valueSizeBytes);
  crypto.getRandomValues(value.subarray(0, Math.min(value.length, 65536)));
  let next = 0;
  const workers = Math.min(o.concurrency, o.prefillKeys);
  await Promise.all(Array.from({ length: workers }, async () => {
    while (next < o.prefillKeys) {
      const i = next++;
      await client.set(benchKey(i, o.keySizeBytes), value);
    }
  }));
}

/** The report as text, for people. */
export function formatListBenchReport(r: ListBenchReport): string {
  const lines = [`mokv bench: list (full read-back), ${r.read_consistency} reads`];
  for (const run of r.runs) {
    lines.push(
      `${run.method.padEnd(7)} ${String(run.keys).padStart(9)} keys  ${
        (run.bytes / 1e6).toFixed(1).padStart(7)
      } MB  ${run.seconds.toFixed(3).padStart(8)} s  ${String(run.keys_per_s).padStart(9)} keys/s`,
    );
  }
  for (const [method, m] of Object.entries(r.median)) {
    lines.push(`median ${method}: ${m.seconds.toFixed(3)} s, ${m.keys_per_s} keys/s`);
  }
  return lines.join("\n") + "\n";
}
