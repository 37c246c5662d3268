/**
 * List of a large store to a slow client keeps the node's memory flat: the server reads the
 * store only as fast as the client takes entries (back-pressure through HTTP/2 flow control
 * and 'drain'), never buffering the result. Measured as entries taken from the store minus
 * entries the client received (RSS of one process holding client and server mostly shows the
 * client's garbage); bench/list_memory.ts checks a node's RSS with 1 GiB.
 */
import { ok as assert, strictEqual as assertEquals } from "node:assert/strict";
import type { GetResponse } from "../../src/api/mod.ts";
import type { KvReader } from "../../src/server/mod.ts";
import { LocalBackend } from "../../src/server/mod.ts";
import { startHarness } from "./_helpers.ts";

const VALUE_BYTES = 4096;
const KEYS = 16_384; // 64 MiB of values
/** What may sit between the store and the client: HTTP/2 windows, socket buffers, one batch. */
const MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;

/** A backend whose reader counts the entries List has taken from the store. */
class CountingBackend extends LocalBackend {
  pulled = 0;
  override get reader(): KvReader {
    const inner = this.stateMachine;
    const count = () => this.pulled++;
    return {
      get: (key) => inner.get(key),
      *list(opts) {
        for (const e of inner.list(opts)) {
          count();
          yield e;
        }
      },
    };
  }
}

Deno.test("List of 64 MiB to a slow client: the server stays within a bounded distance", async () => {
  const backend = new CountingBackend({ nodeId: "n1" });
  const value = new Uint8Array(VALUE_BYTES).fill(7);
  for (let i = 0; i < KEYS; i++) {
    await backend.apply({
      type: "set",
      key: `k/${String(i).padStart(6, "0")}`,
      value,
      timeMs: 0,
      clockSource: "t",
      maxValueBytes: 1 << 20,
      quotaBytes: 2 ** 31,
    });
  }
  const h = await startHarness({ backend });
  try {
    let received = 0;
    let maxInFlightBytes = 0;
    const stream = h.kv.List({});
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (item: GetResponse) => {
        received++;
        assertEquals(item.value.length, VALUE_BYTES);
        // The slow part: every 512 entries (2 MiB) the client stops reading for 25 ms.
        if (received % 512 === 0) {
          stream.pause();
          setTimeout(() => {
            const inFlight = (backend.pulled - received) * (VALUE_BYTES + 16);
            maxInFlightBytes = Math.max(maxInFlightBytes, inFlight);
            stream.resume();
          }, 25);
        }
      });
      stream.on("error", reject);
      stream.on("end", resolve);
    });
    assertEquals(received, KEYS);
    console.log(
      `most in flight: ${(maxInFlightBytes / 2 ** 20).toFixed(1)} MiB of ${
        (KEYS * VALUE_BYTES / 2 ** 20).toFixed(0)
      } MiB`,
    );
    assert(maxInFlightBytes > 0);
    assert(
      maxInFlightBytes < MAX_IN_FLIGHT_BYTES,
      `the server ran ${maxInFlightBytes} bytes ahead of the client`,
    );
  } finally {
    await h.close();
  }
});
