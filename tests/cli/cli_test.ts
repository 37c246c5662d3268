import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { captureIo, CLI_COMMANDS, COMMANDS, ExitCode, runCli } from "../../src/cli/mod.ts";
import { KvStateMachine } from "../../src/kv/mod.ts";
import { makeTestCerts } from "../helpers/certs.ts";
import { type FakeCluster, startFakeCluster } from "../client/_fake_cluster.ts";

/** Runs one command in-process; returns exit code, stdout and stderr. */
async function mokv(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = captureIo();
  const code = await runCli(args, io);
  return { code, out: io.stdout(), err: io.stderr() };
}

function withCluster(
  name: string,
  size: number,
  body: (c: FakeCluster, g: string[]) => Promise<void>,
) {
  Deno.test(name, async () => {
    const cluster = await startFakeCluster(size);
    try {
      await body(cluster, ["--addrs", cluster.addrs.join(","), "--insecure"]);
    } finally {
      cluster.close();
    }
  });
}

withCluster("kv commands round-trip, in text and JSON", 3, async (_c, g) => {
  assertEquals(await mokv(["kv", "set", "greeting", "hello", ...g]), {
    code: 0,
    out: "OK (version 1)\n",
    err: "",
  });
  assertEquals((await mokv(["kv", "get", "greeting", ...g])).out, "hello\n");
  assertEquals(JSON.parse((await mokv(["kv", "get", "greeting", "--stale", "--json", ...g])).out), {
    key: "greeting",
    value: "hello",
    version: 1,
  });
  assertEquals(JSON.parse((await mokv(["kv", "append", "greeting", "!", "--json", ...g])).out), {
    ok: true,
    version: 2,
    length: 6,
  });
  const casFail = await mokv(["kv", "cas", "greeting", "x", "--expect-version", "1", ...g]);
  assertEquals([casFail.code, casFail.out], [
    ExitCode.COMPARE_FAILED,
    "FAILED (current version 2)\n",
  ]);
  const casOk = await mokv([
    "kv",
    "cas",
    "greeting",
    "hi",
    "--expect-value",
    "hello!",
    "--json",
    ...g,
  ]);
  assertEquals(casOk.code, 0);
  assertEquals(JSON.parse(casOk.out).ok, true);
  assertEquals((await mokv(["kv", "cas", "new", "n", "--expect-absent", ...g])).code, 0);
  for (const k of ["list/a", "list/b", "list/c"]) {
    await mokv(["kv", "set", k, k.toUpperCase(), ...g]);
  }
  assertEquals(
    (await mokv(["kv", "list", "list/", ...g])).out,
    "list/a\tLIST/A\nlist/b\tLIST/B\nlist/c\tLIST/C\n",
  );
  assertEquals(
    (await mokv(["kv", "list", "list/", "--start", "list/b", "--limit", "1", "--keys-only", ...g]))
      .out,
    "list/b\n",
  );
  const listed = JSON.parse((await mokv(["kv", "list", "--json", ...g])).out);
  assertEquals(listed.count, 5);
  assertEquals(listed.entries.map((e: { key: string }) => e.key), [
    "greeting",
    "list/a",
    "list/b",
    "list/c",
    "new",
  ]);
  assertEquals((await mokv(["kv", "delete", "greeting", ...g])).out, "1\n");
  assertEquals(
    JSON.parse((await mokv(["kv", "delete", "greeting", "--json", ...g])).out).existed,
    false,
  );
  const missing = await mokv(["kv", "get", "greeting", ...g]);
  assertEquals([missing.code, missing.out], [ExitCode.NOT_FOUND, ""]);
  assert(missing.err.includes("key not found: greeting"));
  const missingJson = await mokv(["kv", "get", "greeting", "--json", ...g]);
  assertEquals(JSON.parse(missingJson.out).exit_code, ExitCode.NOT_FOUND);
});

withCluster(
  "cluster commands: servers, members, leader transfer, member remove, leave",
  3,
  async (c, g) => {
    const servers = await mokv(["servers", ...g]);
    assertEquals(servers.code, 0);
    assert(servers.out.startsWith("ID"));
    assert(servers.out.includes(`n1  ${c.addrs[0]}  true`));
    assertEquals(JSON.parse((await mokv(["servers", "--json", ...g])).out).servers.length, 3);
    const members = JSON.parse((await mokv(["members", "--json", ...g])).out).members;
    assertEquals(members.map((m: { name: string }) => m.name), ["n1", "n2", "n3"]);
    assert((await mokv(["members", ...g])).out.includes("alive"));
    assertEquals(await mokv(["leader", "transfer", "n2", ...g]), {
      code: 0,
      out: "leader is now n2\n",
      err: "",
    });
    assertEquals(JSON.parse((await mokv(["leader", "transfer", "--json", ...g])).out), {
      leader_id: "n1",
    });
    // The fake's RemoveServer is the single-node one: it refuses, with INVALID_ARGUMENT.
    const removed = await mokv(["member", "remove", "n9", ...g]);
    assertEquals(removed.code, ExitCode.USAGE);
    assert(removed.err.includes("unknown server n9"));
    const leave = await mokv(["leave", "--addr", c.addrs[2], "--insecure"]);
    assertEquals([leave.code, leave.out], [0, `${c.addrs[2]} is leaving the cluster\n`]);
    assertEquals((await mokv(["leave", ...g])).code, ExitCode.USAGE);
  },
);

withCluster("health once and continuous; snapshot save and restore", 2, async (c, g) => {
  const once = await mokv(["health", ...g]);
  assertEquals(once.code, 0);
  assert(once.out.includes(`${c.addrs[0]}: SERVING  success 1/1 (100.0%)`));
  const cont = await mokv([
    "health",
    "--continuous",
    "--requests",
    "3",
    "--delay",
    "10ms",
    "--json",
    "--addr",
    c.addrs[1],
    "--insecure",
  ]);
  assertEquals(cont.code, 0);
  const report = JSON.parse(cont.out).nodes[0];
  assertEquals([report.addr, report.status, report.requests, report.success_rate], [
    c.addrs[1],
    "SERVING",
    3,
    1,
  ]);
  assert(report.mean_latency_ms > 0);
  await mokv(["leave", "--addr", c.addrs[1], "--insecure"]);
  const notServing = await mokv(["health", ...g]);
  assertEquals(notServing.code, ExitCode.UNAVAILABLE);
  assert(notServing.out.includes(`${c.addrs[1]}: NOT_SERVING`));

  await mokv(["kv", "set", "saved", "value", ...g]);
  const dir = await Deno.makeTempDir({ prefix: "mokv-cli-" });
  try {
    const file = `${dir}/backup.snap`;
    const saved = await mokv(["snapshot", "save", file, "--json", ...g]);
    assertEquals(saved.code, 0);
    const image = await Deno.readFile(file);
    assertEquals(JSON.parse(saved.out), { file, bytes: image.length });
    const restored = new KvStateMachine();
    restored.restore(image);
    assertEquals(new TextDecoder().decode(restored.get("saved")!.value), "value");
    const seed = await mokv([
      "snapshot",
      "restore",
      file,
      "--data-dir",
      `${dir}/data`,
      "--node-name",
      "r1",
      "--rpc-addr",
      "127.0.0.1:18400",
      "--json",
    ]);
    assertEquals(seed.code, 0, seed.err);
    assertEquals(JSON.parse(seed.out).node_name, "r1");
    assert((await Deno.stat(`${dir}/data/raft.kv`)).isFile);
    const again = await mokv([
      "snapshot",
      "restore",
      file,
      "--data-dir",
      `${dir}/data`,
      "--node-name",
      "r1",
      "--rpc-addr",
      "127.0.0.1:18400",
    ]);
    assertEquals(again.code, ExitCode.USAGE);
    assert(again.err.includes("already holds Raft state"));
    assertEquals(
      (await mokv(["snapshot", "restore", file, "--data-dir", `${dir}/x`])).code,
      ExitCode.USAGE,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

withCluster("bench: a short bounded run prints sane JSON", 3, async (c, g) => {
  const put = await mokv([
    "bench",
    "--requests",
    "200",
    "--concurrency",
    "8",
    "--keys",
    "50",
    "--json",
    ...g,
  ]);
  assertEquals(put.code, 0, put.err);
  const r = JSON.parse(put.out);
  assertEquals([r.workload, r.requests, r.succeeded, r.failed], ["put", 200, 200, 0]);
  assert(r.throughput_ops_s > 0 && r.duration_s > 0);
  assertEquals(r.latency_ms.count, 200);
  assert(r.latency_ms.p50 > 0 && r.latency_ms.p50 <= r.latency_ms.p90);
  assert(r.latency_ms.p90 <= r.latency_ms.p99 && r.latency_ms.p99 <= r.latency_ms.max);
  assertEquals(r.write_spread, { [c.addrs[0]]: 200 });
  assertEquals(r.errors, {});
  assert(r.longest_write_gap_ms >= 0);

  const get = await mokv([
    "bench",
    "--workload",
    "get",
    "--requests",
    "200",
    "--keys",
    "20",
    "--json",
    ...g,
  ]);
  const gr = JSON.parse(get.out);
  assertEquals([get.code, gr.succeeded, gr.longest_write_gap_ms], [0, 200, null]);
  // Reads go to the two followers only, round-robin.
  assertEquals(Object.keys(gr.read_spread).sort(), [c.addrs[1], c.addrs[2]].sort());
  assertEquals(Object.values(gr.read_spread).reduce((a, b) => (a as number) + (b as number)), 200);

  const mixed = await mokv([
    "bench",
    "--workload",
    "mixed",
    "--read-ratio",
    "0.8",
    "--read-consistency",
    "stale",
    "--duration",
    "300ms",
    "--concurrency",
    "4",
    "--connections",
    "2",
    ...g,
  ]);
  assertEquals(mixed.code, 0, mixed.err);
  assert(mixed.out.includes("throughput"));
  assert(mixed.out.includes("longest write gap"));
  assertEquals((await mokv(["bench", "--workload", "nope", ...g])).code, ExitCode.USAGE);
  assertEquals(
    (await mokv(["bench", "--keys", "1000", "--key-size", "2", ...g])).code,
    ExitCode.USAGE,
  );
});

Deno.test("TLS flags: --ca --cert --key reach a mutual-TLS server; a bad file is a usage error", async () => {
  const certs = await makeTestCerts();
  const cluster = await startFakeCluster(1, {
    tls: { ca: certs.ca, cert: certs.server.cert, key: certs.server.key },
  });
  try {
    const tls = [
      "--addr",
      cluster.addrs[0],
      "--ca",
      certs.ca,
      "--cert",
      certs.rootClient.cert,
      "--key",
      certs.rootClient.key,
    ];
    assertEquals((await mokv(["kv", "set", "t", "v", ...tls])).code, 0);
    assertEquals((await mokv(["kv", "get", "t", ...tls])).out, "v\n");
    const bad = await mokv([
      "kv",
      "get",
      "t",
      "--addr",
      cluster.addrs[0],
      "--ca",
      "/nonexistent.pem",
    ]);
    assertEquals(bad.code, ExitCode.USAGE);
    assert(bad.err.includes("/nonexistent.pem"));
  } finally {
    cluster.close();
  }
});

Deno.test("usage errors, unreachable servers and --help on every command", async () => {
  assertEquals((await mokv(["kv", "get"])).code, ExitCode.USAGE);
  assertEquals((await mokv(["kv", "get", "a", "b", "--insecure"])).code, ExitCode.USAGE);
  assertEquals((await mokv(["kv", "frobnicate"])).code, ExitCode.USAGE);
  assertEquals((await mokv(["kv", "get", "a", "--bogus"])).code, ExitCode.USAGE);
  assertEquals((await mokv(["kv", "get", "a", "--addr", "nohost"])).code, ExitCode.USAGE);
  assertEquals((await mokv(["kv", "cas", "k", "v", "--insecure"])).code, ExitCode.USAGE);
  const down = await mokv([
    "kv",
    "get",
    "a",
    "--addr",
    "127.0.0.1:1",
    "--insecure",
    "--timeout-ms",
    "200",
  ]);
  assertEquals(down.code, ExitCode.UNAVAILABLE);
  for (const cmd of COMMANDS) {
    const help = await mokv([...cmd.words, "--help"]);
    assertEquals(help.code, 0);
    assert(help.out.startsWith(`usage: mokv ${cmd.words.join(" ")}`), help.out);
    assert(help.out.includes("--json") && help.out.includes("exit codes"));
  }
  for (const group of CLI_COMMANDS) {
    const help = await mokv([group, "-h"]);
    assertEquals(help.code, 0);
  }
  assertEquals(CLI_COMMANDS, [
    "kv",
    "servers",
    "members",
    "member",
    "leader",
    "leave",
    "snapshot",
    "watch",
    "lease",
    "lock",
    "health",
    "bench",
  ]);
});

Deno.test("main.ts dispatches client commands in its own process, from another directory", async () => {
  const cluster = await startFakeCluster(1);
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-kv", "--unstable-net", main, ...args],
      cwd: Deno.makeTempDirSync({ prefix: "mokv-cwd-" }),
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, out: new TextDecoder().decode(out.stdout) };
  };
  try {
    const g = ["--addr", cluster.addrs[0], "--insecure"];
    assertEquals(await run("kv", "set", "p", "q", ...g), { code: 0, out: "OK (version 1)\n" });
    assertEquals(await run("kv", "get", "p", ...g), { code: 0, out: "q\n" });
    assertEquals((await run("kv", "get", "missing", ...g)).code, ExitCode.NOT_FOUND);
    assertEquals((await run("kv", "--help")).code, 0);
  } finally {
    cluster.close();
  }
});
