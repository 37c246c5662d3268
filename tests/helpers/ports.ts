/**
 * Ports for test processes that cannot collide. Linux hands out ephemeral ports (outgoing
 * connections, `port: 0` listeners) from 32768 up, so a port found free there by listening
 * and closing may be taken by any outgoing connection before a node binds it. These come from
 * a range below the ephemeral one, each handed out once per test process, starting at a
 * base derived from the process id so two test processes on one machine rarely overlap; each
 * is checked free for both TCP and UDP (a node's gossip port is UDP) before it is returned.
 */

/** First and last port of the range handed out (below Linux's ephemeral 32768–60999). */
const RANGE_FIRST = 20_000;
const RANGE_LAST = 32_000;
const RANGE_SIZE = RANGE_LAST - RANGE_FIRST;

let next = RANGE_FIRST + (Deno.pid * 397) % RANGE_SIZE;
let handedOut = 0;

function isFree(port: number): boolean {
  try {
    const l = Deno.listen({ hostname: "127.0.0.1", port });
    l.close();
  } catch {
    return false;
  }
  try {
    const u = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port });
    u.close();
  } catch {
    return false;
  }
  return true;
}

/** A port on 127.0.0.1 free for TCP and UDP, never handed out before in this process. */
export function reservePort(): number {
  for (let tries = 0; tries < 1000; tries++) {
    if (handedOut >= RANGE_SIZE) throw new Error("test port range exhausted");
    const port = next;
    next = next >= RANGE_LAST ? RANGE_FIRST : next + 1;
    handedOut++;
    if (isFree(port)) return port;
  }
  throw new Error("no free test port in 1000 tries");
}
