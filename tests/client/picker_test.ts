import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { Picker, SessionPool } from "../../src/client/mod.ts";

const servers = [
  { id: "a", addr: "a:1", isLeader: true, isVoter: true },
  { id: "b", addr: "b:1", isLeader: false, isVoter: true },
  { id: "c", addr: "c:1", isLeader: false, isVoter: true },
  { id: "d", addr: "d:1", isLeader: false, isVoter: false },
];

Deno.test("picker: seeds before discovery, then leader for writes and voters for reads", () => {
  const p = new Picker(["s:1", "s:2"], 100);
  assertEquals([p.pick("leader", 0), p.pick("leader", 0), p.pick("follower", 0)], [
    "s:1",
    "s:2",
    "s:1",
  ]);
  p.setServers(servers);
  assertEquals(p.leaderAddr, "a:1");
  assertEquals([p.pick("leader", 0), p.pick("leader", 0)], ["a:1", "a:1"]);
  const reads = Array.from({ length: 4 }, () => p.pick("follower", 0)).sort();
  assertEquals(reads, ["b:1", "b:1", "c:1", "c:1"]);
});

Deno.test("picker: a failed node is avoided for downMs, hints redirect the leader", () => {
  const p = new Picker([], 100);
  p.setServers(servers);
  p.markDown("a:1", 1000);
  assertEquals(p.leaderAddr, undefined);
  const writes = new Set(Array.from({ length: 6 }, () => p.pick("leader", 1050)));
  assertEquals([...writes].sort(), ["b:1", "c:1", "d:1"]);
  p.markDown("b:1", 1000);
  assertEquals(
    new Set(Array.from({ length: 4 }, () => p.pick("follower", 1050))),
    new Set(["c:1"]),
  );
  // After downMs both are usable again.
  assertEquals(
    new Set(Array.from({ length: 4 }, () => p.pick("follower", 1100))),
    new Set(["b:1", "c:1"]),
  );
  p.setLeader("c:1");
  assertEquals(p.pick("leader", 1100), "c:1");
  assertEquals(
    new Set(Array.from({ length: 4 }, () => p.pick("follower", 1100))),
    new Set(["b:1"]),
  );
  // Every node down: all of them are tried rather than none.
  for (const s of servers) p.markDown(s.addr, 2000);
  assertEquals(p.usable(2001).length, 4);
});

Deno.test("session pool: ids on demand up to the bound, seq per id, FIFO waiters", async () => {
  const pool = new SessionPool("c", 2);
  const a = await pool.acquire();
  const b = await pool.acquire();
  assertEquals([a, b], [{ clientId: "c/1", seq: 1 }, { clientId: "c/2", seq: 1 }]);
  const order: string[] = [];
  const third = pool.acquire().then((l) => {
    order.push("third");
    return l;
  });
  const fourth = pool.acquire().then((l) => {
    order.push("fourth");
    return l;
  });
  pool.release(b);
  assertEquals(await third, { clientId: "c/2", seq: 2 });
  pool.release(a);
  assertEquals(await fourth, { clientId: "c/1", seq: 2 });
  assertEquals(order, ["third", "fourth"]);
  assertEquals(pool.size, 2);
});
