/**
 * `mokv health`: asks grpc.health.v1 Check of each --addr node, once, or `--continuous
 * --requests N --delay D` times (like distribKV's health client), reporting the success rate
 * and the mean latency. Exit 0 only when every check answered SERVING.
 */
import type { Command } from "./command.ts";
import { ExitCode } from "./exit_codes.ts";
import { addrsOf, boolFlag, intFlag, parseDurationMs, stringFlag } from "./flags.ts";
import { json } from "./format.ts";
import { errorCode } from "../client/mod.ts";

interface NodeHealth {
  addr: string;
  requests: number;
  serving: number;
  latencySumMs: number;
  last: string;
}

/** `mokv health`. */
export const HEALTH_COMMAND: Command = {
  words: ["health"],
  synopsis: "[--continuous --requests N --delay D]",
  summary: "check that each --addr node is SERVING (grpc.health.v1)",
  details: "Prints one line per node: status, success rate and mean latency. A failed check " +
    "counts as not serving. Exit 0 when every check was SERVING, else 5.",
  flags: {
    continuous: { type: "boolean", doc: "check repeatedly (see --requests and --delay)" },
    requests: { type: "string", arg: "N", doc: "checks per node with --continuous (default 10)" },
    delay: { type: "string", arg: "D", doc: "pause between checks, e.g. 500ms (default 1s)" },
    service: { type: "string", arg: "NAME", doc: 'service to check (default "", the server)' },
  },
  discover: false,
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const continuous = boolFlag(ctx.flags, "continuous");
    const requests = continuous ? intFlag(ctx.flags, "requests", 10, 1, 1_000_000) : 1;
    const delayText = stringFlag(ctx.flags, "delay");
    const delayMs = delayText === undefined ? 1000 : parseDurationMs(delayText, "delay", "ms");
    const service = stringFlag(ctx.flags, "service") ?? "";
    const addrs = addrsOf(ctx.flags);
    const client = await ctx.client();
    const nodes: NodeHealth[] = addrs.map((addr) => ({
      addr,
      requests: 0,
      serving: 0,
      latencySumMs: 0,
      last: "",
    }));
    for (let i = 0; i < requests; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, delayMs));
      await Promise.all(nodes.map(async (n) => {
        const started = performance.now();
        try {
          n.last = await client.health(n.addr, service);
        } catch (error) {
          n.last = errorCode(error);
        }
        n.requests++;
        n.latencySumMs += performance.now() - started;
        if (n.last === "SERVING") n.serving++;
        if (continuous && !ctx.json) {
          ctx.io.err(`${n.addr} #${i + 1}: ${n.last}\n`);
        }
      }));
    }
    const report = nodes.map((n) => ({
      addr: n.addr,
      status: n.last,
      requests: n.requests,
      serving: n.serving,
      success_rate: n.serving / n.requests,
      mean_latency_ms: Number((n.latencySumMs / n.requests).toFixed(3)),
    }));
    if (ctx.json) {
      ctx.io.out(json({ nodes: report }));
    } else {
      for (const r of report) {
        ctx.io.out(
          `${r.addr}: ${r.status}  success ${r.serving}/${r.requests} (${
            (r.success_rate * 100).toFixed(1)
          }%)  mean latency ${r.mean_latency_ms.toFixed(2)} ms\n`,
        );
      }
    }
    return report.every((r) => r.serving === r.requests) ? ExitCode.OK : ExitCode.UNAVAILABLE;
  },
};
