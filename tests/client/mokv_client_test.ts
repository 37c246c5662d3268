import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import {
  InvalidArgumentError,
  KeyNotFoundError,
  PermissionDeniedError,
  UnavailableError,
} from "../../src/errors.ts";
import { type KvEntry, MokvClient } from "../../src/client/mod.ts";
import { Authorizer } from "../../src/server/auth.ts";
import { makeTestCerts } from "../helpers/certs.ts";
import { startDropProxy } from "./_drop_proxy.ts";
import { startFakeCluster } from "./_fake_cluster.ts";

const td = new TextDecoder();
const text = (e: { value: Uint8Array }) => td.decode(e.value);

async function collect(it: AsyncIterable<KvEntry>): Promise<string[]> {
  const out: string[] = [];
  for await (const e of it) out.push(`${e.key}=${text(e)}`);
  return out;
}

Deno.test("every typed method round-trips against one node", async () => {
  const cluster = await startFakeCluster(1);
  const client = await MokvClient.connect({ addrs: cluster.addrs, insecure: true });
  try {
    assertEquals(await client.set("a", "1"), { version: 1 });
    const got = await client.get("a");
    assertEquals([got.key, text(got), got.version], ["a", "1", 1]);
    assertEquals(text(await client.get("a", { consistency: "stale" })), "1");
    assertEquals(await client.append("a", new TextEncoder().encode("23")), {
      version: 2,
      length: 3,
    });
    const casFail = await client.compareAndSet("a", "x", { kind: "version", version: 1 });
    assertEquals([casFail.ok, casFail.version, text({ value: casFail.currentValue })], [
      false,
      2,
      "123",
    ]);
    const casOk = await client.compareAndSet("a", "x", { kind: "value", value: "123" });
    assertEquals([casOk.ok, casOk.version], [true, 4]);
    const created = await client.compareAndSet("b", "new", { kind: "version", version: 0 });
    assertEquals(created.ok, true);
    assertEquals(await client.delete("a"), { version: 6, existed: true });
    assertEquals(await client.delete("a"), { version: 0, existed: false });
    await rejects(client.get("a"), (e) => e instanceof KeyNotFoundError && e.key === "a");
    await rejects(client.set("", "x"), InvalidArgumentError);

    assertEquals(await client.servers(), [{
      id: "n1",
      rpcAddr: cluster.addrs[0],
      isLeader: true,
      isVoter: true,
    }]);
    assertEquals((await client.members()).map((m) => [m.name, m.state]), [["n1", "alive"]]);
    await rejects(client.removeServer("n1"), InvalidArgumentError);
    const image = await client.snapshot();
    assert(image.length > 0);
    assertEquals(await client.health(), "SERVING");
    assertEquals(await client.health(cluster.addrs[0], "api.KV"), "SERVING");
    await client.leave(cluster.addrs[0]);
    assertEquals(await client.health(), "NOT_SERVING");
  } finally {
    client.close();
    cluster.close();
  }
});

Deno.test("list iterates with prefix, start and limit, and stops early", async () => {
  const cluster = await startFakeCluster(1);
  const client = await MokvClient.connect({ addrs: cluster.addrs, insecure: true });
  try {
    for (const k of ["a/1", "a/2", "a/3", "b/1", "c"]) await client.set(k, k.toUpperCase());
    assertEquals(await collect(client.list()), ["a/1=A/1", "a/2=A/2", "a/3=A/3", "b/1=B/1", "c=C"]);
    assertEquals(await collect(client.list({ prefix: "a/" })), ["a/1=A/1", "a/2=A/2", "a/3=A/3"]);
    assertEquals(await collect(client.list({ prefix: "a/", start: "a/2" })), [
      "a/2=A/2",
      "a/3=A/3",
    ]);
    assertEquals(await collect(client.list({ limit: 2, consistency: "stale" })), [
      "a/1=A/1",
      "a/2=A/2",
    ]);
    const seen: string[] = [];
    for await (const e of client.list()) {
      seen.push(e.key);
      if (seen.length === 2) break;
    }
    assertEquals(seen, ["a/1", "a/2"]);
    // The connection is still usable after a cancelled stream.
    assertEquals(text(await client.get("c")), "C");
  } finally {
    client.close();
    cluster.close();
  }
});

Deno.test("a list broken by UNAVAILABLE is retried from the start", async () => {
  const cluster = await startFakeCluster(1);
  const client = await MokvClient.connect({ addrs: cluster.addrs, insecure: true });
  try {
    for (const k of ["k1", "k2"]) await client.set(k, k);
    cluster.nodes[0].backend.failNext = 2;
    assertEquals(await collect(client.list()), ["k1=k1", "k2=k2"]);
    assertEquals(client.nodeStats()[0].failures, 2);
  } finally {
    client.close();
    cluster.close();
  }
});

Deno.test("UNAVAILABLE is retried up to maxRetries, then surfaces", async () => {
  const cluster = await startFakeCluster(1);
  const client = await MokvClient.connect({
    addrs: cluster.addrs,
    insecure: true,
    maxRetries: 4,
    baseBackoffMs: 1,
  });
  try {
    const backend = cluster.nodes[0].backend;
    backend.failNext = 4;
    assertEquals(await client.set("k", "v"), { version: 1 });
    backend.failNext = 3;
    assertEquals(text(await client.get("k")), "v");
    backend.failNext = 5;
    await rejects(client.set("k", "w"), UnavailableError);
    assertEquals(backend.failNext, 0);
    assertEquals(client.nodeStats()[0].failures, 4 + 3 + 4);
    assertEquals(text(await client.get("k")), "v");
  } finally {
    client.close();
    cluster.close();
  }
});

Deno.test("a write whose answer is lost is retried and applied exactly once", async () => {
  const cluster = await startFakeCluster(1);
  const backend = cluster.nodes[0].backend;
  const client = await MokvClient.connect({ addrs: cluster.addrs, insecure: true });
  const atLeastOnce = await MokvClient.connect({
    addrs: cluster.addrs,
    insecure: true,
    exactlyOnce: false,
  });
  try {
    backend.loseAnswers = 2;
    const result = await client.append("log", "x");
    assertEquals(result.length, 1);
    assertEquals(text(cluster.stateMachine.get("log")!), "x");
    // Three attempts reached the state machine with one session and seq; one took effect.
    const sessions = backend.applied.map((c) => `${c.session?.clientId}#${c.session?.seq}`);
    assertEquals(sessions, [1, 2, 3].map(() => `${client.clientId}/1#1`));
    // Without sessions the same loss duplicates the append: why sessions exist.
    backend.loseAnswers = 1;
    await atLeastOnce.append("log2", "x");
    assertEquals(text(cluster.stateMachine.get("log2")!), "xx");
  } finally {
    client.close();
    atLeastOnce.close();
    cluster.close();
  }
});

Deno.test("concurrent writes borrow distinct session ids from a bounded pool", async () => {
  const cluster = await startFakeCluster(1);
  const client = await MokvClient.connect({
    addrs: cluster.addrs,
    insecure: true,
    clientId: "bench",
    maxSessions: 3,
  });
  try {
    await Promise.all(Array.from({ length: 12 }, (_, i) => client.append("k", String(i % 10))));
    assertEquals(client.sessionCount, 3);
    assertEquals(cluster.stateMachine.get("k")!.value.length, 12);
    const seqs = new Map<string, number[]>();
    for (const cmd of cluster.nodes[0].backend.applied) {
      const s = cmd.session!;
      seqs.set(s.clientId, [...(seqs.get(s.clientId) ?? []), s.seq]);
    }
    assertEquals([...seqs.keys()].sort(), ["bench/1", "bench/2", "bench/3"]);
    for (const list of seqs.values()) {
      assertEquals(list, list.map((_, i) => i + 1));
    }
  } finally {
    client.close();
    cluster.close();
  }
});

Deno.test("writes go to the leader and reads round-robin over the followers", async () => {
  const cluster = await startFakeCluster(3);
  const client = await MokvClient.connect({ addrs: [cluster.addrs[2]], insecure: true });
  try {
    assertEquals(client.leaderAddr, cluster.addrs[0]);
    for (let i = 0; i < 10; i++) await client.set(`k${i}`, "v");
    for (let i = 0; i < 20; i++) await client.get(`k${i % 10}`);
    assertEquals(cluster.nodes.map((n) => n.backend.applied.length), [10, 0, 0]);
    assertEquals(cluster.nodes.map((n) => n.backend.reads), [0, 10, 10]);
    const stats = new Map(client.nodeStats().map((s) => [s.addr, s]));
    assertEquals(cluster.addrs.map((a) => stats.get(a)?.writes ?? 0), [10, 0, 0]);
    assertEquals(cluster.addrs.map((a) => stats.get(a)?.reads ?? 0), [0, 10, 10]);
  } finally {
    client.close();
    cluster.close();
  }
});

Deno.test("a leader change is followed through the leader hint without an error", async () => {
  const cluster = await startFakeCluster(3);
  const client = await MokvClient.connect({
    addrs: cluster.addrs,
    insecure: true,
    refreshMs: 60_000,
  });
  try {
    await client.set("a", "1");
    cluster.view.leaderId = "n2"; // the client still believes n1 leads
    await client.set("b", "2");
    assertEquals(client.leaderAddr, cluster.addrs[1]);
    assertEquals(cluster.nodes.map((n) => n.backend.applied.length), [1, 1, 0]);
    assertEquals(await client.transferLeadership("n3"), "n3");
    await client.set("c", "3");
    assertEquals(cluster.nodes.map((n) => n.backend.applied.length), [1, 1, 1]);
  } finally {
    client.close();
    cluster.close();
  }
});

Deno.test("a loop of writes and reads continues across a stopped leader", async () => {
  const cluster = await startFakeCluster(3);
  const client = await MokvClient.connect({
    addrs: cluster.addrs,
    insecure: true,
    refreshMs: 60_000,
  });
  try {
    for (let i = 0; i < 60; i++) {
      if (i === 20) {
        cluster.stopNode("n1");
        cluster.view.reportLeader = false; // an election is going on
        setTimeout(() => {
          cluster.view.leaderId = "n2";
          cluster.view.reportLeader = true;
        }, 150);
      }
      await client.set(`k${i}`, String(i));
      assertEquals(text(await client.get(`k${i}`)), String(i));
    }
    assertEquals(client.leaderAddr, cluster.addrs[1]);
    assertEquals(cluster.node("n2").backend.applied.length, 40);
  } finally {
    client.close();
    cluster.close();
  }
});

Deno.test("mutual TLS: explicit paths, PEM text, the config dir default, and a denied CN", async () => {
  const certs = await makeTestCerts();
  const authorizer = await Authorizer.load(certs.model, certs.policy);
  const cluster = await startFakeCluster(1, {
    tls: {
      ca: certs.ca,
      cert: certs.server.cert,
      key: certs.server.key,
      authorize: (s, o, a) => authorizer.enforce(s, o, a),
    },
  });
  const clients: MokvClient[] = [];
  try {
    const byPath = await MokvClient.connect({
      addrs: cluster.addrs,
      tls: { ca: certs.ca, cert: certs.rootClient.cert, key: certs.rootClient.key },
    });
    clients.push(byPath);
    await byPath.set("t", "tls");
    const byText = await MokvClient.connect({
      addrs: cluster.addrs,
      tls: {
        ca: await Deno.readTextFile(certs.ca),
        cert: await Deno.readTextFile(certs.rootClient.cert),
        key: await Deno.readTextFile(certs.rootClient.key),
      },
    });
    clients.push(byText);
    assertEquals(text(await byText.get("t")), "tls");
    const previous = Deno.env.get("MOKV_CONFIG_DIR");
    Deno.env.set("MOKV_CONFIG_DIR", certs.dir);
    try {
      const byDefault = await MokvClient.connect({ addrs: cluster.addrs });
      clients.push(byDefault);
      assertEquals(text(await byDefault.get("t")), "tls");
    } finally {
      if (previous === undefined) Deno.env.delete("MOKV_CONFIG_DIR");
      else Deno.env.set("MOKV_CONFIG_DIR", previous);
    }
    const nobody = await MokvClient.connect({
      addrs: cluster.addrs,
      tls: { ca: certs.ca, cert: certs.nobodyClient.cert, key: certs.nobodyClient.key },
    });
    clients.push(nobody);
    await rejects(nobody.get("t"), PermissionDeniedError);
    const otherCa = await MokvClient.connect({
      addrs: cluster.addrs,
      tls: { ca: certs.otherCa.ca, cert: certs.otherCa.client.cert, key: certs.otherCa.client.key },
      maxRetries: 1,
      baseBackoffMs: 1,
    });
    clients.push(otherCa);
    await rejects(otherCa.get("t"), UnavailableError);
    await rejects(
      MokvClient.connect({ addrs: cluster.addrs, tls: { ca: "/nonexistent/ca.pem" } }),
      InvalidArgumentError,
    );
  } finally {
    for (const c of clients) c.close();
    cluster.close();
  }
});

Deno.test("connect validates its options", async () => {
  await rejects(MokvClient.connect({ addrs: [], insecure: true }), InvalidArgumentError);
  await rejects(MokvClient.connect({ addrs: ["nohost"], insecure: true }), InvalidArgumentError);
  await rejects(
    MokvClient.connect({ addrs: ["127.0.0.1:1"], insecure: true, maxRetries: -1 }),
    InvalidArgumentError,
  );
});

Deno.test("a write whose response is dropped on the wire is applied once", async () => {
  const cluster = await startFakeCluster(1);
  const proxy = startDropProxy(cluster.addrs[0]);
  const opts = { addrs: [proxy.addr], insecure: true, discover: false, baseBackoffMs: 5 };
  const client = await MokvClient.connect(opts);
  const atLeastOnce = await MokvClient.connect({ ...opts, exactlyOnce: false });
  try {
    await client.set("warm", "up"); // the connection exists before the proxy is armed
    await atLeastOnce.set("warm", "up");
    proxy.arm();
    assertEquals((await client.append("once", "x")).length, 1);
    assertEquals(text(cluster.stateMachine.get("once")!), "x");
    proxy.arm();
    await atLeastOnce.append("twice", "x");
    assertEquals(text(cluster.stateMachine.get("twice")!), "xx");
    assertEquals(proxy.dropped, 2);
  } finally {
    client.close();
    atLeastOnce.close();
    await proxy.close();
    cluster.close();
  }
});
