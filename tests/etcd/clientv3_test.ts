/**
 * etcd's Go client (clientv3 3.4, Debian's golang-etcd-server-dev, built in GOPATH mode with
 * no module proxy) against a real three-node mokv cluster over mutual TLS: transactions that
 * race on one key stay atomic, a watch resumed on another node after its node was SIGKILLed
 * misses nothing and sees nothing twice, and a linearizable Range after a leader change sees
 * the last acknowledged write. `.ci/run` installs Go and the library.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster } from "../helpers/cluster.ts";
import { buildClientv3, run, tlsArgs } from "./_tools.ts";
import { set } from "../node/_kv.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const td = new TextDecoder();

Deno.test({
  name:
    "etcd clientv3: racing transactions, watch resume after SIGKILL, linearizable Range after a leader change",
  ...opts,
  fn: async (t) => {
    const bin = await buildClientv3();
    const c = await startCluster({ size: 3 });
    try {
      await t.step("transactions racing on one key lose and duplicate nothing", async () => {
        const out = await run(bin, [
          "-mode=txn-race",
          `-endpoints=${c.addrs.join(",")}`,
          ...tlsArgs(c),
          "-workers=6",
          "-rounds=15",
        ]);
        const r = JSON.parse(out.trim());
        assertEquals([r.final, r.succeeded], [90, 90], "every increment applied exactly once");
      });

      await t.step("a watch resumed on another node after a SIGKILL misses nothing", async () => {
        const leader = await c.leader();
        const [a, b] = c.nodes.filter((n) => n.name !== leader.name);
        const start = Number(
          JSON.parse(
            (await run(bin, [
              "-mode=get",
              `-endpoints=${leader.rpcAddr}`,
              ...tlsArgs(c),
              "-key-name=none",
            ])).trim(),
          ).rev,
        ) + 1;
        const want = 60;
        const watcher = new Deno.Command(bin, {
          args: [
            "-mode=watch",
            `-endpoints=${a.rpcAddr}`,
            `-fallback=${b.rpcAddr},${leader.rpcAddr}`,
            ...tlsArgs(c),
            "-prefix=w/",
            `-rev=${start}`,
            `-want=${want}`,
          ],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        let out = "";
        const reading = (async () => {
          for await (const chunk of watcher.stdout) out += td.decode(chunk);
        })();
        try {
          await new Promise((r) => setTimeout(r, 500));
          for (let i = 0; i < want; i++) {
            if (i === 20) await c.kill(a.name, "SIGKILL");
            await eventually(() => set(c, leader, `w/${i}`, `${i}`), 10_000, 50);
          }
          const status = await Promise.race([
            watcher.status,
            new Promise<undefined>((r) => setTimeout(() => r(undefined), 30_000)),
          ]);
          assert(status?.success === true, `watcher exited: ${out}`);
          await reading;
          const lines = out.split("\n").filter((l) => l);
          assert(lines.includes('"resumed"'), "the watcher resumed on another node");
          const events = lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
          assertEquals(
            events.map((e) => e.key),
            Array.from({ length: want }, (_, i) => `w/${i}`),
            "every write once, in order",
          );
          const revs = events.map((e) => e.rev);
          assert(revs.every((r, i) => i === 0 || r > revs[i - 1]), "revisions increase");
        } finally {
          try {
            watcher.kill("SIGKILL");
          } catch {
            // exited already
          }
          await watcher.status;
          await reading.catch(() => undefined);
          await c.restart(a.name);
        }
      });

      await t.step("a linearizable Range after a leader change sees the last write", async () => {
        const old = await c.leader();
        await set(c, old, "lin", "before-kill");
        await c.kill(old.name, "SIGKILL");
        const survivors = c.nodes.filter((n) => n.process).map((n) => n.rpcAddr);
        const got = await eventually(async () => {
          const r = JSON.parse(
            (await run(bin, [
              "-mode=get",
              `-endpoints=${survivors.join(",")}`,
              ...tlsArgs(c),
              "-key-name=lin",
              "-timeout=10s",
            ])).trim(),
          );
          return r.value as string;
        }, 30_000);
        assertEquals(got, "before-kill", "the acknowledged write survives the leader");
        const leader = await c.leader();
        await eventually(() => set(c, leader, "lin", "after"), 10_000, 50);
        for (const addr of survivors) {
          const r = JSON.parse(
            (await run(bin, ["-mode=get", `-endpoints=${addr}`, ...tlsArgs(c), "-key-name=lin"]))
              .trim(),
          );
          assertEquals(r.value, "after", `linearizable on ${addr}`);
        }
      });
    } catch (err) {
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});
