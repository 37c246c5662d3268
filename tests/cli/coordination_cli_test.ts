/**
 * `mokv lease`, `mokv watch` and `mokv lock` against a real three-node TLS cluster: lease
 * grant/ttl/revoke, a watch process printing JSON events, four competing `mokv lock`
 * processes whose commands never overlap, also when one holder is SIGKILLed with its command,
 * and a holder whose lease is revoked stopping its command and exiting with LOCK_LOST.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { captureIo, ExitCode, runCli } from "../../src/cli/mod.ts";
import { MokvClient } from "../../src/client/mod.ts";
import { startCluster } from "../helpers/cluster.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

async function mokv(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = captureIo();
  const code = await runCli(args, io);
  return { code, out: io.stdout(), err: io.stderr() };
}

function spawnMokv(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--unstable-kv", "--unstable-net", MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function waitFor(what: string, ready: () => Promise<boolean>, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readText(path: string): Promise<string> {
  return await Deno.readTextFile(path).catch(() => "");
}

Deno.test({
  name: "cluster CLI: lease, watch, lock",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const cluster = await startCluster({ size: 3 });
    const dir = await Deno.makeTempDir({ prefix: "mokv-cli-coord-" });
    const children: Deno.ChildProcess[] = [];
    const c = cluster.certs;
    const g = [
      "--addrs",
      cluster.addrs.join(","),
      "--ca",
      c.ca,
      "--cert",
      c.rootClient.cert,
      "--key",
      c.rootClient.key,
    ];
    const client = await MokvClient.connect({
      addrs: cluster.addrs,
      tls: { ca: c.ca, cert: c.rootClient.cert, key: c.rootClient.key },
    });
    try {
      await t.step("lease grant, ttl --keys, keep-alive --once, revoke", async () => {
        const granted = await mokv(["lease", "grant", "30", ...g]);
        assertEquals(granted.code, 0, granted.err);
        const id = /^lease ([0-9a-f]+) granted with TTL\(30s\)\n$/.exec(granted.out)![1];
        await client.set("cli-lease/k", "v", { lease: parseInt(id, 16) });
        const ttl = await mokv(["lease", "ttl", id, "--keys", "--json", ...g]);
        assertEquals(JSON.parse(ttl.out).keys, ["cli-lease/k"]);
        assertEquals((await mokv(["lease", "keep-alive", id, "--once", ...g])).code, 0);
        assertEquals((await mokv(["lease", "revoke", id, ...g])).code, 0);
        assertEquals((await mokv(["lease", "ttl", id, ...g])).code, ExitCode.NOT_FOUND);
        assertEquals((await mokv(["kv", "get", "cli-lease/k", ...g])).code, ExitCode.NOT_FOUND);
      });

      await t.step("lease keep-alive prints each renewal until interrupted", async () => {
        const lease = await client.leaseGrant(2);
        const hex = lease.id.toString(16);
        const proc = spawnMokv(["lease", "keep-alive", hex, ...g]);
        children.push(proc);
        const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
        let text = "";
        const deadline = Date.now() + 15_000;
        // Five renewals of a 2 s lease, a third of its TTL apart: it outlived its TTL.
        while (text.split("\n").length < 6 && Date.now() < deadline) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        proc.kill("SIGINT");
        reader.releaseLock();
        await proc.stdout.cancel().catch(() => {});
        const status = await proc.status;
        const err = await new Response(proc.stderr).text();
        const lines = text.trim().split("\n");
        assert(lines.length >= 5, `${text}\n${err}`);
        assert(lines.every((l) => l === `lease ${hex} keepalived with TTL(2)`), text);
        assertEquals(status.code, 0, err);
        assert((await client.leaseTimeToLive(lease.id)).ttlSeconds > 0);
        await client.leaseRevoke(lease.id);
      });

      await t.step(
        "watch --prefix --json prints one event per line until interrupted",
        async () => {
          const start = (await client.set("cli-watch/0", "0")).version;
          const proc = spawnMokv([
            "watch",
            "cli-watch/",
            "--prefix",
            "--rev",
            String(start),
            "--json",
            ...g,
          ]);
          children.push(proc);
          await client.set("cli-watch/1", "1");
          await client.delete("cli-watch/0");
          const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
          let text = "";
          const deadline = Date.now() + 15_000;
          while (text.split("\n").length < 4 && Date.now() < deadline) {
            const { value, done } = await reader.read();
            if (done) break;
            text += value;
          }
          proc.kill("SIGINT");
          reader.releaseLock();
          await proc.stdout.cancel().catch(() => {});
          const status = await proc.status;
          const err = await new Response(proc.stderr).text();
          const events = text.trim().split("\n").map((l) => JSON.parse(l));
          assertEquals(
            events.map((e) => `${e.type} ${e.key}`),
            ["put cli-watch/0", "put cli-watch/1", "delete cli-watch/0"],
            err,
          );
          assertEquals(status.code, 0, err);
        },
      );

      await t.step(
        "four mokv lock holders never overlap, one SIGKILLed with its command",
        async () => {
          const file = `${dir}/log`;
          const script = `echo "start $$" >> ${file}; sleep 1; echo "end $$" >> ${file}; exit 42`;
          const holders = [0, 1, 2, 3].map(() =>
            spawnMokv(["lock", "cli-lock", "--ttl", "2", ...g, "--", "sh", "-c", script])
          );
          children.push(...holders);
          await waitFor(
            "a first holder starts",
            async () => (await readText(file)).includes("start"),
            20_000,
          );
          // SIGKILL the first holder's shell and its `mokv lock` parent.
          const shellPid = Number(/start (\d+)/.exec(await readText(file))![1]);
          const stat = await Deno.readTextFile(`/proc/${shellPid}/stat`);
          const parentPid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
          const victim = holders.find((h) => h.pid === parentPid);
          assert(victim, `the holder ${parentPid} is one of ours`);
          Deno.kill(shellPid, "SIGKILL");
          victim.kill("SIGKILL");
          const others = holders.filter((h) => h !== victim);
          const results = await Promise.race([
            Promise.all(others.map(async (h) => ({
              status: await h.status,
              err: await new Response(h.stderr).text(),
            }))),
            new Promise<never>((_, reject) =>
              setTimeout(() => reject(new Error("holders did not finish in 25 s")), 25_000)
            ),
          ]);
          await victim.status;
          for (const h of holders) await h.stdout.cancel().catch(() => {});
          await victim.stderr.cancel().catch(() => {});
          const lines = (await readText(file)).trim().split("\n");
          assertEquals(lines.length, 7, lines.join("\n"));
          assertEquals(lines[0], `start ${shellPid}`);
          for (let k = 1; k < lines.length; k += 2) {
            assert(
              lines[k].startsWith("start ") && lines[k + 1] === lines[k].replace("start", "end"),
              `overlap:\n${lines.join("\n")}`,
            );
          }
          const revisions = results.map((r) => Number(/revision (\d+)/.exec(r.err)?.[1]));
          assert(revisions.every((r) => r > 0), results.map((r) => r.err).join("\n"));
          assertEquals(
            results.map((r) => r.status.code),
            [42, 42, 42],
            results.map((r) => r.err).join("\n"),
          );
        },
      );

      await t.step(
        "a lost lock stops the command (SIGTERM, then SIGKILL) and exits 7",
        async () => {
          const file = `${dir}/lost`;
          // The command ignores SIGTERM, so it is the SIGKILL after --grace 1 that ends it.
          const script =
            `trap 'echo term >> ${file}' TERM; echo "key $MOKV_LOCK_KEY" >> ${file}; ` +
            `while true; do sleep 0.2; done`;
          const proc = spawnMokv([
            "lock",
            "cli-lost",
            "--ttl",
            "6",
            "--grace",
            "1",
            ...g,
            "--",
            "sh",
            "-c",
            script,
          ]);
          children.push(proc);
          await waitFor(
            "the holder's command starts",
            async () => (await readText(file)).includes("key "),
            20_000,
          );
          const hex = /key cli-lost\/([0-9a-f]+)/.exec(await readText(file))![1];
          // Revoking the lease from another client is, for the holder, the same as expiry.
          assertEquals((await mokv(["lease", "revoke", hex, ...g])).code, 0);
          const status = await Promise.race([
            proc.status,
            new Promise<never>((_, reject) =>
              setTimeout(() => reject(new Error("the holder did not exit in 20 s")), 20_000)
            ),
          ]);
          await proc.stdout.cancel().catch(() => {});
          const err = await new Response(proc.stderr).text();
          assertEquals(status.code, ExitCode.LOCK_LOST, err);
          assert(err.includes(`mokv lock: lock cli-lost lost: lease ${hex} expired`), err);
          assert((await readText(file)).includes("term"), "the command got SIGTERM first");
          // Nothing of the lost holder is left: the lock is free at once.
          const again = await mokv(["lock", "cli-lost", ...g, "--", "true"]);
          assertEquals(again.code, 0, again.err);
        },
      );
    } catch (err) {
      throw cluster.explain(err);
    } finally {
      for (const child of children) {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
        await child.status.catch(() => {});
      }
      client.close();
      await cluster.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
