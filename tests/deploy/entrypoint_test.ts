/**
 * The chart's entrypoint script, run the way the StatefulSet's pods run it (bash, HOSTNAME =
 * the pod name): every pod must get the same join list and bootstrap-expect, its own node name
 * and advertise address, and only flags the node accepts.
 */
import { CONFIG_KEYS, parseConfig } from "../../src/config/mod.ts";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { flagValue, repoPath, runScript, type ScriptResult } from "./_scripts.ts";

const SCRIPT = repoPath("deploy/mokv/files/entrypoint.sh");
const GOSSIP_KEY = btoa(String.fromCharCode(...new Uint8Array(32).map((_, i) => i * 7)));
const NAMESPACE = "testns";
/** Where the StatefulSet mounts the gossip key from the Secret. */
const GOSSIP_KEY_FILE = "/etc/mokv/gossip/gossip.key";

/** The environment the StatefulSet gives pod `pod` (see templates/statefulset.yaml). */
function podEnv(pod: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    HOSTNAME: pod,
    MOKV_NAMESPACE: NAMESPACE,
    MOKV_SERVICE: "mokv",
    MOKV_CLUSTER_DOMAIN: "cluster.local",
    MOKV_BOOTSTRAP_EXPECT: "3",
    MOKV_GOSSIP_PORT: "8401",
    MOKV_DATA_DIR: "/var/lib/mokv",
    MOKV_CONFIG_FILE: "/etc/mokv/config/config.yaml",
    MOKV_GOSSIP_KEY_FILE: GOSSIP_KEY_FILE,
    MOKV_DRY_RUN: "1",
    ...extra,
  };
}

async function dryRun(pod: string, extra: Record<string, string> = {}): Promise<string[]> {
  const result = await runScript(SCRIPT, podEnv(pod, extra));
  assertEquals(result.code, 0, `entrypoint for ${pod} failed: ${result.stderr}`);
  return [...result.lines];
}

const fqdn = (pod: string) => `${pod}.mokv.${NAMESPACE}.svc.cluster.local`;
const SEEDS = ["mokv-0", "mokv-1", "mokv-2"].map((p) => `${fqdn(p)}:8401`).join(",");

Deno.test("every pod gets the same join list and bootstrap-expect, and its own name", async () => {
  for (const pod of ["mokv-0", "mokv-1", "mokv-2", "mokv-3"]) {
    const args = await dryRun(pod);
    assertEquals(args[0], "mokv", "the command is the mokv executable");
    assertEquals(flagValue(args, "start-join-addrs"), SEEDS, `${pod} join list`);
    assertEquals(flagValue(args, "bootstrap-expect"), "3", `${pod} bootstrap-expect`);
    assertEquals(flagValue(args, "node-name"), pod, `${pod} node name`);
    assertEquals(flagValue(args, "advertise-addr"), fqdn(pod), `${pod} advertise address`);
    assertEquals(flagValue(args, "bind-addr"), "0.0.0.0:8401", `${pod} gossip bind address`);
    assertEquals(flagValue(args, "data-dir"), "/var/lib/mokv", `${pod} data dir`);
    assertEquals(flagValue(args, "config-file"), "/etc/mokv/config/config.yaml", `${pod} config`);
    assertEquals(flagValue(args, "gossip-key-file"), GOSSIP_KEY_FILE, `${pod} gossip key file`);
    assertEquals(flagValue(args, "gossip-key"), undefined, `${pod}: no key in argv`);
    assert_(!args.includes("--bootstrap"), "bootstrap-expect pods never use bootstrap: true");
  }
});

Deno.test("every flag the script produces is a known configuration key, given once", async () => {
  const known = new Set(CONFIG_KEYS.map((k) => k.name));
  const args = await dryRun("mokv-1");
  const flags = args.slice(1).filter((_, i) => i % 2 === 0);
  for (const flag of flags) {
    assert_(flag.startsWith("--"), `expected a flag, got ${flag}`);
    assert_(known.has(flag.slice(2)), `${flag} is not a key of mokv --help`);
  }
  assertEquals(new Set(flags).size, flags.length, "no flag is given twice");
});

Deno.test("the node's own parser accepts the command line and reads the pod's identity", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mokv_entrypoint_" });
  try {
    // The shape of the chart's config.yaml in development mode (tls.enabled=false).
    const configFile = `${dir}/config.yaml`;
    await Deno.writeTextFile(
      configFile,
      "rpc-port: 8400\nmetrics-port: 4000\ninsecure: true\nlog-level: info\nlog-format: json\n",
    );
    const keyFile = `${dir}/gossip.key`;
    await Deno.writeTextFile(keyFile, `${GOSSIP_KEY}\n`);
    const args = await dryRun("mokv-2", {
      MOKV_CONFIG_FILE: configFile,
      MOKV_DATA_DIR: dir,
      MOKV_GOSSIP_KEY_FILE: keyFile,
    });
    const config = await parseConfig(args.slice(1), { HOME: dir });
    assertEquals(config.nodeName, "mokv-2");
    assertEquals(config.advertiseAddr, fqdn("mokv-2"));
    assertEquals(config.bindAddr, { host: "0.0.0.0", port: 8401 });
    assertEquals(config.bootstrapExpect, 3);
    assertEquals(config.bootstrap, false);
    assertEquals(
      config.startJoinAddrs.map((a) => `${a.host}:${a.port}`).join(","),
      SEEDS,
      "parsed join list",
    );
    assertEquals(config.dataDir, dir);
    assertEquals(config.rpcPort, 8400);
    assertEquals(config.metricsPort, 4000);
    assertEquals(config.gossipKeyring.length, 1, "the gossip key is used");
    assertEquals(config.tls.mode, "insecure");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cluster domain, gossip port, expect and the gossip key follow the environment", async () => {
  const args = await dryRun("store-4", {
    MOKV_SERVICE: "store",
    MOKV_CLUSTER_DOMAIN: "example.internal",
    MOKV_GOSSIP_PORT: "9401",
    MOKV_BOOTSTRAP_EXPECT: "5",
    MOKV_GOSSIP_KEY_FILE: "",
  });
  const seeds = [0, 1, 2, 3, 4].map((i) =>
    `store-${i}.store.${NAMESPACE}.svc.example.internal:9401`
  );
  assertEquals(flagValue(args, "start-join-addrs"), seeds.join(","));
  assertEquals(flagValue(args, "bootstrap-expect"), "5");
  assertEquals(
    flagValue(args, "advertise-addr"),
    `store-4.store.${NAMESPACE}.svc.example.internal`,
  );
  assertEquals(flagValue(args, "bind-addr"), "0.0.0.0:9401");
  assertEquals(flagValue(args, "gossip-key"), undefined, "no key, no --gossip-key");
  assertEquals(flagValue(args, "gossip-key-file"), undefined, "no key, no --gossip-key-file");
});

Deno.test("a gossip key given as MOKV_GOSSIP_KEY goes to a private file, never into argv", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mokv_entrypoint_" });
  try {
    const args = await dryRun("mokv-1", {
      MOKV_GOSSIP_KEY_FILE: "",
      MOKV_GOSSIP_KEY: GOSSIP_KEY,
      TMPDIR: dir,
    });
    assert_(!args.some((a) => a.includes(GOSSIP_KEY)), "the key is not in argv");
    const keyFile = flagValue(args, "gossip-key-file");
    assertEquals(keyFile, `${dir}/mokv-gossip.key`);
    assertEquals((await Deno.readTextFile(keyFile!)).trim(), GOSSIP_KEY);
    assertEquals((await Deno.stat(keyFile!)).mode! & 0o077, 0, "readable by the owner only");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("without dry-run the script execs the executable with the same arguments", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mokv_entrypoint_" });
  try {
    const fake = `${dir}/fake-mokv`;
    await Deno.writeTextFile(fake, `#!/usr/bin/env bash\nprintf '%s\\n' "$@" > "${dir}/args"\n`);
    await Deno.chmod(fake, 0o755);
    const expected = await dryRun("mokv-1", { MOKV_BIN: fake });
    const result = await runScript(SCRIPT, podEnv("mokv-1", { MOKV_BIN: fake, MOKV_DRY_RUN: "0" }));
    assertEquals(result.code, 0, result.stderr);
    const got = (await Deno.readTextFile(`${dir}/args`)).split("\n").slice(0, -1);
    assertEquals(got, expected.slice(1));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a wrong environment stops the script with one clear line", async () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ["no ordinal", podEnv("mokv"), /not a StatefulSet pod name/],
    ["no namespace", podEnv("mokv-0", { MOKV_NAMESPACE: "" }), /MOKV_NAMESPACE must be set/],
    ["no service", podEnv("mokv-0", { MOKV_SERVICE: "" }), /MOKV_SERVICE must be set/],
    ["expect 0", podEnv("mokv-0", { MOKV_BOOTSTRAP_EXPECT: "0" }), /positive integer/],
    ["bad port", podEnv("mokv-0", { MOKV_GOSSIP_PORT: "70000" }), /port number/],
  ];
  for (const [what, env, message] of cases) {
    const result: ScriptResult = await runScript(SCRIPT, env);
    assertEquals(result.code, 2, `${what}: exit code`);
    assert_(message.test(result.stderr), `${what}: stderr ${JSON.stringify(result.stderr)}`);
    assertEquals(result.stdout, "", `${what}: nothing on stdout`);
  }
});
