/**
 * Ports for test processes that cannot collide. Linux hands out ephemeral ports (outgoing
 * connections, `port: 0` listeners) from 32768 up, so a port found free there by listening
 * and closing may be taken by any outgoing connection before a node binds it. These come from
 * a range below the ephemeral one.
 *
 * A port is handed out once per test process and machine-wide: test files run in parallel
 * (`deno test --parallel` runs each file in its own worker of one process, so module state is
 * per file) and other test processes may run beside them, so each port is claimed by creating
 * `/tmp/mokv-test-ports/<port>` exclusively, holding the claiming process's pid. A claim of a
 * process that is gone is taken over; claims of live processes are skipped; a file releases its
 * claims when it unloads. Each claimed port is also checked free for TCP and UDP (a node's
 * gossip port is UDP) before it is returned.
 */

/** First and last port of the range handed out (below Linux's ephemeral 32768–60999). */
const RANGE_FIRST = 20_000;
const RANGE_LAST = 32_000;
const RANGE_SIZE = RANGE_LAST - RANGE_FIRST + 1;

/** Where the claims live (one file per port, shared by every test process of the machine). */
export const CLAIM_DIR = "/tmp/mokv-test-ports";

// A random start, so files running at once rarely scan the same ports.
let next = RANGE_FIRST + Math.floor(Math.random() * RANGE_SIZE);
let scanned = 0;
const claimed: number[] = [];
let dirReady = false;

globalThis.addEventListener("unload", () => {
  for (const port of claimed) {
    try {
      Deno.removeSync(`${CLAIM_DIR}/${port}`);
    } catch {
      // best effort: a later run takes over the claim of a dead process anyway
    }
  }
});

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

function processAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Creates the claim file of `port` exclusively; false when another live claim holds it. */
function claim(port: number): boolean {
  const path = `${CLAIM_DIR}/${port}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const file = Deno.openSync(path, { write: true, createNew: true });
      file.writeSync(new TextEncoder().encode(String(Deno.pid)));
      file.close();
      return true;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    let owner: number;
    try {
      owner = Number(Deno.readTextFileSync(path));
    } catch {
      continue; // released meanwhile: try to create it again
    }
    // An empty file is a claim being written (or a crash mid-write): leave it.
    if (!(owner > 0) || processAlive(owner)) return false;
    // A dead process's claim: move it aside (only one taker's rename succeeds), then claim.
    const aside = `${path}.stale-${crypto.randomUUID()}`;
    try {
      Deno.renameSync(path, aside);
      Deno.removeSync(aside);
    } catch {
      // someone else took it over first: the create below tells who won
    }
  }
  return false;
}

/** Removes the renamed stale claims this process left (best effort). */
function sweepStale(): void {
  try {
    for (const e of Deno.readDirSync(CLAIM_DIR)) {
      if (e.name.includes(".stale-")) {
        try {
          Deno.removeSync(`${CLAIM_DIR}/${e.name}`);
        } catch {
          // another process swept it
        }
      }
    }
  } catch {
    // the directory is gone: the next claim recreates it
  }
}

/** A port on 127.0.0.1 free for TCP and UDP, claimed for this test file, never handed out twice. */
export function reservePort(): number {
  if (!dirReady) {
    Deno.mkdirSync(CLAIM_DIR, { recursive: true, mode: 0o777 });
    sweepStale();
    dirReady = true;
  }
  for (let tries = 0; tries < 2000; tries++) {
    if (scanned >= RANGE_SIZE) throw new Error("test port range exhausted");
    const port = next;
    next = next >= RANGE_LAST ? RANGE_FIRST : next + 1;
    scanned++;
    if (!claim(port)) continue;
    if (isFree(port)) {
      claimed.push(port);
      return port;
    }
    // Taken by something that is not a test of ours: keep the claim so no one else tries it.
    claimed.push(port);
  }
  throw new Error("no free test port in 2000 tries");
}
