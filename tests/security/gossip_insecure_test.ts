/**
 * With TLS on, gossip must be authenticated: a node without a gossip key refuses to start
 * (exit code 2, one line naming `gossip-key`) unless `gossip-insecure: true` says so, and the
 * key can come from a file so that it never shows in argv.
 */
import { assert_, assertEquals } from "../helpers/assert.ts";
import { makeTestCerts, type TestCerts } from "../helpers/certs.ts";
import { parseConfig } from "../../src/config/mod.ts";
import { ConfigError } from "../../src/errors.ts";
import { formatGossipKey, generateGossipKey, parseGossipKey } from "../../src/membership/mod.ts";
import { MokvNode, requireGossipAuth } from "../../src/node/node.ts";
import { runAgent } from "../../src/node/agent.ts";

const ENV = { HOME: "/home/op" };

function tlsFlags(c: TestCerts): string[] {
  return [
    "--node-name",
    "n1",
    "--server-tls-cert-file",
    c.server.cert,
    "--server-tls-key-file",
    c.server.key,
    "--server-tls-ca-file",
    c.ca,
  ];
}

async function configError(fn: () => unknown): Promise<ConfigError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw new Error(`expected ConfigError, got ${err}`);
  }
  throw new Error("expected ConfigError, got success");
}

Deno.test("gossip-insecure: TLS without a gossip key refuses to start unless gossip-insecure", async () => {
  const certs = await makeTestCerts();
  const dir = await Deno.makeTempDir({ prefix: "mokv-gossip-insecure-" });
  try {
    const flags = [...tlsFlags(certs), "--data-dir", dir];
    const bare = await parseConfig(flags, ENV);
    assertEquals((await configError(() => requireGossipAuth(bare))).key, "gossip-key");
    // MokvNode.start refuses before it opens storage or binds a port.
    assertEquals((await configError(() => MokvNode.start(bare))).key, "gossip-key");
    assertEquals([...Deno.readDirSync(dir)].length, 0, "nothing was created");

    requireGossipAuth(await parseConfig([...flags, "--gossip-insecure", "true"], ENV));
    const keyed = await parseConfig([
      ...flags,
      "--gossip-key",
      formatGossipKey(generateGossipKey()),
    ], ENV);
    requireGossipAuth(keyed);
    requireGossipAuth(await parseConfig(["--insecure", "--node-name", "n1"], ENV));

    // The key from a file (the Helm chart mounts it from the Secret): never in argv.
    const keyFile = `${dir}/gossip.key`;
    const key = generateGossipKey();
    await Deno.writeTextFile(keyFile, `${formatGossipKey(key)}\n`);
    const fromFile = await parseConfig([...flags, "--gossip-key-file", keyFile], ENV);
    assert_(fromFile.gossipKeyring[0].every((b, i) => b === key[i]), "key read from the file");
    requireGossipAuth(fromFile);
    assertEquals(
      (await configError(() =>
        parseConfig(
          [...flags, "--gossip-key-file", keyFile, "--gossip-key", formatGossipKey(key)],
          ENV,
        )
      )).key,
      "gossip-key-file",
    );
    await Deno.writeTextFile(keyFile, "c2hvcnQ=");
    assertEquals(
      (await configError(() => parseConfig([...flags, "--gossip-key-file", keyFile], ENV))).key,
      "gossip-key-file",
    );
    assertEquals(
      (await configError(() =>
        parseConfig([...flags, "--gossip-insecure", "--gossip-key", formatGossipKey(key)], ENV)
      )).key,
      "gossip-insecure",
    );
    assertEquals((await parseConfig(flags, ENV)).gossipMaxMembers, 1024, "default bound");
    assertEquals(
      (await configError(() => parseConfig([...flags, "--gossip-max-members", "1"], ENV))).key,
      "gossip-max-members",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gossip-insecure: the agent exits 2 with one line naming gossip-key", async () => {
  const certs = await makeTestCerts();
  const dir = await Deno.makeTempDir({ prefix: "mokv-gossip-insecure-" });
  const errors: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => errors.push(args.join(" "));
  try {
    const code = await runAgent([...tlsFlags(certs), "--data-dir", dir, "--metrics-port", "0"]);
    assertEquals(code, 2);
    assert_(errors.length === 1 && errors[0].includes("gossip-key"), `stderr: ${errors}`);
    assert_(errors[0].includes("gossip-insecure"), "names the way out");
  } finally {
    console.error = original;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gossip-insecure: deno task gencert writes a gossip key the example configs use", async () => {
  const home = await Deno.makeTempDir({ prefix: "mokv-gencert-home-" });
  try {
    const repo = new URL("../../", import.meta.url).pathname;
    const run = await new Deno.Command("bash", {
      args: [`${repo}certs/gencert.sh`],
      env: { HOME: home, MOKV_CONFIG_DIR: `${home}/.mokv` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(run.code, 0, new TextDecoder().decode(run.stderr));
    const keyFile = `${home}/.mokv/gossip.key`;
    parseGossipKey(await Deno.readTextFile(keyFile));
    assertEquals((await Deno.stat(keyFile)).mode! & 0o077, 0, "readable by the owner only");
    for (const name of ["config.yaml", "config2.yaml", "config3.yaml"]) {
      const cfg = await parseConfig(["--config-file", `${repo}example/${name}`], { HOME: home });
      assertEquals(cfg.tls.mode, "mutual", name);
      assertEquals(cfg.gossipKeyring.length, 1, `${name} reads the gossip key`);
      requireGossipAuth(cfg);
    }
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
