/**
 * etcd's LeaseKeepAlive stream through a leader change (issue 12): a keep-alive that a
 * follower could not get to a leader (its forward's connection to the dead leader lost) is
 * tried again rather than the end of the stream, and a keep-alive that fails for good ends the
 * stream with its status, so the client opens a new one: before, the stream was dropped
 * without a status and the client's keep-alives went unread until its lease expired.
 */
import * as grpc from "@grpc/grpc-js";
import { assert, assertEquals } from "../helpers/assert.ts";
import { etcdServiceDefinitions } from "../../src/api/mod.ts";
import { InvalidArgumentError } from "../../src/errors.ts";
import { type EtcdBackend, localEtcdBackend } from "../../src/etcd/mod.ts";
import type { Command } from "../../src/kv/mod.ts";
import { TransportError } from "../../src/replication/transport.ts";
import { LocalBackend } from "../../src/server/mod.ts";
import { startHarness } from "../server/_helpers.ts";

type LeaseClient = grpc.Client & {
  LeaseGrant(
    req: unknown,
    cb: (err: grpc.ServiceError | null, res: { ID: string; TTL: string }) => void,
  ): void;
  LeaseKeepAlive(): grpc.ClientDuplexStream<{ ID: number }, { ID: string; TTL: string }>;
};

/** A node whose keep-alives fail with `fail(n)` (n: the attempt, from 1) until it returns undefined. */
function flakyKeepAlives(local: LocalBackend, fail: (n: number) => Error | undefined) {
  const base = localEtcdBackend(local);
  let attempts = 0;
  const backend: EtcdBackend = {
    ...base,
    apply: (cmd: Command) => {
      if (cmd.type !== "leaseKeepAlive") return base.apply(cmd);
      const err = fail(++attempts);
      return err ? Promise.reject(err) : base.apply(cmd);
    },
  };
  return { backend, attempts: () => attempts };
}

async function withLeaseService(
  fail: (n: number) => Error | undefined,
  fn: (lease: LeaseClient, attempts: () => number) => Promise<void>,
): Promise<void> {
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const flaky = flakyKeepAlives(local, fail);
  const h = await startHarness({ backend: local, etcd: flaky.backend });
  const Ctor = grpc.makeGenericClientConstructor(etcdServiceDefinitions.Lease, "Lease");
  const lease = new Ctor(h.address, grpc.credentials.createInsecure()) as unknown as LeaseClient;
  try {
    await fn(lease, flaky.attempts);
  } finally {
    lease.close();
    await h.close();
  }
}

function grant(lease: LeaseClient, ttl: number): Promise<number> {
  return new Promise((resolve, reject) =>
    lease.LeaseGrant({ TTL: ttl }, (err, res) => err ? reject(err) : resolve(Number(res.ID)))
  );
}

/** The first thing the stream says after one keep-alive of `id`: an answer or its status. */
function firstWord(lease: LeaseClient, id: number): Promise<string> {
  const s = lease.LeaseKeepAlive();
  return new Promise<string>((resolve) => {
    // Bounds the wait for a stream that neither answers nor ends (the bug this guards).
    const timer = setTimeout(() => resolve("nothing: the stream hangs"), 15_000);
    const done = (word: string) => {
      clearTimeout(timer);
      s.cancel();
      resolve(word);
    };
    s.on("data", (r) => done(`ttl ${r.TTL}`));
    s.on("error", (e: grpc.ServiceError) => {
      if (e.code !== grpc.status.CANCELLED) done(`status ${grpc.status[e.code]}`);
    });
    s.write({ ID: id });
  });
}

Deno.test("etcd lease keep-alive: a forward to a dead leader is tried again, the stream answers", async () => {
  const lost = () => new TransportError("connection to 127.0.0.1:1 lost");
  await withLeaseService((n) => n <= 3 ? lost() : undefined, async (lease, attempts) => {
    const id = await grant(lease, 5);
    assertEquals(await firstWord(lease, id), "ttl 5", "answered with the lease's TTL");
    assertEquals(attempts(), 4, "three lost forwards, then through");
  });
});

Deno.test("etcd lease keep-alive: one that fails for good ends the stream with its status", async () => {
  const refused = () => new InvalidArgumentError("refused for the test");
  await withLeaseService(refused, async (lease, attempts) => {
    const id = await grant(lease, 5);
    assertEquals(await firstWord(lease, id), "status INVALID_ARGUMENT", "the client sees why");
    assertEquals(attempts(), 1, "a refusal is not tried again");
  });
});

Deno.test("etcd lease keep-alive: keep-alives on one stream are pipelined, answered in order", async () => {
  // Each keep-alive of lease `slow` takes 150 ms; one of `fast` right behind it must not
  // wait for it to start (it did, when each request waited for the previous one), yet the
  // answers come back in request order.
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const base = localEtcdBackend(local);
  let slow = -1;
  const started: number[] = [];
  const events: string[] = [];
  const backend: EtcdBackend = {
    ...base,
    apply: async (cmd: Command) => {
      if (cmd.type === "leaseKeepAlive") {
        started.push(cmd.leaseId!);
        events.push(`start ${cmd.leaseId === slow ? "slow" : "fast"}`);
        if (cmd.leaseId === slow) await new Promise((r) => setTimeout(r, 150));
        events.push(`end ${cmd.leaseId === slow ? "slow" : "fast"}`);
      }
      return base.apply(cmd);
    },
  };
  const h = await startHarness({ backend: local, etcd: backend });
  const Ctor = grpc.makeGenericClientConstructor(etcdServiceDefinitions.Lease, "Lease");
  const lease = new Ctor(h.address, grpc.credentials.createInsecure()) as unknown as LeaseClient;
  try {
    slow = await grant(lease, 30);
    const fast = await grant(lease, 10);
    const s = lease.LeaseKeepAlive();
    const sent: number[] = [];
    for (let i = 0; i < 20; i++) sent.push(i % 2 === 0 ? slow : fast);
    const answers = await new Promise<{ ID: number; TTL: number }[]>((resolve, reject) => {
      const got: { ID: number; TTL: number }[] = [];
      const timer = setTimeout(() => reject(new Error(`only ${got.length} answers`)), 10_000);
      s.on("data", (r) => {
        got.push({ ID: Number(r.ID), TTL: Number(r.TTL) });
        if (got.length === sent.length) {
          clearTimeout(timer);
          resolve(got);
        }
      });
      s.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      for (const id of sent) s.write({ ID: id });
    });
    s.cancel();
    assertEquals(answers.map((a) => a.ID), sent, "one answer per request, in request order");
    assertEquals(answers.map((a) => a.TTL), sent.map((id) => id === slow ? 30 : 10));
    assertEquals(started.length, sent.length, "each keep-alive applied once");
    assert(
      events.indexOf("start fast") < events.indexOf("end slow"),
      `the fast lease's keep-alive began before the slow one ended: ${events.join(", ")}`,
    );
  } finally {
    lease.close();
    await h.close();
  }
});
