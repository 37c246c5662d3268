/** `mokv bench` (also `deno task bench`): flags of {@link runBench}, text or JSON report. */
import type { Command } from "./command.ts";
import { ExitCode } from "./exit_codes.ts";
import {
  boolFlag,
  choiceFlag,
  connectOptionsOf,
  intFlag,
  numberFlag,
  parseDurationMs,
  stringFlag,
} from "./flags.ts";
import { json } from "./format.ts";
import { type BenchOptions, formatBenchReport, runBench, type Workload } from "./bench.ts";
import { formatListBenchReport, type ListMethod, runListBench } from "./list_bench.ts";

/** Requests of a run given neither --requests nor --duration. */
export const DEFAULT_BENCH_REQUESTS = 10_000;

/** `mokv bench`. */
export const BENCH_COMMAND: Command = {
  words: ["bench"],
  synopsis: "[--workload put|get|mixed|list] [--concurrency N] [--requests N | --duration D]",
  summary: "load a running cluster and report throughput, latency and spread",
  details: "Always bounded: by --requests (default " + DEFAULT_BENCH_REQUESTS + ") or " +
    "--duration. get and mixed write every key first. Reports throughput, latency " +
    "p50/p90/p99/max (HDR histogram), errors by code, reads and writes per node, and the " +
    "longest time without a successful write. --write-gap keeps a put load going (default " +
    "60 s, concurrency 1) and notes each gap over 100 ms: kill nodes meanwhile to measure " +
    "fail-over. --workload list writes --keys keys (unless --skip-prefill), then times " +
    "--runs full read-backs of the store with each --list-method (stream: the List RPC, " +
    "range: Range pages) and prints seconds and keys/s. Exit 0 when no request failed, else 1.",
  flags: {
    workload: { type: "string", arg: "W", doc: "put, get, mixed or list (default put)" },
    "read-ratio": { type: "string", arg: "R", doc: "share of gets in mixed, 0..1 (default 0.5)" },
    "read-consistency": {
      type: "string",
      arg: "C",
      doc: "linearizable or stale (default linearizable)",
    },
    connections: { type: "string", arg: "N", doc: "TCP connections per server (default 1)" },
    concurrency: { type: "string", arg: "N", doc: "requests in flight (default 16)" },
    requests: { type: "string", arg: "N", doc: `stop after N requests` },
    duration: { type: "string", arg: "D", doc: "stop after D (10s, 2m; bare number = s)" },
    keys: { type: "string", arg: "N", doc: "distinct keys (default 1000)" },
    "key-size": { type: "string", arg: "B", doc: "key length in bytes (default 16)" },
    "value-size": { type: "string", arg: "B", doc: "value length in bytes (default 256)" },
    "write-gap": { type: "boolean", doc: "fail-over mode: put load, report write gaps" },
    quiet: { type: "boolean", doc: "no progress bar" },
    runs: { type: "string", arg: "N", doc: "list: read-backs per method (default 2)" },
    "list-method": {
      type: "string",
      arg: "M",
      doc: "list: stream, range or both (default both)",
    },
    "skip-prefill": { type: "boolean", doc: "list: read what is stored, write nothing" },
  },
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const f = ctx.flags;
    if (stringFlag(f, "workload") === "list") {
      const method = choiceFlag(f, "list-method", ["stream", "range", "both"], "both");
      const report = await runListBench({
        connect: connectOptionsOf(f),
        prefillKeys: boolFlag(f, "skip-prefill") ? 0 : intFlag(f, "keys", 1000, 1),
        keySizeBytes: intFlag(f, "key-size", 16, 1, 4096),
        valueSizeBytes: intFlag(f, "value-size", 256, 0, 1024 * 1024),
        concurrency: intFlag(f, "concurrency", 64, 1, 100_000),
        methods: method === "both" ? ["stream", "range"] : [method as ListMethod],
        runs: intFlag(f, "runs", 2, 1, 100),
        readConsistency: choiceFlag(
          f,
          "read-consistency",
          ["linearizable", "stale"],
          "linearizable",
        ),
        note: (text) => ctx.io.err(text),
      });
      ctx.io.out(ctx.json ? json(report) : formatListBenchReport(report));
      return ExitCode.OK;
    }
    const writeGap = boolFlag(f, "write-gap");
    const durationText = stringFlag(f, "duration");
    const requestsGiven = stringFlag(f, "requests") !== undefined;
    const durationMs = durationText !== undefined
      ? parseDurationMs(durationText, "duration", "s")
      : (writeGap && !requestsGiven ? 60_000 : undefined);
    const requests = requestsGiven
      ? intFlag(f, "requests", 1, 1)
      : (durationMs === undefined ? DEFAULT_BENCH_REQUESTS : undefined);
    const options: BenchOptions = {
      connect: connectOptionsOf(f),
      workload: choiceFlag<Workload>(f, "workload", ["put", "get", "mixed"], "put"),
      readRatio: numberFlag(f, "read-ratio", 0.5, 0, 1),
      readConsistency: choiceFlag(f, "read-consistency", ["linearizable", "stale"], "linearizable"),
      connections: intFlag(f, "connections", 1, 1, 1024),
      concurrency: intFlag(f, "concurrency", writeGap ? 1 : 16, 1, 100_000),
      ...(requests !== undefined ? { requests } : {}),
      ...(durationMs !== undefined ? { durationMs } : {}),
      keys: intFlag(f, "keys", 1000, 1),
      keySizeBytes: intFlag(f, "key-size", 16, 1, 4096),
      valueSizeBytes: intFlag(f, "value-size", 256, 0, 1024 * 1024),
      reportGapsOverMs: writeGap ? 100 : 0,
      progress: ctx.io.stderrIsTerminal && !boolFlag(f, "quiet"),
      note: (text) => ctx.io.err(text),
    };
    const report = await runBench(options);
    ctx.io.out(ctx.json ? json(report) : formatBenchReport(report));
    return report.failed === 0 ? ExitCode.OK : ExitCode.ERROR;
  },
};
