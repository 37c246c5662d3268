/**
 * Regression test for the Deno 2.9.6 HTTP/2 crash (nghttp2 assertion in
 * find_stream_on_goaway_func / "free(): invalid pointer") that a closing client's GOAWAY
 * triggered while another connection was open. The one-port server drops client GOAWAY
 * frames (src/server/http2_guard.ts); without that, this test kills the server most runs.
 */
import * as grpc from "@grpc/grpc-js";
import { KvClient } from "../../src/api/mod.ts";
import { assertEquals } from "../helpers/assert.ts";
import { unary } from "../helpers/cluster.ts";

Deno.test({
  name: "clients that close their channels cannot crash the server (GOAWAY guard)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./_guard_server.ts", import.meta.url).pathname],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    const port = Number(new TextDecoder().decode(value).trim());
    reader.releaseLock();
    const idle = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      for (let round = 0; round < 4; round++) {
        const c = new KvClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
        for (let i = 0; i < 150; i++) {
          await unary((cb) => c.Set({ key: `k${i}`, value: new Uint8Array(8) }, cb));
        }
        c.close();
        await new Promise((r) => setTimeout(r, 100));
      }
      const c = new KvClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      const res = await unary<{ key: string }>((cb) => c.Get({ key: "k7" }, cb));
      assertEquals(res.key, "k7");
      c.close();
    } finally {
      idle.close();
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
      await child.stderr.cancel().catch(() => {});
    }
  },
});
