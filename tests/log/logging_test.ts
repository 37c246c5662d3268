import { configureLogging, getLogger, resetLogging } from "../../src/log/mod.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

type Line = Record<string, unknown>;

/** Configures logging into an array for the duration of `fn`, then resets it. */
function capture(
  options: { level: "debug" | "info" | "warn" | "error"; format: "json" | "text" | "auto" },
  fn: () => void,
): string[] {
  const lines: string[] = [];
  configureLogging({ ...options, nodeId: "node-a", sink: (line) => lines.push(line) });
  try {
    fn();
  } finally {
    resetLogging();
  }
  return lines;
}

Deno.test("JSON lines carry time, level, node_id, component, message and properties", () => {
  const lines = capture({ level: "debug", format: "json" }, () => {
    const raft = getLogger("raft");
    raft.info("became leader", { term: 7, peers: ["b", "c"] });
    raft.debug("tick");
    getLogger("server").warn("slow request", { method: "Get", durationMs: 12.5 });
    getLogger("gossip").error("decode failed", { error: new Error("bad frame"), bytes: 10n });
  });
  assert(lines.length === 4, `expected 4 lines, got ${lines.length}`);
  const parsed = lines.map((l) => {
    assert(!l.includes("\n"), "a line must not contain a newline");
    return JSON.parse(l) as Line;
  });
  for (const line of parsed) {
    assert(line.node_id === "node-a", `node_id: ${JSON.stringify(line)}`);
    assert(typeof line.time === "string" && !Number.isNaN(Date.parse(line.time)), "time");
    assert(typeof line.message === "string", "message");
  }
  const [leader, tick, slow, failed] = parsed;
  assert(leader.component === "raft" && leader.level === "info", JSON.stringify(leader));
  assert(leader.message === "became leader" && leader.term === 7, JSON.stringify(leader));
  assert(JSON.stringify(leader.peers) === '["b","c"]', "array property");
  assert(tick.level === "debug", "debug level");
  assert(slow.component === "server" && slow.level === "warn" && slow.durationMs === 12.5, "warn");
  assert(failed.level === "error" && failed.bytes === "10", JSON.stringify(failed));
  const error = failed.error as Line;
  assert(error.message === "bad frame" && error.name === "Error", JSON.stringify(error));
});

Deno.test("the level filter drops lower records", () => {
  const lines = capture({ level: "warn", format: "json" }, () => {
    const log = getLogger("kv");
    log.debug("no");
    log.info("no");
    log.warn("yes");
    log.error("yes");
    assert(!log.isEnabled("info") && log.isEnabled("warn"), "isEnabled follows the level");
  });
  assert(lines.length === 2, `expected 2 lines, got ${lines.length}`);
  assert(lines.every((l) => (JSON.parse(l) as Line).message === "yes"), "only warn and error");
});

Deno.test("per-node loggers and with() add fields; reserved names are kept apart", () => {
  const lines = capture({ level: "info", format: "json" }, () => {
    getLogger("raft", "node-b").with({ term: 3 }).info("vote", { level: "x", to: "c" });
    getLogger("raft.log").info("placeholder {index}", { index: 42 });
  });
  const first = JSON.parse(lines[0]) as Line;
  assert(first.node_id === "node-b", "per-node id wins over the configured one");
  assert(first.term === 3 && first.to === "c", "with() and call properties");
  assert(first.level === "info" && first.prop_level === "x", "reserved property renamed");
  const second = JSON.parse(lines[1]) as Line;
  assert(second.component === "raft.log", "sub-components are dotted");
  assert(second.message === "placeholder 42", `placeholders: ${second.message}`);
});

Deno.test("text format is one readable line", () => {
  const lines = capture({ level: "info", format: "text" }, () => {
    getLogger("gossip").warn("member failed", { member: "n3", reason: "no ack" });
  });
  assert(lines.length === 1, "one line");
  const line = lines[0];
  assert(/^\d{4}-\d\d-\d\dT\S+Z WARN {2}node-a gossip: member failed /.test(line), line);
  assert(line.includes("member=n3") && line.includes('reason="no ack"'), line);
});

Deno.test("auto format writes JSON to a non-terminal stderr (subprocess)", async () => {
  const mod = new URL("../../src/log/mod.ts", import.meta.url).href;
  const code = `
    import { configureLogging, getLogger } from ${JSON.stringify(mod)};
    configureLogging({ level: "info", format: "auto", nodeId: "sub-1" });
    getLogger("main").info("started", { rpcPort: 8400 });
    getLogger("main").debug("hidden");
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert(out.success, `subprocess failed: ${stderr}`);
  const lines = stderr.trim().split("\n");
  assert(lines.length === 1, `expected one line, got: ${stderr}`);
  const line = JSON.parse(lines[0]) as Line;
  assert(line.node_id === "sub-1" && line.component === "main", JSON.stringify(line));
  assert(line.message === "started" && line.rpcPort === 8400, JSON.stringify(line));
});
