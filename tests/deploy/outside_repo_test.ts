/**
 * `deno compile` cannot run here, so this checks what it relies on: main.ts reads nothing from
 * the repository at run time. `--help` and a whole node run with the working directory in a
 * temporary directory outside the repository, the way the compiled executable runs anywhere.
 */
import { CONFIG_KEYS } from "../../src/config/mod.ts";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { repoPath } from "./_scripts.ts";
import { reservePort } from "../helpers/ports.ts";

const MAIN = repoPath("main.ts");
const DENO_FLAGS = ["run", "--allow-all", "--unstable-kv", "--unstable-net"];

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mokv_outside_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("main.ts --help works from a directory outside the repository", async () => {
  await withTempDir(async (dir) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...DENO_FLAGS, MAIN, "--help"],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    for (const key of CONFIG_KEYS) {
      assert_(stdout.includes(`--${key.name}`), `--help lists --${key.name}`);
    }
  });
});

Deno.test("a node starts from a directory outside the repository and stops on SIGTERM", async () => {
  await withTempDir(async (dir) => {
    const rpcPort = reservePort();
    const metricsPort = reservePort();
    const gossipPort = reservePort();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        ...DENO_FLAGS,
        MAIN,
        "--insecure",
        "true",
        "--bootstrap",
        "true",
        "--node-name",
        "outside-1",
        "--data-dir",
        `${dir}/data`,
        "--bind-addr",
        `127.0.0.1:${gossipPort}`,
        "--rpc-port",
        String(rpcPort),
        "--metrics-port",
        String(metricsPort),
        "--log-format",
        "json",
      ],
      cwd: dir, // HOME stays: Deno's module cache lives under it
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    try {
      const deadline = Date.now() + 30_000;
      let health = 0;
      while (Date.now() < deadline && !exited && health !== 200) {
        try {
          const res = await fetch(`http://127.0.0.1:${metricsPort}/healthz`);
          await res.body?.cancel();
          health = res.status;
        } catch {
          // not listening yet
        }
        if (health !== 200) await new Promise((r) => setTimeout(r, 200));
      }
      assertEquals(health, 200, "/healthz says 200 once the node leads itself");
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      assert_(
        /mokv_raft_role\{[^}]*role="leader"[^}]*\} 1/.test(metrics),
        "the single node is the leader",
      );
      await Deno.stat(`${dir}/data/raft.kv`); // the Deno KV file is in the data dir
      child.kill("SIGTERM");
      const timeout = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // already exited
        }
      }, 20_000);
      const { code } = await status;
      clearTimeout(timeout);
      assertEquals(code, 0, `exit code after SIGTERM; stderr:\n${await stderr}`);
      const lines = (await stderr).split("\n").filter((l) => l.startsWith("{"));
      assert_(lines.some((l) => JSON.parse(l).message === "stopped"), "logs its clean stop");
    } finally {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch {
          // already exited
        }
        await status;
      }
      await stderr;
    }
  });
});
