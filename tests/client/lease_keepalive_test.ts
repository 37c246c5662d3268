/**
 * MokvClient's lease keeper against a real three-node TLS cluster: leases kept alive outlive
 * several TTLs over one LeaseKeepAlive stream (single renewals share it too); after the
 * SIGKILL of the node that stream is on, the client opens another on a live node and the
 * lease survives; a lock whose lease is revoked by another client (etcd makes that the same
 * as expiry) aborts the handle's `lost` signal with a LeaseNotFoundError.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { LeaseNotFoundError, MokvClient } from "../../src/client/mod.ts";
import { KeyNotFoundError } from "../../src/errors.ts";
import { eventually, startCluster, type TestCluster } from "../helpers/cluster.ts";

const td = new TextDecoder();

function tlsOf(cluster: TestCluster) {
  const c = cluster.certs;
  return { ca: c.ca, cert: c.rootClient.cert, key: c.rootClient.key };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves when `signal` aborts; rejects after `timeoutMs`. */
function aborted(signal: AbortSignal, what: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)),
      timeoutMs,
    );
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    if (signal.aborted) done();
    else signal.addEventListener("abort", done, { once: true });
  });
}

Deno.test({
  name: "lease keeper: one stream over many TTLs, survives its node's SIGKILL; a lost lock",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const cluster = await startCluster({ size: 3 });
    const tls = tlsOf(cluster);
    const client = await MokvClient.connect({ addrs: cluster.addrs, tls });
    const other = await MokvClient.connect({ addrs: cluster.addrs, tls });
    try {
      // The 2 s lease is let go before the SIGKILL: a leader election may outlast its TTL.
      const stopShort = new AbortController();
      const stopLong = new AbortController();
      let keptError: unknown;
      let longId = 0;
      const keepers: Promise<void>[] = [];

      await t.step("two leases kept alive over one stream for more than two TTLs", async () => {
        const short = await client.leaseGrant(2);
        const long = await client.leaseGrant(5);
        longId = long.id;
        await client.set("keep/short", "s", { lease: short.id });
        await client.set("keep/long", "l", { lease: long.id });
        const renewed: number[] = [];
        for (const [lease, stop] of [[short, stopShort], [long, stopLong]] as const) {
          keepers.push(
            client.keepAlive(lease.id, stop.signal, {
              ttlSeconds: lease.ttlSeconds,
              renewedAtMs: lease.grantedAtMs,
              onRenew: (ttl) => renewed.push(ttl),
            }).catch((e) => (keptError = e)),
          );
        }
        await sleep(4500); // 2.25 TTLs of the short lease
        assertEquals(keptError, undefined);
        assertEquals(td.decode((await client.get("keep/short")).value), "s");
        assertEquals(td.decode((await client.get("keep/long")).value), "l");
        // A single renewal goes over the same stream.
        assertEquals(await client.leaseKeepAlive(short.id), 2);
        const stats = client.keepAliveStats();
        assertEquals(stats.streamsOpened, 1, JSON.stringify(stats));
        assertEquals(stats.streamFailures, 0, JSON.stringify(stats));
        assertEquals(stats.leases, 2);
        // 4.5 s at one renewal per 2/3 s and per 5/3 s: at least 3 + 1 answered.
        assert(renewed.length >= 4, `renewals: ${renewed.join(", ")}`);
        assert(renewed.every((ttl) => ttl === 2 || ttl === 5), renewed.join(", "));
        console.log(
          `4.5 s: ${stats.renewals} renewals of 2 leases over ${stats.streamsOpened} stream`,
        );
      });

      await t.step("after the SIGKILL of the stream's node the lease lives on", async () => {
        stopShort.abort();
        const before = client.keepAliveStats();
        const node = cluster.nodes.find((n) => n.rpcAddr === before.addr);
        assert(node, `the stream is on one of the nodes (${before.addr})`);
        const killedAt = Date.now();
        await cluster.kill(node.name, "SIGKILL");
        const renewalsAtKill = client.keepAliveStats().renewals; // none come from a dead node
        // The 5 s lease outlives one TTL past the kill (a new election included), renewed at
        // least twice over a stream on a live node: a renewal the new leader answered.
        let after = client.keepAliveStats();
        await eventually(() => {
          after = client.keepAliveStats();
          const moved = after.addr !== undefined && after.addr !== node.rpcAddr &&
            after.streamsOpened >= 2;
          if (keptError === undefined && (!moved || after.renewals < renewalsAtKill + 2)) {
            return Promise.reject(
              new Error(`no two renewals on a live node: ${JSON.stringify(after)}`),
            );
          }
          return Promise.resolve(); // a lost lease fails below, at once
        }, 20_000);
        await sleep(Math.max(0, killedAt + 5500 - Date.now()));
        assertEquals(keptError, undefined);
        after = client.keepAliveStats();
        assert(after.addr !== undefined && after.addr !== node.rpcAddr, JSON.stringify(after));
        assert(after.streamsOpened >= 2, JSON.stringify(after));
        assert(after.renewals >= renewalsAtKill + 2, JSON.stringify(after));
        assertEquals(td.decode((await other.get("keep/long")).value), "l");
        assert((await other.leaseTimeToLive(longId)).ttlSeconds > 0);
        console.log(
          `after the SIGKILL of ${node.name}: stream on ${after.addr}, ${after.streamsOpened} ` +
            `streams opened, ${after.streamFailures} failures, ${after.renewals} renewals`,
        );
      });

      stopLong.abort();
      await Promise.all(keepers);

      await t.step("a lock whose lease is revoked elsewhere aborts `lost`", async () => {
        const held = await client.lock("keep/lock", { ttlSeconds: 3 });
        assert(!held.lost.aborted);
        await other.leaseRevoke(held.leaseId);
        await aborted(held.lost, "the lock's lost signal", 10_000);
        assert(held.lost.reason instanceof LeaseNotFoundError, String(held.lost.reason));
        assertEquals(held.lost.reason.leaseId, held.leaseId);
        await eventually(async () => {
          const gone = await client.get(held.key).then(
            () => false,
            (e) => e instanceof KeyNotFoundError,
          );
          if (!gone) throw new Error(`${held.key} still there after the revoke`);
        }, 5000);
        await held.release();
        // The lock is free again: the next lock() gets it at once, with a larger revision.
        const next = await other.lock("keep/lock", { ttlSeconds: 3 });
        assert(next.revision > held.revision);
        await next.release();
      });
    } catch (err) {
      throw cluster.explain(err);
    } finally {
      client.close();
      other.close();
      await cluster.stop();
    }
  },
});
