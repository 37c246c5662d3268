/**
 * The deployment files that can be checked without Docker or Helm: Chart.yaml, values.yaml,
 * example/prometheus.yaml and the Grafana dashboard parse and agree with the node (its keys,
 * default ports, metric names, version), and the chart's templates refer only to values that
 * exist and to files that exist.
 */
import { parse as parseYaml } from "yaml";
import { CONFIG_KEYS } from "../../src/config/mod.ts";
import { createNodeMetrics } from "../../src/metrics/mod.ts";
import { VERSION } from "../../main.ts";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { REPO_ROOT, repoPath } from "./_scripts.ts";

type Yaml = Record<string, unknown>;

async function readYaml(relative: string): Promise<Yaml> {
  const doc: unknown = parseYaml(await Deno.readTextFile(repoPath(relative)));
  assert_(typeof doc === "object" && doc !== null && !Array.isArray(doc), `${relative}: a map`);
  return doc as Yaml;
}

function defaultOf(key: string): string {
  const doc = CONFIG_KEYS.find((k) => k.name === key);
  assert_(doc !== undefined, `no key ${key}`);
  return doc.defaultText;
}

const KNOWN_KEYS = new Set(CONFIG_KEYS.map((k) => k.name));

Deno.test("Chart.yaml is a Helm v2 chart whose appVersion is the node's version", async () => {
  const chart = await readYaml("deploy/mokv/Chart.yaml");
  assertEquals(chart.apiVersion, "v2");
  assertEquals(chart.name, "mokv");
  assertEquals(chart.type, "application");
  assert_(/^\d+\.\d+\.\d+$/.test(String(chart.version)), "version is SemVer");
  assertEquals(chart.appVersion, VERSION);
});

Deno.test("values.yaml parses and its defaults agree with the node and the image", async () => {
  const values = await readYaml("deploy/mokv/values.yaml");
  assertEquals(values.replicas, 3);
  assertEquals(values.bootstrapExpect, null, "bootstrapExpect defaults to replicas");
  const ports = values.ports as Record<string, number>;
  assertEquals(String(ports.rpc), defaultOf("rpc-port"));
  assertEquals(`127.0.0.1:${ports.gossip}`, defaultOf("bind-addr"));
  assertEquals(String(ports.metrics), defaultOf("metrics-port"));
  const storage = values.storage as Yaml;
  assert_(/^\d+(Mi|Gi|Ti)$/.test(String(storage.size)), "storage size is a quantity");
  assert_(typeof (values.tls as Yaml).secretName === "string", "TLS secret name");
  assertEquals((values.gossip as Yaml).secretKey, "gossip-key");
  assert_(typeof values.resources === "object", "resources");
  for (const key of Object.keys(values.config as Yaml)) {
    assert_(KNOWN_KEYS.has(key), `values.config.${key} is not a key of mokv --help`);
  }
  // The Dockerfile exposes the same ports.
  const dockerfile = await Deno.readTextFile(repoPath("Dockerfile"));
  const expose = /^EXPOSE (.+)$/m.exec(dockerfile)?.[1].split(/\s+/);
  assertEquals(expose, [`${ports.rpc}/tcp`, `${ports.gossip}/udp`, `${ports.metrics}/tcp`]);
});

Deno.test("the Dockerfile compiles with the pinned Deno image and the deno.json task", async () => {
  const dockerfile = await Deno.readTextFile(repoPath("Dockerfile"));
  const froms = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
  assertEquals(froms[0], "denoland/deno:2.9.6", "build stage pinned");
  assertEquals(froms.length, 2, "multi-stage");
  assert_(/deno task compile/.test(dockerfile), "runs deno task compile");
  assert_(/COPY --from=build \/app\/mokv /.test(dockerfile), "copies /app/mokv");
  assert_(/^USER 10001/m.test(dockerfile), "runs as a non-root user");
  assert_(/^VOLUME \/var\/lib\/mokv$/m.test(dockerfile), "data volume");
  assert_(/^ENTRYPOINT \["\/usr\/local\/bin\/mokv"\]$/m.test(dockerfile), "entrypoint");
  const deno = JSON.parse(await Deno.readTextFile(repoPath("deno.json")));
  const compile = String(deno.tasks.compile).split(/\s+/);
  for (const flag of ["compile", "--allow-all", "--unstable-kv", "--unstable-net", "main.ts"]) {
    assert_(compile.includes(flag), `deno task compile has ${flag}`);
  }
  assertEquals(compile[compile.indexOf("--output") + 1], "mokv", "output ./mokv = /app/mokv");
  const ignore = (await Deno.readTextFile(repoPath(".dockerignore"))).split("\n");
  for (const needed of ["main.ts", "src", "deno.json", "deno.lock"]) {
    assert_(!ignore.includes(needed), `.dockerignore must keep ${needed}`);
  }
});

/** Every `.Values.a.b` path in the chart's templates. */
async function templateValuePaths(): Promise<Map<string, string>> {
  const paths = new Map<string, string>();
  const dir = repoPath("deploy/mokv/templates");
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile) continue;
    const text = await Deno.readTextFile(`${dir}/${entry.name}`);
    for (const m of text.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
      paths.set(m[1].slice(1), entry.name);
    }
  }
  return paths;
}

Deno.test("the templates use only values that values.yaml defines, and files that exist", async () => {
  const values = await readYaml("deploy/mokv/values.yaml");
  const paths = await templateValuePaths();
  assert_(paths.size > 20, `found ${paths.size} value references`);
  for (const [path, file] of paths) {
    let node: unknown = values;
    for (const part of path.split(".")) {
      assert_(
        typeof node === "object" && node !== null && part in node,
        `${file}: .Values.${path} is not in values.yaml`,
      );
      node = (node as Yaml)[part];
    }
  }
  const dir = repoPath("deploy/mokv/templates");
  for await (const entry of Deno.readDir(dir)) {
    const text = await Deno.readTextFile(`${dir}/${entry.name}`);
    for (const m of text.matchAll(/\.Files\.Get "([^"]+)"/g)) {
      const info = await Deno.stat(repoPath(`deploy/mokv/${m[1]}`));
      assert_(info.isFile, `${entry.name}: ${m[1]} exists`);
    }
  }
  for (const name of ["statefulset.yaml", "service-headless.yaml", "service.yaml"]) {
    await Deno.stat(`${dir}/${name}`);
  }
  const headless = await Deno.readTextFile(`${dir}/service-headless.yaml`);
  assert_(/clusterIP: None/.test(headless), "headless");
  assert_(/publishNotReadyAddresses: true/.test(headless), "publishes not-ready pods");
  const sts = await Deno.readTextFile(`${dir}/statefulset.yaml`);
  assert_(/podManagementPolicy: Parallel/.test(sts), "pods start together");
  assert_(/volumeClaimTemplates:/.test(sts), "one volume per pod");
  assert_(/entrypoint\.sh/.test(sts) && /prestop\.sh/.test(sts), "scripts wired");
});

Deno.test("every template's actions are balanced: each if/with/range/define has its end", async () => {
  const dir = repoPath("deploy/mokv/templates");
  for await (const entry of Deno.readDir(dir)) {
    const text = await Deno.readTextFile(`${dir}/${entry.name}`);
    let depth = 0;
    for (const m of text.matchAll(/\{\{-?\s*(if|with|range|define|end)\b/g)) {
      depth += m[1] === "end" ? -1 : 1;
      assert_(depth >= 0, `${entry.name}: an end without an opening action`);
    }
    assertEquals(depth, 0, `${entry.name}: unclosed actions`);
    const opens = text.split("{{").length;
    assertEquals(opens, text.split("}}").length, `${entry.name}: {{ and }} pair up`);
  }
});

Deno.test("the ConfigMap's config.yaml writes only known keys", async () => {
  const text = await Deno.readTextFile(repoPath("deploy/mokv/templates/configmap.yaml"));
  const start = text.indexOf("config.yaml: |");
  const end = text.indexOf("entrypoint.sh: |");
  assert_(start > 0 && end > start, "config.yaml block");
  const keys = [...text.slice(start, end).matchAll(/^ {4}([a-z][a-z-]*):/gm)].map((m) => m[1]);
  assert_(keys.length >= 10, `found keys ${keys}`);
  for (const key of keys) assert_(KNOWN_KEYS.has(key), `config.yaml key ${key} is unknown`);
  const reserved = /\$reserved := list ([^\n]+?) -\}\}/.exec(text)?.[1];
  assert_(reserved !== undefined, "reserved list");
  for (const m of reserved.matchAll(/"([a-z-]+)"/g)) {
    assert_(KNOWN_KEYS.has(m[1]), `reserved key ${m[1]} is unknown`);
  }
});

Deno.test("example/prometheus.yaml scrapes the three example nodes' metrics ports", async () => {
  const prom = await readYaml("example/prometheus.yaml");
  const jobs = prom.scrape_configs as Yaml[];
  assertEquals(jobs.length, 1);
  assertEquals(jobs[0].metrics_path, "/metrics");
  const targets = (jobs[0].static_configs as Yaml[]).flatMap((c) => c.targets as string[]);
  const expected: string[] = [];
  for (const file of ["config.yaml", "config2.yaml", "config3.yaml"]) {
    const node = await readYaml(`example/${file}`);
    expected.push(`127.0.0.1:${node["metrics-port"]}`);
  }
  assertEquals(targets, expected);
  assertEquals(targets, ["127.0.0.1:4000", "127.0.0.1:4001", "127.0.0.1:4002"]);
});

Deno.test("the Grafana dashboard parses and queries only metrics a node exports", async () => {
  const dash = JSON.parse(await Deno.readTextFile(`${REPO_ROOT}/deploy/grafana-dashboard.json`));
  const metrics = createNodeMetrics({ defaultLabels: { node_id: "n1" } });
  const exported = new Set(
    (await metrics.registry.getMetricsAsJSON()).map((m) => String(m.name)),
  );
  const panels = (dash.panels as Yaml[]).filter((p) => p.type !== "row");
  const ids = (dash.panels as Yaml[]).map((p) => p.id);
  assertEquals(new Set(ids).size, ids.length, "panel ids are unique");
  const used = new Set<string>();
  for (const panel of panels) {
    const grid = panel.gridPos as Record<string, number>;
    assert_(grid.x + grid.w <= 24, `${panel.title} fits the 24-column grid`);
    const targets = panel.targets as Yaml[];
    assert_(targets.length > 0, `${panel.title} has queries`);
    for (const t of targets) {
      for (const m of String(t.expr).matchAll(/\b((?:mokv|process)_[a-z_]+)/g)) {
        const name = m[1].replace(/_(bucket|sum|count)$/, "");
        assert_(exported.has(name), `${panel.title}: ${m[1]} is not exported by a node`);
        used.add(name);
      }
    }
  }
  for (
    const needed of [
      "mokv_raft_role",
      "mokv_raft_term",
      "mokv_raft_commit_index",
      "mokv_raft_proposals_total",
      "mokv_raft_proposal_commit_seconds",
      "mokv_grpc_requests_total",
      "mokv_grpc_request_duration_seconds",
      "mokv_replication_lag_entries",
      "mokv_gossip_members",
      "mokv_deno_kv_commit_seconds",
      "mokv_store_keys",
      "mokv_store_bytes",
    ]
  ) assert_(used.has(needed), `the dashboard shows ${needed}`);
  const vars = (dash.templating.list as Yaml[]).map((v) => v.name);
  assertEquals(vars, ["datasource", "node"]);
});
