/**
 * Deterministic simulations of a SWIM cluster: virtual clock, seeded network with loss, delay
 * and partitions. A failure names its seed; `SIM_SEED=<n>` reruns only that seed.
 */
import { SeededRng, shuffle } from "../../src/rng.ts";
import { forSeeds, type LoggedEvent, seedList, SimCluster, type SimOptions } from "./_sim.ts";

const N = 10;
const NAMES = Array.from({ length: N }, (_, i) => `n${i}`);
const SEEDS_PER_SCENARIO = 30;
/** Default config: 10-tick probe period, suspicion 40 ticks at n = 10. */
const PERIOD = 10;

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Starts the 10 nodes in a random order over 60 ticks, all joining through n0's address. */
function startCluster(options: SimOptions): SimCluster {
  const sim = new SimCluster(options);
  const rng = new SeededRng(options.seed ^ 0x5eed);
  const order = shuffle(rng, [...NAMES]);
  const startAt = new Map(order.map((name) => [name, rng.int(60)]));
  for (let t = 0; t <= 60; t++) {
    for (const name of order) if (startAt.get(name) === t) sim.start(name, ["n0"]);
    sim.tick();
  }
  return sim;
}

function converge(sim: SimCluster, boundTicks: number): number {
  const took = sim.runUntil(() => sim.allSee(NAMES, "alive"), boundTicks);
  assert(took !== undefined, `cluster did not converge within ${boundTicks} ticks`);
  return took;
}

function failsAbout(log: readonly LoggedEvent[], names: readonly string[]): LoggedEvent[] {
  return log.filter((e) => e.event.type === "fail" && names.includes(e.event.member.name));
}

Deno.test("sim: 10 members joining through one seed address all see all, any start order", () => {
  let worst = 0;
  forSeeds(seedList(1000, SEEDS_PER_SCENARIO), (seed) => {
    const sim = startCluster({ seed, minDelayTicks: 1, maxDelayTicks: 2 });
    // After the last start: join retries back off to 40 ticks, then a few gossip rounds.
    worst = Math.max(worst, converge(sim, 12 * PERIOD));
    assert(failsAbout(sim.log, NAMES).length === 0, "a live member was declared failed");
    // A seed sends its state only after the joiner answered its hello ping: one round trip.
    sim.runUntil(() => sim.running().every((n) => n.swim.joined), PERIOD);
    for (const n of sim.running()) assert(n.swim.joined, `${n.name} never finished joining`);
  });
  console.log(`  worst convergence: ${worst} ticks after the last start`);
});

Deno.test("sim: a killed member is declared failed by all within a bounded time", () => {
  let worst = 0;
  forSeeds(seedList(2000, SEEDS_PER_SCENARIO), (seed) => {
    const sim = startCluster({ seed, minDelayTicks: 1, maxDelayTicks: 2 });
    converge(sim, 12 * PERIOD);
    const victim = NAMES[new SeededRng(seed).int(N)];
    sim.kill(victim);
    const killedAt = sim.now;
    // Every live node probes every other once per round of N-1 periods; then suspicion
    // (4 * log10(10) periods) and dissemination.
    const bound = (N + 1) * PERIOD + 4 * PERIOD + 3 * PERIOD;
    const took = sim.runUntil(() => sim.allSee([victim], "failed"), bound);
    assert(took !== undefined, `${victim} not failed everywhere within ${bound} ticks`);
    worst = Math.max(worst, took);
    const others = NAMES.filter((n) => n !== victim);
    assert(failsAbout(sim.log, others).length === 0, "a live member was declared failed");
    assert(
      sim.log.every((e) =>
        e.event.member.name !== victim || e.tick <= killedAt ||
        e.event.type === "suspect" || e.event.type === "fail"
      ),
      "unexpected event about the victim",
    );
  });
  console.log(`  worst detection: ${worst} ticks`);
});

Deno.test("sim: no live member is declared failed under 10% packet loss", () => {
  let suspicions = 0;
  forSeeds(seedList(3000, SEEDS_PER_SCENARIO), (seed) => {
    const sim = startCluster({ seed, lossRate: 0.1, minDelayTicks: 1, maxDelayTicks: 3 });
    converge(sim, 20 * PERIOD);
    sim.run(3000); // 5 minutes of 100 ms ticks.
    const fails = failsAbout(sim.log, NAMES);
    assert(
      fails.length === 0,
      `false failures: ${fails.map((f) => `${f.observer}->${f.event.member.name}@${f.tick}`)}`,
    );
    assert(
      sim.allSee(NAMES, "alive") ||
        sim.runUntil(() => sim.allSee(NAMES, "alive"), 100) !== undefined,
      "the cluster did not settle back to all alive",
    );
    suspicions += sim.log.filter((e) => e.event.type === "suspect").length;
  });
  console.log(`  suspicions raised and refuted: ${suspicions}`);
});

Deno.test("sim: a partitioned group is declared failed and comes back alive after the heal", () => {
  forSeeds(seedList(4000, SEEDS_PER_SCENARIO), (seed) => {
    const sim = startCluster({
      seed,
      minDelayTicks: 1,
      maxDelayTicks: 2,
      config: { reconnectIntervalTicks: 100, pushPullIntervalTicks: 150 },
    });
    converge(sim, 12 * PERIOD);
    const names = shuffle(new SeededRng(seed), [...NAMES]);
    const minority = names.slice(0, 3);
    const majority = names.slice(3);
    sim.partition([minority, majority]);
    const cutBound = 2 * N * PERIOD + 8 * PERIOD;
    const cut = sim.runUntil(
      () =>
        sim.allSee(minority, "failed", majority.map((n) => sim.node(n))) &&
        sim.allSee(majority, "failed", minority.map((n) => sim.node(n))),
      cutBound,
    );
    assert(cut !== undefined, `the two sides did not declare each other failed in ${cutBound}`);
    assert(
      failsAbout(sim.log, majority).every((e) => minority.includes(e.observer)) &&
        failsAbout(sim.log, minority).every((e) => majority.includes(e.observer)),
      "a member was declared failed by its own side",
    );
    sim.run(200);
    sim.heal();
    const healBound = 4 * 100 + 10 * PERIOD;
    const healed = sim.runUntil(() => sim.allSee(NAMES, "alive"), healBound);
    assert(healed !== undefined, `not all alive again within ${healBound} ticks of the heal`);
  });
});

Deno.test("sim: a graceful leave is seen as left by all, never as failed", () => {
  forSeeds(seedList(5000, SEEDS_PER_SCENARIO), (seed) => {
    const sim = startCluster({ seed, lossRate: 0.05, minDelayTicks: 1, maxDelayTicks: 2 });
    converge(sim, 20 * PERIOD);
    const leaver = NAMES[new SeededRng(seed).int(N)];
    sim.node(leaver).swim.leave();
    sim.run(2 * PERIOD); // The host keeps ticking briefly while the leave spreads...
    sim.kill(leaver); // ...then stops.
    const others = sim.running();
    const took = sim.runUntil(() => sim.allSee([leaver], "left", others), 5 * PERIOD);
    assert(took !== undefined, `${leaver} not seen as left by all`);
    sim.run(50 * PERIOD);
    assert(sim.allSee([leaver], "left", others), `${leaver} did not stay left`);
    assert(failsAbout(sim.log, NAMES).length === 0, "a member was declared failed");
  });
});

Deno.test("sim: tag updates converge", () => {
  forSeeds(seedList(6000, SEEDS_PER_SCENARIO), (seed) => {
    const sim = startCluster({ seed, lossRate: 0.05, minDelayTicks: 1, maxDelayTicks: 3 });
    converge(sim, 20 * PERIOD);
    const rng = new SeededRng(seed);
    const changed = shuffle(rng, [...NAMES]).slice(0, 3);
    for (const name of changed) {
      sim.node(name).swim.setTags({ id: name, rpc_addr: `127.0.0.1:${9000 + rng.int(1000)}` });
    }
    const want = new Map(changed.map((n) => [n, sim.node(n).swim.member(n)!.tags["rpc_addr"]]));
    const took = sim.runUntil(
      () =>
        sim.running().every((o) =>
          changed.every((n) => o.swim.member(n)?.tags["rpc_addr"] === want.get(n))
        ),
      10 * PERIOD,
    );
    assert(took !== undefined, "tags did not converge");
    const updates = sim.log.filter((e) => e.event.type === "update");
    for (const n of changed) {
      assert(
        updates.filter((e) => e.event.member.name === n).length === N,
        `every node (itself included) should report one update of ${n}`,
      );
    }
  });
});

Deno.test("sim: a failed member restarted with incarnation 0 is alive again everywhere", () => {
  forSeeds(seedList(7000, SEEDS_PER_SCENARIO), (seed) => {
    const sim = startCluster({ seed, minDelayTicks: 1, maxDelayTicks: 2 });
    converge(sim, 12 * PERIOD);
    const victim = NAMES[1 + new SeededRng(seed).int(N - 1)];
    const before = sim.node("n0").swim.member(victim)!.incarnation;
    sim.kill(victim);
    assert(sim.runUntil(() => sim.allSee([victim], "failed"), 200) !== undefined, "not failed");
    sim.restart(victim);
    const took = sim.runUntil(() => sim.allSee(NAMES, "alive"), 10 * PERIOD);
    assert(took !== undefined, `${victim} did not come back alive`);
    const after = sim.node("n0").swim.member(victim)!.incarnation;
    assert(after > before, `incarnation should grow past ${before}, got ${after}`);
  });
});

Deno.test("sim: one seed reproduces the exact same run", () => {
  const run = (seed: number): string => {
    const sim = startCluster({ seed, lossRate: 0.1, minDelayTicks: 1, maxDelayTicks: 3 });
    sim.run(300);
    sim.kill("n3");
    sim.run(300);
    return JSON.stringify(sim.log) + `|${sim.delivered}|${sim.dropped}`;
  };
  const a = run(42);
  const b = run(42);
  const c = run(43);
  assert(a === b, "the same seed produced two different runs");
  assert(a !== c, "different seeds produced the same run");
});
