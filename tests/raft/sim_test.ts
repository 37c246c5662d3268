/**
 * The deterministic simulator over a few hundred seeds, 3 and 5 nodes alternating: every
 * run must keep every safety property at every step and end live. A failure names the
 * command that replays it (`deno task sim --seed S --nodes N`).
 */
import { runSimulation, SimulationFailure } from "./sim/mod.ts";

const SEEDS = 200;
const BATCH = 50;

for (let from = 1; from <= SEEDS; from += BATCH) {
  Deno.test(`simulator: seeds ${from}..${from + BATCH - 1} keep Raft safe and live`, async () => {
    const failures: string[] = [];
    for (let seed = from; seed < from + BATCH; seed++) {
      try {
        await runSimulation({ seed, nodes: seed % 2 === 1 ? 3 : 5 });
      } catch (err) {
        if (!(err instanceof SimulationFailure)) throw err;
        failures.push(err.message);
      }
    }
    if (failures.length > 0) {
      throw new Error(`${failures.length} of ${BATCH} seeds failed:\n\n${failures.join("\n\n")}`);
    }
  });
}

/** A run's full outcome as text: its report, or its failure message. */
async function outcome(seed: number): Promise<string> {
  try {
    return JSON.stringify(await runSimulation({ seed, nodes: 5, steps: 300 }));
  } catch (err) {
    if (!(err instanceof SimulationFailure)) throw err;
    return err.message;
  }
}

Deno.test("simulator: a seed replays exactly", async () => {
  const a = await outcome(7);
  const b = await outcome(7);
  if (a !== b) throw new Error(`same seed, different runs:\n${a}\n${b}`);
  if (a === await outcome(8)) throw new Error("different seeds should differ");
});
