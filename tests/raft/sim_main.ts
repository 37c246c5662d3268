/**
 * The simulator's command line (`deno task sim`):
 *
 *   deno task sim --seed S [--nodes 3|5] [--steps N] [--verbose]   replay one seed
 *   deno task sim --seeds N [--from S] [--steps N]                  run N seeds (3 and 5 nodes
 *                                                                   alternating) and count passes
 *
 * `--free-snapshot-bytes` runs the hosts with `freeSnapshotBytes`, as the node does.
 *
 * `--memory-log-entries N` runs the hosts with that `memoryLogEntries` (by default each seed
 * draws one, mostly 0 to 3, so appends are filled from the storage all the time).
 *
 * A seed fails on a keep-alive acknowledged for a lease whose expiry was already proposed and
 * then applied after it, and on an expiry appended in another term than its lessor decided it
 * in (see sim/lease_checker.ts); `--lenient-leases` only counts both (they were mokv bugs,
 * fixed: 37df086 and 17777b0).
 * Exits 1 if any seed fails, printing the command that replays it.
 */
import { parseArgs } from "node:util";
import { DEFAULT_STEPS, runSimulation, SimulationFailure } from "./sim/mod.ts";

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      seed: { type: "string" },
      seeds: { type: "string" },
      from: { type: "string", default: "1" },
      nodes: { type: "string" },
      steps: { type: "string", default: String(DEFAULT_STEPS) },
      verbose: { type: "boolean", default: false },
      "lenient-leases": { type: "boolean", default: false },
      "memory-log-entries": { type: "string" },
      "free-snapshot-bytes": { type: "boolean", default: false },
    },
  });
  const steps = Number(values.steps);
  const strictLeases = !values["lenient-leases"];
  const memoryFlag = values["memory-log-entries"];
  const memoryLogEntries = memoryFlag === undefined ? undefined : Number(memoryFlag);
  const memoryReplay = memoryFlag === undefined ? "" : ` --memory-log-entries ${memoryFlag}`;
  const freeSnapshotBytes = values["free-snapshot-bytes"];
  if (values.seed !== undefined) {
    const seed = Number(values.seed);
    const nodes = Number(values.nodes ?? 3);
    try {
      const report = await runSimulation({
        seed,
        nodes,
        steps,
        strictLeases,
        memoryLogEntries,
        freeSnapshotBytes,
        trace: values.verbose ? (line) => console.log(line) : undefined,
      });
      console.log(
        `seed ${seed} (${nodes} nodes): ok in ${report.virtualMs} virtual ms (liveness ${report.livenessMs}, lease drain ${report.leaseDrainMs}) ${
          JSON.stringify(report.stats)
        }`,
      );
      return 0;
    } catch (err) {
      if (!(err instanceof SimulationFailure)) throw err;
      console.error(err.message);
      return 1;
    }
  }
  const count = Number(values.seeds ?? 100);
  const from = Number(values.from);
  const started = performance.now();
  let passed = 0;
  const failures: string[] = [];
  for (let i = 0; i < count; i++) {
    const seed = from + i;
    const nodes = values.nodes !== undefined ? Number(values.nodes) : i % 2 === 0 ? 3 : 5;
    try {
      await runSimulation({
        seed,
        nodes,
        steps,
        strictLeases,
        memoryLogEntries,
        freeSnapshotBytes,
      });
      passed++;
    } catch (err) {
      if (!(err instanceof SimulationFailure)) throw err;
      failures.push(err.message);
      console.error(err.message.split("\n")[0]);
      console.error(`  replay: ${err.command}${memoryReplay}`);
    }
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`${passed}/${count} seeds passed in ${seconds} s`);
  return passed === count ? 0 : 1;
}

Deno.exit(await main(Deno.args));
