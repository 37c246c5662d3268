/** Small gRPC helpers for the node tests: calls with deadlines, retries across nodes. */
import * as grpc from "@grpc/grpc-js";
import type { TestCluster, TestNode } from "../helpers/cluster.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

type Method = "Get" | "Set" | "Delete" | "GetServers" | "List";

/** One unary api.KV call with a deadline. */
export function kvCall<T>(
  c: TestCluster,
  node: TestNode | string,
  method: Method,
  req: unknown,
  timeoutMs = 3000,
): Promise<T> {
  const client = c.kv(node) as unknown as Record<
    string,
    (
      req: unknown,
      md: grpc.Metadata,
      opts: grpc.CallOptions,
      cb: (e: grpc.ServiceError | null, r: T) => void,
    ) => void
  >;
  return new Promise((resolve, reject) =>
    client[method](
      req,
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutMs },
      (err, res) => err ? reject(err) : resolve(res),
    )
  );
}

/** Sets key=value through `node`. */
export function set(c: TestCluster, node: TestNode | string, key: string, value: string) {
  return kvCall(c, node, "Set", { key, value: enc.encode(value) });
}

/** Reads key through `node` (stale or linearizable); undefined when NOT_FOUND. */
export async function get(
  c: TestCluster,
  node: TestNode | string,
  key: string,
  consistency: "LINEARIZABLE" | "STALE" = "LINEARIZABLE",
): Promise<string | undefined> {
  try {
    const res = await kvCall<{ value: Uint8Array }>(c, node, "Get", { key, consistency });
    return dec.decode(res.value);
  } catch (err) {
    if ((err as grpc.ServiceError).code === grpc.status.NOT_FOUND) return undefined;
    throw err;
  }
}

/** GetServers through `node`. */
export async function servers(c: TestCluster, node: TestNode | string) {
  const res = await kvCall<{ servers: { id: string; is_leader: boolean; is_voter: boolean }[] }>(
    c,
    node,
    "GetServers",
    {},
  );
  return res.servers;
}

/**
 * Writes keys `${prefix}${i}` with `concurrency` writers through the live nodes until
 * `stop()`; a failed write moves that writer to the next node and retries the same key.
 * Records acknowledged keys and the longest time without any acknowledged write.
 */
export function writeLoad(c: TestCluster, prefix: string, concurrency = 8) {
  const acked: string[] = [];
  let stopped = false;
  let lastAck = Date.now();
  let longestGapMs = 0;
  let next = 0;
  let errors = 0;
  const worker = async (w: number) => {
    let nodeIdx = w;
    let key: string | undefined;
    while (!stopped) {
      key ??= `${prefix}${next++}`;
      const live = c.nodes.filter((n) => n.process);
      const node = live[nodeIdx % live.length];
      try {
        await set(c, node, key, `v-${key}`);
        acked.push(key);
        const now = Date.now();
        longestGapMs = Math.max(longestGapMs, now - lastAck);
        lastAck = now;
        key = undefined;
      } catch {
        errors++;
        nodeIdx++;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  const done = Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  return {
    acked,
    get errors() {
      return errors;
    },
    async stop() {
      stopped = true;
      await done;
      return { longestGapMs: Math.max(longestGapMs, 0) };
    },
  };
}
