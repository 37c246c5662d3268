/**
 * List of a big store (default 1 GiB: 16,384 values of 64 KiB) to a slow client, with the
 * serving node in its own process: prints the node's RSS before the List and the most it
 * reached while streaming (sampled from /proc every 50 ms). Run once by hand, not in the suite:
 *
 *   deno run --allow-all bench/list_memory.ts [GiB=1] [valueKiB=64]
 *
 * The client stops reading for 50 ms after every 8 MiB, so the node must hold back.
 */
import * as grpc from "@grpc/grpc-js";
import { KvClient } from "../src/api/mod.ts";
import type { GetResponse } from "../src/api/mod.ts";
import { createGrpcServer, listenPort, LocalBackend } from "../src/server/mod.ts";

const gib = Number(Deno.args[0] ?? 1);
const valueKiB = Number(Deno.args[1] ?? 64);

if (Deno.env.get("MOKV_LIST_MEMORY_SERVER") === "1") {
  // The node: fill, listen, print the port, serve until killed.
  const backend = new LocalBackend({ nodeId: "n1" });
  const keys = Math.round(gib * 1024 * 1024 / valueKiB);
  for (let i = 0; i < keys; i++) {
    const value = new Uint8Array(valueKiB * 1024).fill(i & 0xff);
    await backend.apply({
      type: "set",
      key: `k/${String(i).padStart(8, "0")}`,
      value,
      timeMs: 0,
      clockSource: "bench",
      maxValueBytes: 1 << 20,
      quotaBytes: 4 * 2 ** 30,
    });
  }
  const server = createGrpcServer({ backend, quotaBytes: 4 * 2 ** 30 });
  const port = await listenPort({
    host: "127.0.0.1",
    port: 0,
    grpcServer: server,
    onRaftSocket: (s) => s.destroy(),
    handshakeTimeoutMs: 1000,
  });
  console.log(`PORT ${port.port} KEYS ${keys}`);
} else {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", new URL(import.meta.url).pathname, String(gib), String(valueKiB)],
    env: { MOKV_LIST_MEMORY_SERVER: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const rssOf = () => {
    const status = Deno.readTextFileSync(`/proc/${child.pid}/status`);
    return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) * 1024;
  };
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!/PORT \d+ KEYS \d+/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the node exited");
      text += value;
    }
    const [, port, keys] = /PORT (\d+) KEYS (\d+)/.exec(text)!;
    await new Promise((r) => setTimeout(r, 2000)); // let the fill's garbage settle
    const before = rssOf();
    let most = before;
    const sampler = setInterval(() => (most = Math.max(most, rssOf())), 50);
    const kv = new KvClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const startMs = performance.now();
    let received = 0;
    let bytes = 0;
    let pausedAt = 0;
    const stream = kv.List({});
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (item: GetResponse) => {
        received++;
        bytes += item.value.length;
        if (bytes - pausedAt >= 8 * 1024 * 1024) {
          pausedAt = bytes;
          stream.pause();
          setTimeout(() => stream.resume(), 50);
        }
      });
      stream.on("error", reject);
      stream.on("end", resolve);
    });
    clearInterval(sampler);
    kv.close();
    const mib = (n: number) => (n / 2 ** 20).toFixed(0);
    console.log(
      `listed ${received} of ${keys} keys, ${mib(bytes)} MiB in ${
        ((performance.now() - startMs) / 1000).toFixed(1)
      } s to a client pausing 50 ms every 8 MiB`,
    );
    console.log(
      `node RSS: ${mib(before)} MiB before, at most ${mib(most)} MiB while streaming (+${
        mib(most - before)
      } MiB)`,
    );
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}
