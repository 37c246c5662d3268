/**
 * A TCP proxy on 127.0.0.1 that can lose one answer: once armed, the next bytes a client
 * sends are forwarded to the server, but nothing the server sends back reaches the client,
 * and after `dropAfterMs` both sides of that connection are closed. The request is thus
 * served while the client sees a broken connection, as when a response is lost.
 */

/** A running proxy. */
export interface DropProxy {
  readonly addr: string;
  /** Lose the answer to the next request. */
  arm(): void;
  /** How many answers were lost so far. */
  readonly dropped: number;
  close(): Promise<void>;
}

/** Starts a proxy in front of `target` ("host:port"). */
export function startDropProxy(target: string, dropAfterMs = 300): DropProxy {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.split(":").pop())];
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let armed = false;
  let dropped = 0;
  const tasks: Promise<void>[] = [];
  const pump = async (
    from: Deno.Conn,
    to: Deno.Conn,
    onChunk: () => boolean,
  ): Promise<void> => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        if (!onChunk()) continue;
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
      }
    } catch {
      // a side closed
    }
    for (const c of [from, to]) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
  };
  const accept = (async () => {
    for await (const client of listener) {
      let server: Deno.Conn;
      try {
        server = await Deno.connect({ hostname: host, port });
      } catch {
        client.close();
        continue;
      }
      conns.add(client);
      conns.add(server);
      let swallowing = false;
      tasks.push(pump(client, server, () => {
        if (armed && !swallowing) {
          armed = false;
          swallowing = true;
          dropped++;
          setTimeout(() => {
            for (const c of [client, server]) {
              try {
                c.close();
              } catch {
                // already closed
              }
            }
          }, dropAfterMs);
        }
        return true;
      }));
      tasks.push(pump(server, client, () => !swallowing));
    }
  })();
  return {
    addr: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    arm: () => {
      armed = true;
    },
    get dropped() {
      return dropped;
    },
    close: async () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      await accept.catch(() => {});
      await Promise.all(tasks);
    },
  };
}
