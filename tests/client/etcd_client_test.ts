/**
 * MokvClient's watch, leases and lock (over etcd's v3 services) against a real three-node TLS
 * cluster: a watch sees api.KV and etcd writes in order and resumes after the SIGKILL of its
 * node with no gap and no repeat; leases attach, expire and are revoked; lock holders never
 * overlap and get increasing fencing revisions.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { LeaseNotFoundError, MokvClient, type WatchEvent } from "../../src/client/mod.ts";
import { KeyNotFoundError } from "../../src/errors.ts";
import { eventually, startCluster, type TestCluster } from "../helpers/cluster.ts";

const td = new TextDecoder();

function tlsOf(cluster: TestCluster) {
  const c = cluster.certs;
  return { ca: c.ca, cert: c.rootClient.cert, key: c.rootClient.key };
}

async function waitFor(what: string, ready: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test({
  name: "etcd client: watch resumes across a SIGKILL, leases, lock",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const cluster = await startCluster({ size: 3 });
    const tls = tlsOf(cluster);
    const writer = await MokvClient.connect({ addrs: cluster.addrs, tls });
    const watcher = await MokvClient.connect({ addrs: cluster.addrs, tls });
    try {
      await t.step(
        "a watch sees every write once, in order, across its node's SIGKILL",
        async () => {
          const lease = await writer.leaseGrant(60);
          const events: WatchEvent[] = [];
          const stop = new AbortController();
          const start = (await writer.set("w/start", "0")).version + 1;
          let watchError: unknown;
          const done = (async () => {
            for await (
              const e of watcher.watch("w/", {
                prefix: true,
                startRevision: start,
                signal: stop.signal,
              })
            ) {
              events.push(e);
            }
          })().catch((err) => (watchError = err));
          const total = 30;
          let killed = "";
          for (let i = 0; i < total; i++) {
            const key = `w/${String(i).padStart(2, "0")}`;
            // Even writes through api.KV's Set, odd ones through etcd's Put (with a lease).
            if (i % 2 === 0) await writer.set(key, String(i));
            else await writer.set(key, String(i), { lease: lease.id });
            if (i === 12) {
              await waitFor("the watch sees the first writes", () => events.length >= 5, 10_000);
              const on = watcher.nodeStats().find((s) => s.reads > 0)!.addr;
              killed = cluster.nodes.find((n) => n.rpcAddr === on)!.name;
              await cluster.kill(killed, "SIGKILL");
            }
          }
          await waitFor(
            `${total} events (have ${events.length})`,
            () => events.length >= total,
            20_000,
          );
          stop.abort();
          await done;
          assertEquals(watchError, undefined);
          assertEquals(events.length, total);
          assertEquals(
            events.map((e) => `${e.type} ${e.key}=${td.decode(e.value)}`),
            Array.from({ length: total }, (_, i) => `put w/${String(i).padStart(2, "0")}=${i}`),
          );
          for (let i = 1; i < total; i++) assert(events[i].revision > events[i - 1].revision);
          assert(events.every((e) => e.version === 1 && e.createRevision === e.revision));
          console.log(`watch resumed after the SIGKILL of ${killed}; ${total} events, in order`);
          await writer.leaseRevoke(lease.id);
        },
      );

      await t.step("leases: attach, time to live, keep-alive, revoke, expiry", async () => {
        const a = await writer.leaseGrant(30);
        assert(a.ttlSeconds >= 30);
        await writer.set("lease/a", "1", { lease: a.id });
        const info = await writer.leaseTimeToLive(a.id, { keys: true });
        assertEquals([info.grantedTtlSeconds, info.keys], [a.ttlSeconds, ["lease/a"]]);
        assert((await writer.leaseKeepAlive(a.id)) > 0);
        await writer.leaseRevoke(a.id);
        await eventually(async () => {
          const gone = await writer.get("lease/a").then(
            () => false,
            (e) => e instanceof KeyNotFoundError,
          );
          if (!gone) throw new Error("lease/a still there after revoke");
        }, 5000);
        await writer.leaseTimeToLive(a.id).then(
          () => assert(false, "a revoked lease still has a TTL"),
          (e) => assert(e instanceof LeaseNotFoundError, String(e)),
        );

        const b = await writer.leaseGrant(2);
        await writer.set("lease/b", "1", { lease: b.id });
        const stop = new AbortController();
        const kept = writer.keepAlive(b.id, stop.signal);
        await new Promise((r) => setTimeout(r, 3000));
        assertEquals(td.decode((await writer.get("lease/b")).value), "1");
        stop.abort();
        await kept;
        await eventually(async () => {
          const gone = await writer.get("lease/b").then(
            () => false,
            (e) => e instanceof KeyNotFoundError,
          );
          if (!gone) throw new Error("lease/b still there after its TTL");
        }, 10_000);
      });

      await t.step("lock: three holders never overlap, revisions increase", async () => {
        const clients = await Promise.all(
          [0, 1, 2].map(() => MokvClient.connect({ addrs: cluster.addrs, tls })),
        );
        try {
          const log: string[] = [];
          const revisions: number[] = [];
          await Promise.all(clients.map(async (c, i) => {
            for (let round = 0; round < 2; round++) {
              const held = await c.lock("locks/one", { ttlSeconds: 10 });
              log.push(`start ${i}`);
              revisions.push(held.revision);
              await new Promise((r) => setTimeout(r, 100));
              log.push(`end ${i}`);
              await held.release();
            }
          }));
          assertEquals(log.length, 12);
          for (let k = 0; k < log.length; k += 2) {
            assertEquals(log[k + 1], log[k].replace("start", "end"), log.join(", "));
          }
          for (let k = 1; k < revisions.length; k++) assert(revisions[k] > revisions[k - 1]);
        } finally {
          for (const c of clients) c.close();
        }
      });
    } catch (err) {
      throw cluster.explain(err);
    } finally {
      writer.close();
      watcher.close();
      await cluster.stop();
    }
  },
});
