/**
 * The SWIM membership core (as HashiCorp memberlist runs it), a pure state machine: no
 * sockets, timers, clock or `Math.random()`. The host calls {@link Swim.tick} every tick and
 * {@link Swim.step} for every datagram, then drains {@link Swim.ready} for the datagrams to
 * send and the membership events to deliver. Randomness comes from the injected {@link Rng},
 * so one seed replays a whole cluster exactly.
 *
 * Protocol: every probe period a member is pinged (shuffled round robin); without an ack
 * within the probe timeout, `indirectChecks` others are asked to ping it (ping-req); without
 * any ack by the end of the period it is suspected, and declared failed when the suspicion
 * times out unless it refutes with a higher incarnation. Updates piggyback on pings and acks,
 * are gossiped to a few random members, and a periodic full-state push/pull repairs the rest.
 *
 * Hardening (what an unauthenticated datagram can no longer do; with a gossip key none of it
 * can be sent by an outsider at all):
 * - Incarnations compare as 32-bit serial numbers within {@link INCARNATION_WINDOW}: news
 *   about a member that claims an incarnation more than the window above what this node knows
 *   is dropped, and incarnations wrap instead of saturating, so a member's refutation
 *   (`accused + 1`) always outbids the news it refutes. See {@link isNewerIncarnation}.
 * - The member table holds at most `maxMembers`; new members beyond are ignored and counted.
 * - Nothing larger than a request goes to an address that has not proved it runs gossip: a
 *   full-state reply or a relayed ack goes only to a join seed or to a source address that
 *   answered one of this node's pings with its (random) sequence number. A ping from anywhere
 *   is acked without piggybacked updates; a push-pull from an unproven address makes this node
 *   ping the member it comes from, at the address this node knows for it, and send its state
 *   only once that member answers; a ping-req is served only from a proven address and only for a known
 *   live member, pinged at the address this node knows for it.
 */
import { type Rng, shuffle } from "../rng.ts";
import { BroadcastQueue } from "./broadcast_queue.ts";
import { encodedSizeBytes, MAX_MEMBER_BYTES, memberSizeBytes } from "./codec.ts";
import { type SwimConfig, swimConfig } from "./config.ts";
import { MemberTooLargeError } from "./errors.ts";
import type {
  Addr,
  AliveUpdate,
  DeadUpdate,
  Member,
  MemberEvent,
  MemberState,
  Message,
  Outbound,
  Ready,
  SuspectUpdate,
  Tags,
  Update,
} from "./types.ts";

/** How to build a {@link Swim} core. */
export interface SwimOptions {
  /** This node's unique name (node id). */
  readonly name: string;
  /** This node's advertised gossip address. */
  readonly addr: Addr;
  /** Tags to advertise; mokv sets `id` and `rpc_addr`. */
  readonly tags?: Tags;
  /** The only source of randomness of the core. */
  readonly rng: Rng;
  /** Overrides of {@link DEFAULT_SWIM_CONFIG}. */
  readonly config?: Partial<SwimConfig>;
  /** First incarnation (0 by default); a restarted node refutes its old one anyway. */
  readonly incarnation?: number;
}

/** Counters of the core since it was built. */
export interface SwimStats {
  /** Probes started. */
  readonly probes: number;
  /** Probes that got no ack, direct or indirect, within the probe period. */
  readonly probeFailures: number;
  /** Times this node refuted news of its own suspicion or death. */
  readonly refutes: number;
  /** New members ignored because the table held `maxMembers` already. */
  readonly membersRejected: number;
  /** Updates dropped because they claimed an incarnation beyond {@link INCARNATION_WINDOW}. */
  readonly staleOrForgedUpdates: number;
  /** Ping-reqs and full-state requests refused because they came from an unproven address. */
  readonly unprovenRequests: number;
}

interface MemberRecord {
  readonly name: string;
  addr: Addr;
  tags: Tags;
  incarnation: number;
  state: MemberState;
  stateChangeTick: number;
  suspectDeadlineTick: number;
}

interface Probe {
  readonly target: string;
  readonly seq: number;
  readonly directDeadlineTick: number;
  readonly endTick: number;
  indirectSent: boolean;
}

interface Forward {
  readonly to: Addr;
  readonly seq: number;
  readonly deadlineTick: number;
}

interface JoinAttempt {
  readonly seeds: readonly Addr[];
  attempts: number;
  nextTick: number;
}

/**
 * How far above the incarnation this node knows news about a member may claim to be. A
 * member raises its own incarnation one step per refutation or tag change, and a restarted
 * member jumps to one above what the others tell it; nothing legitimate moves further in one
 * update. A forged `dead`/`alive` at 2^32-1 is therefore dropped instead of pinning the member
 * at a value it can never outbid (memberlist and Serf have no such bound: they rely on the
 * gossip key).
 */
export const INCARNATION_WINDOW = 1 << 20;

/**
 * True when incarnation `a` is newer than `b`: `a` is 1 to {@link INCARNATION_WINDOW} steps
 * ahead of `b` modulo 2^32 (RFC 1982 serial-number arithmetic). Incarnations wrap at 2^32, so
 * there is no maximum at which a refutation stops winning.
 */
export function isNewerIncarnation(a: number, b: number): boolean {
  const d = (a - b) >>> 0;
  return d >= 1 && d <= INCARNATION_WINDOW;
}

/** `a` is `b` or newer (see {@link isNewerIncarnation}). */
function isAtLeast(a: number, b: number): boolean {
  return a === b || isNewerIncarnation(a, b);
}

/** Source addresses remembered as proven (answered a ping of ours); the oldest go first. */
export const MAX_PROVEN_SOURCES = 4096;
/** Hello pings (sent for push-pulls from unproven addresses) waiting for their ack. */
export const MAX_PENDING_HELLOS = 256;
/** Ping-reqs this node serves at once (each waits up to one probe period). */
export const MAX_PENDING_FORWARDS = 256;

interface Hello {
  readonly name: string;
  readonly deadlineTick: number;
}

/** The pure SWIM core of one member. */
export class Swim {
  /** The validated configuration in effect. */
  readonly config: SwimConfig;
  readonly #rng: Rng;
  readonly #self: MemberRecord;
  readonly #members = new Map<string, MemberRecord>();
  readonly #broadcasts = new BroadcastQueue();
  readonly #forwards = new Map<number, Forward>();
  readonly #hellos = new Map<number, Hello>();
  readonly #proven = new Map<Addr, number>();
  #seeds = new Set<Addr>();
  #now = 0;
  #probeList: string[] = [];
  #probeIndex = 0;
  #probe: Probe | undefined;
  #join: JoinAttempt | undefined;
  #joined = false;
  #leaving = false;
  #nextProbeTick: number;
  #nextGossipTick: number;
  #nextPushPullTick: number;
  #nextReconnectTick: number;
  #out: Outbound[] = [];
  #events: MemberEvent[] = [];
  #stats = {
    probes: 0,
    probeFailures: 0,
    refutes: 0,
    membersRejected: 0,
    staleOrForgedUpdates: 0,
    unprovenRequests: 0,
  };

  /** Builds the core; throws `ConfigError` or {@link MemberTooLargeError} on bad options. */
  constructor(options: SwimOptions) {
    this.config = swimConfig(options.config);
    this.#rng = options.rng;
    if (options.name === "") throw new RangeError("member name must not be empty");
    this.#self = {
      name: options.name,
      addr: options.addr,
      tags: Object.freeze({ ...options.tags }),
      incarnation: options.incarnation ?? 0,
      state: "alive",
      stateChangeTick: 0,
      suspectDeadlineTick: 0,
    };
    checkSize(this.#self);
    this.#members.set(this.#self.name, this.#self);
    const c = this.config;
    this.#nextProbeTick = 1 + this.#rng.int(c.probePeriodTicks);
    this.#nextGossipTick = 1 + this.#rng.int(c.gossipIntervalTicks);
    this.#nextPushPullTick = 1 + this.#rng.int(c.pushPullIntervalTicks);
    this.#nextReconnectTick = 1 + this.#rng.int(c.reconnectIntervalTicks);
    this.#emit("join", this.#self);
  }

  /** This node's name. */
  get name(): string {
    return this.#self.name;
  }

  /** This node's advertised gossip address. */
  get addr(): Addr {
    return this.#self.addr;
  }

  /** Ticks since the core was built. */
  get now(): number {
    return this.#now;
  }

  /** True once a seed answered the join (or there was no other seed to join). */
  get joined(): boolean {
    return this.#joined;
  }

  /** Updates still waiting to be gossiped; a leaving host waits for this to reach zero. */
  get pendingBroadcasts(): number {
    return this.#broadcasts.length;
  }

  /** Counters since the core was built. */
  stats(): SwimStats {
    return { ...this.#stats };
  }

  /** Every known member, this node included, failed and left ones until they are reaped. */
  members(): Member[] {
    return [...this.#members.values()].map(snapshot);
  }

  /** The member called `name`, if known. */
  member(name: string): Member | undefined {
    const m = this.#members.get(name);
    return m && snapshot(m);
  }

  /**
   * Starts joining through `seeds` (gossip addresses; this node's own is skipped): a full-state
   * push/pull goes to every seed now and again with backoff until one answers.
   */
  join(seeds: readonly Addr[]): void {
    const list = [...new Set(seeds)].filter((s) => s !== this.#self.addr);
    this.#seeds = new Set(list);
    if (list.length === 0) {
      this.#joined = true;
      this.#join = undefined;
      return;
    }
    this.#join = { seeds: list, attempts: 0, nextTick: this.#now };
    this.#sendJoin();
  }

  /** Replaces this node's tags; bumps its incarnation so the change wins everywhere. */
  setTags(tags: Tags): void {
    // After leave() a new incarnation would announce us alive again: ignore the change.
    if (this.#leaving) return;
    const next = { ...this.#self, tags: Object.freeze({ ...tags }) };
    checkSize(next);
    this.#self.tags = next.tags;
    this.#self.incarnation = (this.#self.incarnation + 1) >>> 0;
    this.#broadcasts.enqueue(this.#aliveOf(this.#self));
    this.#emit("update", this.#self);
  }

  /**
   * Leaves on purpose: marks this node left, sends the news to up to `leaveFanout` members at
   * once and queues it for gossip. The host keeps ticking briefly so it spreads; afterwards
   * this node neither probes nor refutes.
   */
  leave(): void {
    if (this.#leaving) return;
    this.#leaving = true;
    this.#probe = undefined;
    this.#join = undefined;
    this.#setState(this.#self, "left");
    const dead: DeadUpdate = {
      kind: "dead",
      name: this.#self.name,
      incarnation: this.#self.incarnation,
      from: this.#self.name,
    };
    this.#broadcasts.enqueue(dead);
    for (const m of this.#randomMembers(this.config.leaveFanout, (m) => isLive(m.state))) {
      this.#out.push({ to: m.addr, msg: { type: "gossip", updates: [dead] } });
    }
    this.#emit("leave", this.#self);
  }

  /** Advances time by one tick: timeouts, probes, gossip, push/pull, reconnects, reaping. */
  tick(): void {
    const now = ++this.#now;
    const c = this.config;
    if (this.#join && now >= this.#join.nextTick) this.#sendJoin();
    for (const m of this.#members.values()) {
      if (m.state === "suspect" && now >= m.suspectDeadlineTick) {
        this.#onDead({ kind: "dead", name: m.name, incarnation: m.incarnation, from: this.name });
      }
    }
    this.#checkProbe();
    for (const [seq, f] of this.#forwards) {
      if (now >= f.deadlineTick) this.#forwards.delete(seq);
    }
    for (const [seq, h] of this.#hellos) {
      if (now >= h.deadlineTick) this.#hellos.delete(seq);
    }
    if (now >= this.#nextProbeTick) {
      this.#nextProbeTick += c.probePeriodTicks;
      if (!this.#leaving) this.#startProbe();
    }
    if (now >= this.#nextGossipTick) {
      this.#nextGossipTick += c.gossipIntervalTicks;
      this.#gossip();
    }
    if (now >= this.#nextPushPullTick) {
      this.#nextPushPullTick += c.pushPullIntervalTicks;
      const [peer] = this.#randomMembers(1, (m) => m.state === "alive");
      if (peer && !this.#leaving) this.#sendState(peer.addr, true);
    }
    if (now >= this.#nextReconnectTick) {
      this.#nextReconnectTick += c.reconnectIntervalTicks;
      const [peer] = this.#randomMembers(1, (m) => m.state === "failed");
      if (peer && !this.#leaving) this.#sendState(peer.addr, true);
    }
    for (const m of [...this.#members.values()]) {
      if (
        m !== this.#self && (m.state === "failed" || m.state === "left") &&
        now - m.stateChangeTick >= c.reapTicks
      ) {
        this.#members.delete(m.name);
        this.#emit("reap", m);
      }
    }
  }

  /** Handles one datagram that came from `from` (the source address the socket reported). */
  step(from: Addr, msg: Message): void {
    switch (msg.type) {
      case "ping":
        this.#applyUpdates(msg.updates);
        if (msg.target !== this.name) break;
        // Acked from anywhere (a joiner's first contact comes from an address we do not know
        // yet), but nothing piggybacks unless the asker is proven: never more than it sent.
        if (this.#isTrusted(from)) this.#send(from, { type: "ack", seq: msg.seq, updates: [] });
        else this.#out.push({ to: from, msg: { type: "ack", seq: msg.seq, updates: [] } });
        break;
      case "ping-req": {
        this.#applyUpdates(msg.updates);
        const target = this.#members.get(msg.target);
        if (!this.#isTrusted(from) || this.#forwards.size >= MAX_PENDING_FORWARDS) {
          this.#stats.unprovenRequests++;
          break;
        }
        // Only a known live member, at the address we know for it: never an address the
        // request names.
        if (!target || target === this.#self || !isLive(target.state)) break;
        const seq = this.#nextSeq();
        this.#forwards.set(seq, {
          to: from,
          seq: msg.seq,
          deadlineTick: this.#now + this.config.probePeriodTicks,
        });
        this.#send(target.addr, { type: "ping", seq, target: target.name, updates: [] });
        break;
      }
      case "ack": {
        this.#applyUpdates(msg.updates);
        if (this.#probe?.seq === msg.seq) {
          this.#probe = undefined;
          this.#prove(from);
          break;
        }
        const hello = this.#hellos.get(msg.seq);
        if (hello) {
          this.#hellos.delete(msg.seq);
          this.#prove(from);
          if (!this.#leaving) this.#sendState(from, false);
          break;
        }
        const f = this.#forwards.get(msg.seq);
        if (f) {
          this.#forwards.delete(msg.seq);
          this.#send(f.to, { type: "ack", seq: f.seq, updates: [] });
        }
        break;
      }
      case "gossip":
        this.#applyUpdates(msg.updates);
        break;
      case "push-pull":
        this.#mergeState(msg.members);
        if (msg.needReply) {
          if (this.#leaving) break;
          if (this.#isTrusted(from)) this.#sendState(from, false);
          else this.#sayHello(from, msg.members);
        } else if (this.#join) {
          this.#join = undefined;
          this.#joined = true;
        }
        break;
      default:
        unreachable(msg);
    }
  }

  /** A join seed, or a source address that answered one of our pings. */
  #isTrusted(from: Addr): boolean {
    return this.#seeds.has(from) || this.#proven.has(from);
  }

  #prove(from: Addr): void {
    this.#proven.delete(from);
    this.#proven.set(from, this.#now);
    if (this.#proven.size > MAX_PROVEN_SOURCES) {
      const oldest = this.#proven.keys().next().value;
      if (oldest !== undefined) this.#proven.delete(oldest);
    }
  }

  /**
   * A full-state request from an unproven address: ping the member it comes from (the record
   * at that address, else its first record, which is the sender's own) at the address this
   * node knows for it; the state goes to the address that acks. A forged source gets nothing.
   */
  #sayHello(from: Addr, members: readonly Member[]): void {
    this.#stats.unprovenRequests++;
    const r = members.find((x) => x.addr === from) ?? members[0];
    const m = r && this.#members.get(r.name);
    if (!m || m === this.#self || m.state === "left") return;
    if (this.#hellos.size >= MAX_PENDING_HELLOS) return;
    for (const h of this.#hellos.values()) if (h.name === m.name) return;
    const seq = this.#nextSeq();
    this.#hellos.set(seq, { name: m.name, deadlineTick: this.#now + this.config.probePeriodTicks });
    this.#out.push({ to: m.addr, msg: { type: "ping", seq, target: m.name, updates: [] } });
  }

  /** True when `ready()` has something to hand out. */
  hasReady(): boolean {
    return this.#out.length > 0 || this.#events.length > 0;
  }

  /** Hands out, and forgets, the datagrams to send and the events since the last call. */
  ready(): Ready {
    const r: Ready = { messages: this.#out, events: this.#events };
    this.#out = [];
    this.#events = [];
    return r;
  }

  #sendJoin(): void {
    const j = this.#join;
    if (!j) return;
    for (const seed of j.seeds) this.#sendState(seed, true);
    const c = this.config;
    const wait = Math.min(c.maxJoinRetryTicks, c.joinRetryTicks * 2 ** Math.min(j.attempts, 30));
    j.attempts++;
    j.nextTick = this.#now + wait;
  }

  #startProbe(): void {
    const target = this.#nextProbeTarget();
    if (!target) return;
    const seq = this.#nextSeq();
    this.#stats.probes++;
    this.#probe = {
      target: target.name,
      seq,
      directDeadlineTick: this.#now + this.config.probeTimeoutTicks,
      endTick: this.#now + this.config.probePeriodTicks,
      indirectSent: false,
    };
    this.#send(target.addr, { type: "ping", seq, target: target.name, updates: [] });
  }

  #nextProbeTarget(): MemberRecord | undefined {
    for (let guard = 0; guard <= this.#members.size + 1; guard++) {
      if (this.#probeIndex >= this.#probeList.length) {
        this.#probeList = shuffle(
          this.#rng,
          [...this.#members.values()].filter((m) => m !== this.#self && isLive(m.state)).map((
            m,
          ) => m.name),
        );
        this.#probeIndex = 0;
        if (this.#probeList.length === 0) return undefined;
      }
      const m = this.#members.get(this.#probeList[this.#probeIndex++]);
      if (m && m !== this.#self && isLive(m.state)) return m;
    }
    return undefined;
  }

  #checkProbe(): void {
    const p = this.#probe;
    if (!p) return;
    const target = this.#members.get(p.target);
    if (!p.indirectSent && this.#now >= p.directDeadlineTick && target) {
      p.indirectSent = true;
      const helpers = this.#randomMembers(
        this.config.indirectChecks,
        (m) => m.state === "alive" && m !== target,
      );
      for (const h of helpers) {
        this.#send(h.addr, {
          type: "ping-req",
          seq: p.seq,
          target: target.name,
          targetAddr: target.addr,
          updates: [],
        });
      }
    }
    if (this.#now >= p.endTick) {
      this.#probe = undefined;
      this.#stats.probeFailures++;
      if (target && target.state === "alive") {
        this.#onSuspect({
          kind: "suspect",
          name: target.name,
          incarnation: target.incarnation,
          from: this.name,
        });
      }
    }
  }

  #gossip(): void {
    if (this.#broadcasts.length === 0) return;
    const deadWindow = this.config.gossipToTheDeadTicks;
    const targets = this.#randomMembers(
      this.config.gossipNodes,
      (m) =>
        isLive(m.state) || (m.state === "failed" && this.#now - m.stateChangeTick <= deadWindow),
    );
    for (const t of targets) {
      const updates = this.#takeBroadcasts(encodedSizeBytes({ type: "gossip", updates: [] }));
      if (updates.length === 0) break;
      this.#out.push({ to: t.addr, msg: { type: "gossip", updates } });
    }
  }

  /** Sends `msg` with as many pending updates piggybacked as fit in one datagram. */
  #send(to: Addr, msg: Message): void {
    if (msg.type === "ping" || msg.type === "ping-req" || msg.type === "ack") {
      const updates = this.#takeBroadcasts(encodedSizeBytes(msg));
      if (updates.length > 0) msg = { ...msg, updates };
    }
    this.#out.push({ to, msg });
  }

  #takeBroadcasts(overheadBytes: number): Update[] {
    // +2: the update count may grow from one varint byte to three.
    const limit = this.config.maxPayloadBytes - overheadBytes - 2;
    const transmitLimit = this.config.retransmitMult * Math.ceil(Math.log2(this.#liveCount() + 1));
    return this.#broadcasts.take(limit, transmitLimit);
  }

  /** Sends this node's whole view to `to`, split into datagrams that each fit. */
  #sendState(to: Addr, needReply: boolean): void {
    const limit = this.config.maxPayloadBytes - 6;
    let chunk: Member[] = [];
    let size = 0;
    const flush = () => {
      this.#out.push({ to, msg: { type: "push-pull", needReply, members: chunk } });
      chunk = [];
      size = 0;
    };
    for (const m of this.#members.values()) {
      const s = memberSizeBytes(m);
      if (chunk.length > 0 && size + s > limit) flush();
      chunk.push(snapshot(m));
      size += s;
    }
    if (chunk.length > 0) flush();
  }

  #mergeState(remote: readonly Member[]): void {
    for (const r of remote) {
      switch (r.state) {
        case "alive":
          this.#onAlive({
            kind: "alive",
            name: r.name,
            addr: r.addr,
            incarnation: r.incarnation,
            tags: r.tags,
          });
          break;
        case "left":
          this.#onDead({ kind: "dead", name: r.name, incarnation: r.incarnation, from: r.name });
          break;
        // A remote "failed" only makes us suspect: the member gets its chance to refute.
        case "failed":
        case "suspect":
          this.#onSuspect({
            kind: "suspect",
            name: r.name,
            incarnation: r.incarnation,
            from: this.name,
          });
          break;
        default:
          unreachable(r.state);
      }
    }
  }

  #applyUpdates(updates: readonly Update[]): void {
    for (const u of updates) {
      switch (u.kind) {
        case "alive":
          this.#onAlive(u);
          break;
        case "suspect":
          this.#onSuspect(u);
          break;
        case "dead":
          this.#onDead(u);
          break;
        default:
          unreachable(u);
      }
    }
  }

  #onAlive(a: AliveUpdate): void {
    const self = this.#self;
    if (a.name === self.name) {
      if (this.#leaving) return;
      const differs = a.addr !== self.addr || !sameTags(a.tags, self.tags);
      if (
        isNewerIncarnation(a.incarnation, self.incarnation) ||
        (a.incarnation === self.incarnation && differs)
      ) {
        this.#refute(a.incarnation);
      }
      return;
    }
    if (memberSizeBytes({ ...a, state: "alive" }) > MAX_MEMBER_BYTES) return;
    const m = this.#members.get(a.name);
    if (!m) {
      if (!this.#makeRoom()) {
        this.#stats.membersRejected++;
        return;
      }
      const rec: MemberRecord = {
        name: a.name,
        addr: a.addr,
        tags: Object.freeze({ ...a.tags }),
        incarnation: a.incarnation,
        state: "alive",
        stateChangeTick: this.#now,
        suspectDeadlineTick: 0,
      };
      this.#members.set(rec.name, rec);
      this.#insertIntoProbeList(rec.name);
      this.#broadcasts.enqueue(a);
      this.#emit("join", rec);
      return;
    }
    if (!isNewerIncarnation(a.incarnation, m.incarnation)) {
      if (a.incarnation !== m.incarnation && !isNewerIncarnation(m.incarnation, a.incarnation)) {
        this.#stats.staleOrForgedUpdates++;
      }
      return;
    }
    const prev = m.state;
    const changed = a.addr !== m.addr || !sameTags(a.tags, m.tags);
    m.incarnation = a.incarnation;
    m.addr = a.addr;
    if (changed) m.tags = Object.freeze({ ...a.tags });
    this.#broadcasts.enqueue(a);
    if (prev === "alive") {
      if (changed) this.#emit("update", m);
      return;
    }
    this.#setState(m, "alive");
    if (prev === "suspect") {
      this.#emit("alive", m);
      if (changed) this.#emit("update", m);
    } else {
      this.#insertIntoProbeList(m.name);
      this.#emit("join", m);
    }
  }

  #onSuspect(s: SuspectUpdate): void {
    const m = this.#members.get(s.name);
    if (!m || m.state !== "alive" || !this.#plausible(s.incarnation, m.incarnation)) return;
    if (m === this.#self) {
      if (!this.#leaving) this.#refute(s.incarnation);
      return;
    }
    m.incarnation = s.incarnation;
    this.#setState(m, "suspect");
    m.suspectDeadlineTick = this.#now + this.#suspicionTicks();
    this.#broadcasts.enqueue(s);
    this.#emit("suspect", m);
  }

  #onDead(d: DeadUpdate): void {
    const m = this.#members.get(d.name);
    if (!m || m.state === "failed" || m.state === "left") return;
    if (!this.#plausible(d.incarnation, m.incarnation)) return;
    if (m === this.#self) {
      if (!this.#leaving) this.#refute(d.incarnation);
      return;
    }
    m.incarnation = d.incarnation;
    const left = d.from === d.name;
    this.#setState(m, left ? "left" : "failed");
    this.#broadcasts.enqueue(d);
    this.#emit(left ? "leave" : "fail", m);
  }

  /** An accusation at `claimed` about a member known at `known`: not older, not too far ahead. */
  #plausible(claimed: number, known: number): boolean {
    if (isAtLeast(claimed, known)) return true;
    if (!isNewerIncarnation(known, claimed)) this.#stats.staleOrForgedUpdates++;
    return false;
  }

  /**
   * Outbids the news it refutes: one above the accused incarnation (which is at most
   * {@link INCARNATION_WINDOW} ahead of ours), modulo 2^32, so it never saturates.
   */
  #refute(accusedIncarnation: number): void {
    const self = this.#self;
    const base = isNewerIncarnation(accusedIncarnation, self.incarnation)
      ? accusedIncarnation
      : self.incarnation;
    self.incarnation = (base + 1) >>> 0;
    this.#stats.refutes++;
    this.#broadcasts.enqueue(this.#aliveOf(self));
  }

  /**
   * True when a new member fits: below `maxMembers`, or after forgetting the failed or left
   * member whose state changed longest ago (it would be reaped anyway).
   */
  #makeRoom(): boolean {
    if (this.#members.size < this.config.maxMembers) return true;
    let oldest: MemberRecord | undefined;
    for (const m of this.#members.values()) {
      if (m === this.#self || (m.state !== "failed" && m.state !== "left")) continue;
      if (!oldest || m.stateChangeTick < oldest.stateChangeTick) oldest = m;
    }
    if (!oldest) return false;
    this.#members.delete(oldest.name);
    this.#broadcasts.forget(oldest.name);
    this.#emit("reap", oldest);
    return true;
  }

  #setState(m: MemberRecord, state: MemberState): void {
    m.state = state;
    m.stateChangeTick = this.#now;
  }

  #suspicionTicks(): number {
    const c = this.config;
    const scale = Math.max(1, Math.log10(Math.max(1, this.#liveCount())));
    return Math.ceil(c.suspicionMult * scale * c.probePeriodTicks);
  }

  #liveCount(): number {
    let n = 0;
    for (const m of this.#members.values()) if (isLive(m.state)) n++;
    return n;
  }

  #insertIntoProbeList(name: string): void {
    const i = this.#rng.int(this.#probeList.length + 1);
    this.#probeList.splice(i, 0, name);
    if (i < this.#probeIndex) this.#probeIndex++;
  }

  /** Up to `k` distinct random members other than this node that pass `accept`. */
  #randomMembers(k: number, accept: (m: MemberRecord) => boolean): MemberRecord[] {
    if (k <= 0) return [];
    const pool: MemberRecord[] = [];
    for (const m of this.#members.values()) if (m !== this.#self && accept(m)) pool.push(m);
    return shuffle(this.#rng, pool).slice(0, k);
  }

  #aliveOf(m: MemberRecord): AliveUpdate {
    return { kind: "alive", name: m.name, addr: m.addr, incarnation: m.incarnation, tags: m.tags };
  }

  /** Sequence numbers are random, so an off-path sender cannot forge the ack of a probe. */
  #nextSeq(): number {
    return this.#rng.nextUint32();
  }

  #emit(type: MemberEvent["type"], m: MemberRecord): void {
    this.#events.push({ type, member: snapshot(m) });
  }
}

function isLive(state: MemberState): boolean {
  return state === "alive" || state === "suspect";
}

function snapshot(m: MemberRecord): Member {
  return {
    name: m.name,
    addr: m.addr,
    tags: m.tags,
    incarnation: m.incarnation,
    state: m.state,
  };
}

function sameTags(a: Tags, b: Tags): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

function checkSize(m: Member): void {
  const size = memberSizeBytes(m);
  if (size > MAX_MEMBER_BYTES) throw new MemberTooLargeError(size, MAX_MEMBER_BYTES);
}

function unreachable(x: never): never {
  throw new Error(`unreachable: ${JSON.stringify(x)}`);
}
