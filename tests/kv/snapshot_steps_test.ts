import { assert as assertTrue, assertEquals } from "../helpers/assert.ts";
import { encodeCommand, KvStateMachine } from "../../src/kv/mod.ts";
import { SNAPSHOT_STEP_KEYS } from "../../src/kv/state_machine.ts";

const te = new TextEncoder();

Deno.test("kv: a snapshot built in steps is the state at its start, whatever is applied meanwhile", () => {
  const sm = new KvStateMachine();
  let index = 0;
  const set = (key: string, value: string, clientId?: string) =>
    sm.apply(
      ++index,
      encodeCommand({
        type: "set",
        key,
        value: te.encode(value),
        timeMs: index,
        clockSource: "n1",
        ...(clientId ? { clientId, seq: index } : {}),
      }),
    );
  const keys = 2 * SNAPSHOT_STEP_KEYS + 123;
  for (let i = 0; i < keys; i++) set(`k${String(i).padStart(8, "0")}`, `v${i}`);
  set("é-key", "ünïcode", "client-1");
  const expected = sm.snapshot();
  const steps = sm.snapshotSteps();
  let image = steps.step();
  let count = 1;
  // Overwrites, deletes, new keys and a new session between the steps.
  for (let i = 0; i < 500; i++) set(`k${String(i * 7).padStart(8, "0")}`, `new${i}`, "client-2");
  for (let i = 0; i < 100; i++) {
    sm.apply(
      ++index,
      encodeCommand({
        type: "delete",
        key: `k${String(i * 13).padStart(8, "0")}`,
        timeMs: index,
        clockSource: "n1",
      }),
    );
  }
  set("zz-new", "x");
  while (!image) {
    image = steps.step();
    count++;
    assertTrue(count < 100, "the steps end");
  }
  assertTrue(count >= 4, `a state of ${keys} keys takes several steps (${count})`);
  assertEquals(image, expected);
  // And the state itself moved on: a snapshot now differs and restores to the new state.
  const later = new KvStateMachine();
  later.restore(sm.snapshot());
  assertEquals(later.appliedIndex, index);
  const earlier = new KvStateMachine();
  earlier.restore(image);
  assertEquals(earlier.appliedIndex, keys + 1);
  assertEquals(earlier.snapshot(), expected);
});
