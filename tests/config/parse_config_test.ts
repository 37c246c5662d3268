import {
  CONFIG_KEYS,
  configHelp,
  maxValueBytesLimit,
  type NodeConfig,
  parseConfig,
} from "../../src/config/mod.ts";
import { MAX_FRAME_BYTES } from "../../src/replication/_frame.ts";
import { ConfigError } from "../../src/errors.ts";
import { makeTestCerts, type TestCerts } from "../helpers/certs.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function assertEquals(actual: unknown, expected: unknown, what: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

/** Runs `fn` and returns the ConfigError it throws; fails the test if it throws nothing else. */
async function configError(fn: () => Promise<unknown>): Promise<ConfigError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw new Error(`expected ConfigError, got ${err}`);
  }
  throw new Error("expected ConfigError, got success");
}

const ENV = { HOME: "/home/op" };

function tlsFlags(c: TestCerts): string[] {
  return [
    "--server-tls-cert-file",
    c.server.cert,
    "--server-tls-key-file",
    c.server.key,
    "--server-tls-ca-file",
    c.ca,
  ];
}

Deno.test("defaults are documented values when only insecure is given", async () => {
  const cfg = await parseConfig(["--insecure", "--node-name", "n1"], ENV);
  assertEquals(cfg.dataDir, "/home/op/.mokv/data/n1", "dataDir");
  assertEquals(cfg.bindAddr, { host: "127.0.0.1", port: 8401 }, "bindAddr");
  assertEquals(cfg.rpcPort, 8400, "rpcPort");
  assertEquals(cfg.advertiseAddr, "127.0.0.1", "advertiseAddr");
  assertEquals(cfg.startJoinAddrs, [], "startJoinAddrs");
  assertEquals([cfg.bootstrap, cfg.bootstrapExpect], [false, 0], "bootstrap");
  assertEquals(cfg.acl, undefined, "acl");
  assertEquals(cfg.tls, { mode: "insecure" }, "tls");
  assertEquals(cfg.metricsPort, 4000, "metricsPort");
  assertEquals(cfg.gossipKeyring.length, 0, "gossipKeyring");
  assertEquals([cfg.logLevel, cfg.logFormat], ["info", "auto"], "log");
  assertEquals([cfg.maxKeyBytes, cfg.maxValueBytes], [4096, 1048576], "limits");
  assertEquals(cfg.snapshotEntries, 100_000, "snapshotEntries");
  assertEquals(cfg.memoryLogEntries, 5000, "memoryLogEntries");
  assertEquals(cfg.mallocTrimIntervalMs, 10_000, "mallocTrimIntervalMs");
  assertEquals(
    [cfg.raftTickMs, cfg.raftElectionTicks, cfg.raftHeartbeatTicks, cfg.gossipTickMs],
    [50, 6, 1, 100],
    "timing",
  );
  assertEquals(
    [cfg.leaveOnTerminate, cfg.deadServerCleanup, cfg.deadServerMinQuorum],
    [false, false, 3],
    "membership",
  );
  assert(Object.isFrozen(cfg), "the config must be frozen");
});

Deno.test("node-name defaults to the host name", async () => {
  const cfg = await parseConfig(["--insecure"], ENV);
  assertEquals(cfg.nodeName, Deno.hostname(), "nodeName");
});

Deno.test("flags in both spellings, bare booleans and lists", async () => {
  const cfg = await parseConfig([
    "--insecure=true",
    "--node-name=n2",
    "--bind-addr",
    "[::1]:9401",
    "--rpc-port=9400",
    "--start-join-addrs",
    "127.0.0.1:8401, 127.0.0.1:8402",
    "--start-join-addrs=node-3:8401",
    "--bootstrap",
    "--leave-on-terminate",
    "false",
    "--dead-server-cleanup",
    "--log-level",
    "DEBUG",
    "--raft-election-ticks",
    "10",
    "--raft-heartbeat-ticks",
    "2",
  ], ENV);
  assertEquals(cfg.nodeName, "n2", "nodeName");
  assertEquals(cfg.bindAddr, { host: "::1", port: 9401 }, "bindAddr");
  assertEquals(cfg.advertiseAddr, "::1", "advertiseAddr follows bind-addr");
  assertEquals(cfg.rpcPort, 9400, "rpcPort");
  assertEquals(cfg.startJoinAddrs, [
    { host: "127.0.0.1", port: 8401 },
    { host: "127.0.0.1", port: 8402 },
    { host: "node-3", port: 8401 },
  ], "startJoinAddrs");
  assertEquals(
    [cfg.bootstrap, cfg.leaveOnTerminate, cfg.deadServerCleanup],
    [true, false, true],
    "booleans",
  );
  assertEquals(cfg.logLevel, "debug", "logLevel");
  assertEquals([cfg.raftElectionTicks, cfg.raftHeartbeatTicks], [10, 2], "ticks");
});

Deno.test("YAML file supplies values and flags win over it; paths expand", async () => {
  const certs = await makeTestCerts();
  const dir = await Deno.makeTempDir({ prefix: "mokv-config-" });
  try {
    const file = `${dir}/node.yaml`;
    await Deno.writeTextFile(
      file,
      [
        `data-dir: "$HOME/data"`,
        `node-name: "from-file"`,
        `bind-addr: "127.0.0.1:7401"`,
        `rpc-port: 7400`,
        `metrics-port: 0`,
        `start-join-addrs: ["127.0.0.1:8401", "127.0.0.1:8402"]`,
        `bootstrap-expect: 3`,
        `acl-model-file: ${certs.model}`,
        `acl-policy-file: ${certs.policy}`,
        `server-tls-cert-file: ${certs.server.cert}`,
        `server-tls-key-file: ${certs.server.key}`,
        `server-tls-ca-file: ${certs.ca}`,
        `log-level: "INFO"`,
        `log-format: json`,
        `snapshot-entries: 100`,
        `memory-log-entries: 0`,
        `max-value-bytes: 2048`,
        `malloc-trim-interval-ms: 0`,
      ].join("\n"),
    );
    const cfg = await parseConfig([
      "--config-file",
      file,
      "--rpc-port",
      "7500",
      "--data-dir",
      "~/other",
    ], { HOME: dir });
    assertEquals(cfg.dataDir, `${dir}/other`, "flag data-dir with ~ wins");
    assertEquals(cfg.nodeName, "from-file", "nodeName");
    assertEquals(cfg.rpcPort, 7500, "flag rpc-port wins");
    assertEquals(cfg.bindAddr, { host: "127.0.0.1", port: 7401 }, "bindAddr");
    assertEquals(cfg.metricsPort, 0, "metricsPort");
    assertEquals(cfg.startJoinAddrs.length, 2, "startJoinAddrs");
    assertEquals(cfg.bootstrapExpect, 3, "bootstrapExpect");
    assertEquals(cfg.acl, { modelFile: certs.model, policyFile: certs.policy }, "acl");
    assertEquals([cfg.logLevel, cfg.logFormat], ["info", "json"], "log");
    assertEquals([cfg.snapshotEntries, cfg.maxValueBytes], [100, 2048], "numbers");
    assertEquals(cfg.memoryLogEntries, 0, "memory-log-entries 0 keeps no command in memory");
    assertEquals(cfg.mallocTrimIntervalMs, 0, "malloc-trim-interval-ms 0 turns it off");
    const tls = cfg.tls;
    assert(tls.mode === "mutual", "tls must be mutual");
    assertEquals(tls.server, {
      certFile: certs.server.cert,
      keyFile: certs.server.key,
      caFile: certs.ca,
    }, "server files");
    assertEquals(tls.peer, tls.server, "peer files default to the server files");
    assertEquals(tls.peerAllowedCns, ["mokv-server"], "peer CNs default to the peer cert CN");

    const fromFileDir = await parseConfig(["--config-file", file], { HOME: dir });
    assertEquals(fromFileDir.dataDir, `${dir}/data`, "$HOME expands in the file");
    assertEquals(fromFileDir.rpcPort, 7400, "file rpc-port");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mutual TLS: separate peer files and explicit allowed CNs", async () => {
  const certs = await makeTestCerts();
  const cfg = await parseConfig([
    ...tlsFlags(certs),
    "--peer-tls-cert-file",
    certs.rootClient.cert,
    "--peer-tls-key-file",
    certs.rootClient.key,
    "--peer-allowed-cns",
    "mokv-server,root",
  ], ENV);
  assert(cfg.tls.mode === "mutual", "tls must be mutual");
  assertEquals(cfg.tls.peer.certFile, certs.rootClient.cert, "peer cert");
  assertEquals(cfg.tls.peer.caFile, certs.ca, "peer CA defaults to the server CA");
  assertEquals(cfg.tls.peerAllowedCns, ["mokv-server", "root"], "allowed CNs");

  const derived = await parseConfig([
    ...tlsFlags(certs),
    "--peer-tls-cert-file",
    certs.rootClient.cert,
    "--peer-tls-key-file",
    certs.rootClient.key,
  ], ENV);
  assert(derived.tls.mode === "mutual", "tls must be mutual");
  assertEquals(derived.tls.peerAllowedCns, ["root"], "allowed CN from the peer cert");
});

Deno.test("gossip key and keyring: the key encrypts, the ring decrypts", async () => {
  const a = btoa(String.fromCharCode(...new Uint8Array(32).fill(1)));
  const b = btoa(String.fromCharCode(...new Uint8Array(32).fill(2)));
  const onlyRing = await parseConfig(["--insecure", "--gossip-keyring", `${b},${a}`], ENV);
  assertEquals(onlyRing.gossipKeyring.map((k) => k[0]), [2, 1], "ring order kept");
  const both = await parseConfig([
    "--insecure",
    "--gossip-key",
    a,
    "--gossip-keyring",
    `${b},${a}`,
  ], ENV);
  assertEquals(both.gossipKeyring.map((k) => k[0]), [1, 2], "gossip-key first, no duplicate");
  assert(both.gossipKeyring.every((k) => k.length === 32), "keys are 32 bytes");
});

Deno.test("errors name the key in one line", async (t) => {
  const certs = await makeTestCerts();
  const cases: [string, string[], string][] = [
    [
      "bad int",
      ["--insecure", "--rpc-port", "x"],
      'config rpc-port: must be an integer in 1..65535, got "x"',
    ],
    [
      "port too big",
      ["--insecure", "--rpc-port=70000"],
      "config rpc-port: must be an integer in 1..65535",
    ],
    ["unknown flag", ["--insecure", "--rpc-prot", "1"], "config rpc-prot: unknown key"],
    ["missing value", ["--insecure", "--node-name"], "config node-name: missing value"],
    ["positional", ["--insecure", "serve"], "config serve: unexpected argument"],
    [
      "bad bool",
      ["--insecure", "--bootstrap=yes"],
      'config bootstrap: must be true or false, got "yes"',
    ],
    [
      "bad enum",
      ["--insecure", "--log-level", "loud"],
      "config log-level: must be one of debug, info, warn, error",
    ],
    [
      "bad host:port",
      ["--insecure", "--bind-addr", "nohost"],
      "config bind-addr: must be host:port",
    ],
    [
      "bad join",
      ["--insecure", "--start-join-addrs", "a:1,b"],
      "config start-join-addrs: must be host:port",
    ],
    [
      "negative expect",
      ["--insecure", "--bootstrap-expect", "-1"],
      "config bootstrap-expect: must be an integer in 0..99",
    ],
    [
      "both bootstraps",
      ["--insecure", "--bootstrap", "--bootstrap-expect", "3"],
      "config bootstrap-expect: cannot be combined",
    ],
    [
      "heartbeat too slow",
      ["--insecure", "--raft-heartbeat-ticks", "6"],
      "config raft-heartbeat-ticks: must be less than raft-election-ticks",
    ],
    [
      "bad gossip key",
      ["--insecure", "--gossip-key", "c2hvcnQ="],
      "config gossip-key: must decode to 32 bytes, got 5",
    ],
    [
      "not base64",
      ["--insecure", "--gossip-keyring", "!!!"],
      "config gossip-keyring: must be base64",
    ],
    ["no TLS", [], "config server-tls-cert-file: required"],
    ["missing key file", [
      "--server-tls-cert-file",
      certs.server.cert,
      "--server-tls-ca-file",
      certs.ca,
    ], "config server-tls-key-file: required"],
    [
      "missing file",
      ["--insecure", "--acl-model-file", "/nonexistent/model.conf"],
      "config acl-model-file: no such file: /nonexistent/model.conf",
    ],
    [
      "half acl",
      ["--insecure", "--acl-model-file", certs.model],
      "config acl-policy-file: required when acl-model-file is set",
    ],
    [
      "insecure with TLS",
      ["--insecure", ...tlsFlags(certs)],
      "config server-tls-cert-file: cannot be combined with insecure",
    ],
    ["key is not a cert", [
      "--server-tls-cert-file",
      certs.server.key,
      "--server-tls-key-file",
      certs.server.key,
      "--server-tls-ca-file",
      certs.ca,
    ], "config server-tls-cert-file:"],
    ["cert is not a key", [
      "--server-tls-cert-file",
      certs.server.cert,
      "--server-tls-key-file",
      certs.server.cert,
      "--server-tls-ca-file",
      certs.ca,
    ], "config server-tls-key-file:"],
    [
      "metrics on rpc port",
      ["--insecure", "--metrics-port", "8400"],
      "config metrics-port: must differ from rpc-port",
    ],
    [
      "bad node name",
      ["--insecure", "--node-name", "a b"],
      "config node-name: must be 1-63 letters",
    ],
    [
      "missing config file",
      ["--config-file", "/nonexistent.yaml"],
      "config config-file: cannot read /nonexistent.yaml",
    ],
  ];
  for (const [name, args, expected] of cases) {
    await t.step(name, async () => {
      const err = await configError(() => parseConfig(args, ENV));
      assert(err.message.startsWith(expected), `got "${err.message}", want "${expected}..."`);
      assert(!err.message.includes("\n"), `message must be one line: ${err.message}`);
    });
  }
});

Deno.test("file errors: unknown keys, bad types, bad YAML", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mokv-config-" });
  try {
    const cases: [string, string, string][] = [
      ["unknown key", "insecure: true\nrpc_port: 1\n", "config rpc_port: unknown key"],
      [
        "bad type",
        "insecure: true\nrpc-port: [1]\n",
        "config rpc-port: must be an integer in 1..65535, got [1]",
      ],
      ["bad bool", "insecure: 1\n", "config insecure: must be true or false, got 1"],
      ["not a mapping", "- a\n- b\n", "config config-file:"],
      ["bad yaml", "insecure: [true\n", "config config-file:"],
      [
        "nested config file",
        "insecure: true\nconfig-file: x.yaml\n",
        "config config-file: is a flag only",
      ],
      [
        "$HOME without HOME",
        "insecure: true\ndata-dir: $HOME/x\n",
        "config data-dir: cannot expand",
      ],
    ];
    for (const [name, text, expected] of cases) {
      await t.step(name, async () => {
        const file = `${dir}/${name.replaceAll(" ", "_")}.yaml`;
        await Deno.writeTextFile(file, text);
        const env = name === "$HOME without HOME" ? {} : ENV;
        const err = await configError(() => parseConfig(["--config-file", file], env));
        assert(err.message.startsWith(expected), `got "${err.message}", want "${expected}..."`);
        assert(!err.message.includes("\n"), `message must be one line: ${err.message}`);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an empty config file means all defaults", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mokv-config-" });
  try {
    await Deno.writeTextFile(`${dir}/empty.yaml`, "# nothing\n");
    const cfg: NodeConfig = await parseConfig(
      ["--config-file", `${dir}/empty.yaml`, "--insecure"],
      ENV,
    );
    assertEquals(cfg.rpcPort, 8400, "rpcPort");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("configHelp lists every key with its default", () => {
  const help = configHelp();
  for (const key of CONFIG_KEYS) {
    const line = help.split("\n").find((l) => l.trimStart().split(/\s/)[0] === `--${key.name}`);
    assert(line !== undefined, `help lacks --${key.name}`);
    assert(line.includes(`[default: ${key.defaultText}]`), `help lacks the default of ${key.name}`);
  }
  for (const name of ["data-dir", "rpc-port", "insecure", "dead-server-min-quorum"]) {
    assert(CONFIG_KEYS.some((k) => k.name === name), `${name} must be documented`);
  }
});

Deno.test("max-value-bytes may not exceed what one Raft peer frame carries", async () => {
  const base = ["--insecure", "--node-name", "n1"];
  const limit = maxValueBytesLimit(4096);
  assertEquals(limit, Math.floor((MAX_FRAME_BYTES - 64 * 1024 - 4096) / 2), "limit");
  const at = await parseConfig([...base, "--max-value-bytes", String(limit)], ENV);
  assertEquals(at.maxValueBytes, limit, "the limit itself is accepted");
  for (const bytes of [limit + 1, 16 * 1024 * 1024, 17 * 1024 * 1024]) {
    const err = await configError(() =>
      parseConfig([...base, "--max-value-bytes", String(bytes)], ENV)
    );
    assertEquals(err.key, "max-value-bytes", "key");
    assert(!err.message.includes("\n"), "one line");
    assert(
      err.message.startsWith(`config max-value-bytes: must be at most ${limit} `) &&
        err.message.endsWith(`got ${bytes}`),
      err.message,
    );
  }
  // larger keys leave less room for values
  const err = await configError(() =>
    parseConfig([...base, "--max-key-bytes", "65536", "--max-value-bytes", String(limit)], ENV)
  );
  assertEquals(err.key, "max-value-bytes", "key with large keys");
});

Deno.test("quota-bytes: documented 2 GiB default, a positive integer", async () => {
  const base = ["--insecure", "--node-name", "n1"];
  const cfg = await parseConfig(base, ENV);
  assertEquals(cfg.quotaBytes, 2 * 1024 * 1024 * 1024, "default");
  assertEquals(
    CONFIG_KEYS.find((k) => k.name === "quota-bytes")?.defaultText,
    "2147483648",
    "documented default",
  );
  const set = await parseConfig([...base, "--quota-bytes", "1048576"], ENV);
  assertEquals(set.quotaBytes, 1048576, "flag");
  for (const bad of ["0", "-1", "lots"]) {
    const err = await configError(() => parseConfig([...base, "--quota-bytes", bad], ENV));
    assertEquals(err.key, "quota-bytes", `key for ${bad}`);
  }
});

Deno.test("max-connections and max-pending-handshakes: documented defaults, flags reach the config", async () => {
  const base = ["--insecure", "--node-name", "n1"];
  const cfg = await parseConfig(base, ENV);
  assertEquals([cfg.maxConnections, cfg.maxPendingHandshakes], [4096, 256], "defaults");
  const set = await parseConfig(
    [...base, "--max-connections", "100", "--max-pending-handshakes", "10"],
    ENV,
  );
  assertEquals([set.maxConnections, set.maxPendingHandshakes], [100, 10], "flags");
  for (const key of ["max-connections", "max-pending-handshakes"]) {
    const err = await configError(() => parseConfig([...base, `--${key}`, "0"], ENV));
    assertEquals(err.key, key, `key for ${key} 0`);
  }
});

Deno.test("malloc-trim-interval-ms: documented default, 0 turns it off, bad values name the key", async () => {
  const base = ["--insecure", "--node-name", "n1"];
  assertEquals((await parseConfig(base, ENV)).mallocTrimIntervalMs, 10_000, "default");
  assertEquals(
    CONFIG_KEYS.find((k) => k.name === "malloc-trim-interval-ms")?.defaultText,
    "10000",
    "documented default",
  );
  const set = await parseConfig([...base, "--malloc-trim-interval-ms", "0"], ENV);
  assertEquals(set.mallocTrimIntervalMs, 0, "0");
  for (const bad of ["-1", "3600001", "often"]) {
    const err = await configError(() =>
      parseConfig([...base, "--malloc-trim-interval-ms", bad], ENV)
    );
    assertEquals(err.key, "malloc-trim-interval-ms", `key for ${bad}`);
  }
});
