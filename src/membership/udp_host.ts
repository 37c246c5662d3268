/**
 * The UDP host of the SWIM core: owns the socket (`Deno.listenDatagram`, needs
 * `--unstable-net`), the tick timer and the keyring, feeds every datagram to the core, sends
 * what the core hands out and delivers membership events to a callback. Datagrams larger
 * than {@link MAX_DATAGRAM_BYTES} are dropped before anything decrypts or decodes them;
 * malformed datagrams, datagrams no key authenticates and replayed ones are dropped and
 * counted; the node keeps working.
 */
import { ConfigError } from "../errors.ts";
import { SeededRng } from "../rng.ts";
import { formatHostPort, parseHostPort } from "./addr.ts";
import { decodeMessage, encodeMessage, MAX_DATAGRAM_BYTES } from "./codec.ts";
import type { SwimConfig } from "./config.ts";
import { GossipDecodeError, GossipReplayError } from "./errors.ts";
import { Keyring } from "./keyring.ts";
import { Swim } from "./swim.ts";
import type { Addr, MemberEvent, MemberState, Outbound, Tags } from "./types.ts";

/**
 * How to start a {@link GossipHost}. The SWIM tunables (all in ticks) default to
 * `DEFAULT_SWIM_CONFIG`: probePeriodTicks 10, probeTimeoutTicks 5, indirectChecks 3,
 * suspicionMult 4, retransmitMult 4, gossipIntervalTicks 2, pushPullIntervalTicks 300,
 * reconnectIntervalTicks 300, reapTicks 864000 (24 h at 100 ms).
 */
export interface GossipHostOptions extends Partial<SwimConfig> {
  /** Unique member name (the node id). */
  readonly name: string;
  /** UDP address to listen on, `"host:port"`; port 0 picks a free port. */
  readonly bindAddr: string;
  /** Address others reach this node at; defaults to the bound address (not a wildcard one). */
  readonly advertiseAddr?: string;
  /** Tags to advertise: mokv sets `id` and `rpc_addr`. */
  readonly tags: Tags;
  /** Gossip addresses to join through; empty (or only this node) starts a new cluster. */
  readonly seeds: readonly string[];
  /** Raw 32-byte AES-256-GCM keys, primary first; without keys datagrams are plaintext. */
  readonly keys?: readonly Uint8Array[];
  /** Real time of one tick in ms (default 100). */
  readonly tickMs?: number;
  /** Seed of the core's random generator (default: drawn from the platform CSPRNG). */
  readonly seed?: number;
  /** Receives every membership event; exceptions it throws are counted and ignored. */
  readonly onEvent?: (event: MemberEvent) => void;
  /** Longest `leave()` waits for the leave to be gossiped, in ms (default 2000). */
  readonly leaveTimeoutMs?: number;
}

/** A member as the rest of mokv needs it. */
export interface MemberInfo {
  readonly name: string;
  /** Gossip address. */
  readonly addr: Addr;
  /** gRPC/Raft address from the `rpc_addr` tag ("" when absent). */
  readonly rpcAddr: string;
  readonly state: MemberState;
  readonly incarnation: number;
  readonly tags: Tags;
}

/** Counters of one host, for the metrics endpoint. */
export interface GossipStats {
  readonly datagramsReceived: number;
  readonly datagramsSent: number;
  /** Datagrams dropped because they did not decode. */
  readonly decodeErrors: number;
  /** Datagrams dropped because no key of the keyring authenticated them. */
  readonly authFailures: number;
  /** Sealed datagrams dropped as replays (outside the window, or seen before). */
  readonly replays: number;
  /** Datagrams dropped unread because they were larger than `MAX_DATAGRAM_BYTES`. */
  readonly oversized: number;
  /** Sends the socket refused. */
  readonly sendErrors: number;
  /** Exceptions thrown by the event handler. */
  readonly handlerErrors: number;
  /** Probes started by this node. */
  readonly probes: number;
  /** Probes that got no ack, direct or indirect, within a probe period. */
  readonly probeFailures: number;
  /** Times this node refuted its own suspicion or death. */
  readonly refutes: number;
  /** New members ignored because the member table was full (`maxMembers`). */
  readonly membersRejected: number;
  /** Updates dropped because their incarnation was too far ahead to be genuine. */
  readonly staleOrForgedUpdates: number;
  /** Ping-reqs and full-state requests refused because they came from an unproven address. */
  readonly unprovenRequests: number;
}

/** One gossip member on a UDP socket. Start it with {@link GossipHost.start}. */
export class GossipHost {
  readonly #conn: Deno.DatagramConn;
  readonly #core: Swim;
  readonly #keyring: Keyring | undefined;
  readonly #onEvent: ((event: MemberEvent) => void) | undefined;
  readonly #leaveTimeoutMs: number;
  readonly #tickMs: number;
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #receiving: Promise<void>;
  readonly #sending = new Set<Promise<void>>();
  #closed = false;
  #counts = {
    datagramsReceived: 0,
    datagramsSent: 0,
    decodeErrors: 0,
    authFailures: 0,
    replays: 0,
    oversized: 0,
    sendErrors: 0,
    handlerErrors: 0,
  };

  private constructor(
    conn: Deno.DatagramConn,
    core: Swim,
    keyring: Keyring | undefined,
    options: GossipHostOptions,
    tickMs: number,
  ) {
    this.#conn = conn;
    this.#core = core;
    this.#keyring = keyring;
    this.#onEvent = options.onEvent;
    this.#leaveTimeoutMs = options.leaveTimeoutMs ?? 2000;
    this.#tickMs = tickMs;
    this.#receiving = this.#receiveLoop();
    this.#timer = setInterval(() => {
      if (this.#closed) return;
      this.#core.tick();
      this.#flush();
    }, tickMs);
    this.#core.join(options.seeds);
    this.#flush();
  }

  /**
   * Binds the socket, builds the core and starts joining `seeds`. Throws `ConfigError` on bad
   * options and the socket's error when the address cannot be bound.
   */
  static async start(options: GossipHostOptions): Promise<GossipHost> {
    const tickMs = options.tickMs ?? 100;
    if (!Number.isFinite(tickMs) || tickMs <= 0) {
      throw new ConfigError("tickMs", `must be a positive number, got ${tickMs}`);
    }
    const bind = parseHostPort(options.bindAddr, "bind-addr");
    if (options.advertiseAddr !== undefined) parseHostPort(options.advertiseAddr, "advertise-addr");
    for (const s of options.seeds) parseHostPort(s, "start-join-addrs");
    const keyring = options.keys && options.keys.length > 0
      ? await Keyring.create(options.keys)
      : undefined;
    const { name, bindAddr: _b, advertiseAddr: _a, tags, seeds: _s, keys: _k, ...rest } = options;
    const { tickMs: _t, seed, onEvent: _e, leaveTimeoutMs: _l, ...config } = rest;
    const conn = Deno.listenDatagram({
      transport: "udp",
      hostname: bind.hostname,
      port: bind.port,
    });
    try {
      const local = conn.addr as Deno.NetAddr;
      let advertise = options.advertiseAddr;
      if (advertise === undefined) {
        if (local.hostname === "0.0.0.0" || local.hostname === "::") {
          throw new ConfigError("advertise-addr", "is required when bind-addr is a wildcard");
        }
        advertise = formatHostPort(local.hostname, local.port);
      }
      const core = new Swim({
        name,
        addr: advertise,
        tags,
        rng: new SeededRng(seed ?? crypto.getRandomValues(new Uint32Array(1))[0]),
        config,
      });
      return new GossipHost(conn, core, keyring, options, tickMs);
    } catch (e) {
      conn.close();
      throw e;
    }
  }

  /** This member's name. */
  get name(): string {
    return this.#core.name;
  }

  /** The gossip address this member advertises (with the real port when bound to port 0). */
  get addr(): Addr {
    return this.#core.addr;
  }

  /** The keyring, to rotate keys at run time; undefined when gossip is plaintext. */
  get keyring(): Keyring | undefined {
    return this.#keyring;
  }

  /** Every known member, this one included, until failed and left ones are reaped. */
  members(): MemberInfo[] {
    return this.#core.members().map((m) => ({
      name: m.name,
      addr: m.addr,
      rpcAddr: m.tags["rpc_addr"] ?? "",
      state: m.state,
      incarnation: m.incarnation,
      tags: m.tags,
    }));
  }

  /** Counters since start. */
  stats(): GossipStats {
    const core = this.#core.stats();
    return { ...this.#counts, ...core };
  }

  /** Joins (again) through `seeds`, retrying with backoff until one answers. */
  join(seeds: readonly string[]): void {
    for (const s of seeds) parseHostPort(s, "start-join-addrs");
    this.#core.join(seeds);
    this.#flush();
  }

  /** Replaces this member's tags and gossips them with a higher incarnation. */
  setTags(tags: Tags): void {
    this.#core.setTags(tags);
    this.#flush();
  }

  /**
   * Leaves the cluster on purpose: others will see this member `left`, not failed. Resolves
   * once the news has been gossiped out (or after `leaveTimeoutMs`); call `close()` after.
   */
  async leave(): Promise<void> {
    if (this.#closed) return;
    this.#core.leave();
    this.#flush();
    const deadline = Date.now() + this.#leaveTimeoutMs;
    while (!this.#closed && this.#core.pendingBroadcasts > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, this.#tickMs));
    }
    await Promise.allSettled([...this.#sending]);
  }

  /** Stops the timer and closes the socket; pending sends are awaited, nothing is left running. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    await Promise.allSettled([...this.#sending]);
    this.#conn.close();
    await this.#receiving;
  }

  async #receiveLoop(): Promise<void> {
    while (!this.#closed) {
      let data: Uint8Array;
      let from: Deno.Addr;
      try {
        [data, from] = await this.#conn.receive();
      } catch {
        if (this.#closed) return;
        continue;
      }
      this.#counts.datagramsReceived++;
      await this.#handle(data, from as Deno.NetAddr);
    }
  }

  async #handle(data: Uint8Array, from: Deno.NetAddr): Promise<void> {
    if (data.length > MAX_DATAGRAM_BYTES) {
      this.#counts.oversized++;
      return;
    }
    let plain = data;
    if (this.#keyring) {
      try {
        plain = await this.#keyring.open(data);
      } catch (e) {
        if (e instanceof GossipReplayError) this.#counts.replays++;
        else this.#counts.authFailures++;
        return;
      }
    }
    let msg;
    try {
      msg = decodeMessage(plain);
    } catch (e) {
      if (!(e instanceof GossipDecodeError)) throw e;
      this.#counts.decodeErrors++;
      return;
    }
    if (this.#closed) return;
    this.#core.step(formatHostPort(from.hostname, from.port), msg);
    this.#flush();
  }

  #flush(): void {
    if (!this.#core.hasReady()) return;
    const { messages, events } = this.#core.ready();
    for (const out of messages) {
      const p = this.#send(out).finally(() => this.#sending.delete(p));
      this.#sending.add(p);
    }
    for (const e of events) {
      try {
        this.#onEvent?.(e);
      } catch {
        this.#counts.handlerErrors++;
      }
    }
  }

  async #send(out: Outbound): Promise<void> {
    try {
      let bytes = encodeMessage(out.msg);
      if (this.#keyring) bytes = await this.#keyring.seal(bytes);
      if (this.#closed) return;
      const to = parseHostPort(out.to, "addr");
      await this.#conn.send(bytes, { transport: "udp", hostname: to.hostname, port: to.port });
      this.#counts.datagramsSent++;
    } catch {
      this.#counts.sendErrors++;
    }
  }
}
