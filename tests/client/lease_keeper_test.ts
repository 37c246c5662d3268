/**
 * The lease keeper against scripted LeaseKeepAlive streams (no server): all leases share one
 * stream; a broken stream is replaced and the request sent again; the server's TTL 0 loses
 * the lease with LeaseNotFoundError; a server that never answers loses it with
 * LeaseExpiredError once its TTL has passed; a non-retryable stream error loses the leases in
 * flight; close() rejects every holder.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { LeaseExpiredError, LeaseNotFoundError } from "../../src/client/mod.ts";
import { LeaseKeeper } from "../../src/client/lease_keeper.ts";
import type { NodeConnection } from "../../src/client/node_connection.ts";
import { PermissionDeniedError, UnavailableError } from "../../src/errors.ts";

/** A scripted stream: records what the keeper writes; the test answers or breaks it. */
class FakeStream extends EventEmitter {
  readonly written: number[] = [];
  cancelled = false;
  constructor(readonly addr: string) {
    super();
  }
  write(req: { ID: number }): boolean {
    this.written.push(req.ID);
    return true;
  }
  cancel(): void {
    this.cancelled = true;
  }
  answer(id: number, ttl: number): void {
    this.emit("data", { ID: id, TTL: ttl });
  }
  fail(code: grpc.status, details: string): void {
    this.emit(
      "error",
      Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() }),
    );
  }
}

/** A keeper whose streams are FakeStreams on nodes "a", "b", "c" in turn. */
function setup(answerTimeoutMs = 5000) {
  const streams: FakeStream[] = [];
  const failures: string[] = [];
  const addrs = ["a", "b", "c"];
  const keeper = new LeaseKeeper({
    connect: () => {
      const addr = addrs[streams.length % addrs.length];
      return {
        addr,
        etcdLease: {
          LeaseKeepAlive: () => {
            const s = new FakeStream(addr);
            streams.push(s);
            return s;
          },
        },
        track: (p: Promise<void>) => p,
        count: () => {},
        countFailure: () => {},
      } as unknown as NodeConnection;
    },
    onFailure: (addr) => failures.push(addr),
    markDown: () => {},
    backoffMs: () => 1,
    answerTimeoutMs,
  });
  return { keeper, streams, failures };
}

async function until(what: string, ready: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("lease keeper: leases share one stream; answers schedule the next renewal", async () => {
  const { keeper, streams } = setup();
  const stop = new AbortController();
  const renewed: number[] = [];
  const kept = [1, 2, 3].map((id) =>
    keeper.keep(id, stop.signal, { onRenew: () => renewed.push(id) })
  );
  await until("the three first requests", () => streams[0]?.written.length === 3);
  assertEquals(streams.length, 1);
  assertEquals(streams[0].written, [1, 2, 3]);
  for (const id of [1, 2, 3]) streams[0].answer(id, 1);
  assertEquals(renewed, [1, 2, 3]);
  // A TTL of 1 s: the next requests go out a third of a second later, on the same stream.
  await until("the second round", () => streams[0].written.length === 6);
  // A single renewal of a lease with a request in flight waits for that request's answer.
  const once = keeper.renewOnce(2);
  streams[0].answer(2, 1);
  assertEquals(await once, 1);
  assertEquals(keeper.stats().streamsOpened, 1);
  stop.abort();
  await Promise.all(kept);
  assertEquals(keeper.stats().leases, 0);
});

Deno.test("lease keeper: a broken stream is replaced and the request sent again", async () => {
  const { keeper, streams, failures } = setup();
  const stop = new AbortController();
  const kept = keeper.keep(7, stop.signal);
  await until("the first request", () => streams[0]?.written.length === 1);
  streams[0].fail(grpc.status.UNAVAILABLE, "Connection dropped");
  assert(streams[0].cancelled);
  assertEquals(failures, ["a"]);
  await until("the request on a new stream", () => streams[1]?.written.length === 1);
  assertEquals(streams[1].addr, "b");
  streams[1].answer(7, 30);
  // A late answer on the old stream is ignored.
  streams[0].answer(7, 0);
  assertEquals(keeper.stats(), {
    streamsOpened: 2,
    renewals: 1,
    streamFailures: 1,
    leases: 1,
    addr: "b",
  });
  stop.abort();
  await kept;
  assertEquals(keeper.stats().leases, 0);
  assert(streams[1].cancelled, "the stream is closed once no lease is kept");
});

Deno.test("lease keeper: TTL 0 from the server loses the lease", async () => {
  const { keeper, streams } = setup();
  const kept = keeper.keep(9, new AbortController().signal).then(() => undefined, (e) => e);
  await until("the request", () => streams[0]?.written.length === 1);
  streams[0].answer(9, 0);
  const error = await kept;
  assert(error instanceof LeaseNotFoundError && !(error instanceof LeaseExpiredError), error);
  assertEquals(error.leaseId, 9);
});

Deno.test("lease keeper: no answer within the TTL loses the lease as expired", async () => {
  const { keeper, streams } = setup(100);
  const kept = keeper.keep(5, new AbortController().signal, { ttlSeconds: 0.3 })
    .then(() => undefined, (e) => e);
  const error = await kept;
  assert(error instanceof LeaseExpiredError, String(error));
  // Unanswered requests replaced the silent stream more than once before the TTL ran out.
  assert(streams.length >= 2, `${streams.length} streams`);
});

Deno.test("lease keeper: a non-retryable stream error loses the leases in flight", async () => {
  const { keeper, streams } = setup();
  const kept = keeper.keep(4, new AbortController().signal).then(() => undefined, (e) => e);
  await until("the request", () => streams[0]?.written.length === 1);
  streams[0].fail(grpc.status.PERMISSION_DENIED, "root may not use lease 4");
  assert((await kept) instanceof PermissionDeniedError);
});

Deno.test("lease keeper: close() rejects every holder", async () => {
  const { keeper } = setup();
  const kept = keeper.keep(3, new AbortController().signal).then(() => undefined, (e) => e);
  keeper.close();
  assert((await kept) instanceof UnavailableError);
  assert((await keeper.renewOnce(3).then(() => undefined, (e) => e)) instanceof UnavailableError);
});
