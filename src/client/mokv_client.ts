/**
 * `MokvClient`: the TypeScript client of a mokv cluster. It learns the servers from
 * GetServers (at connect, every `refreshMs`, and after failures), sends writes and admin calls
 * to the leader and spreads reads round-robin over the followers, retries UNAVAILABLE and
 * DEADLINE_EXCEEDED with bounded exponential backoff while following leader hints, and makes
 * retried writes exactly-once with client sessions (see session_pool.ts).
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import type {
  Consistency,
  Empty,
  EtcdEvent,
  EtcdRangeResponse,
  EtcdRequest,
  EtcdTxnResponse,
  EtcdWatchResponse,
  GetResponse,
  MessageInput,
  ServingStatus,
  UnaryMethod,
} from "../api/mod.ts";
import { KeyNotFoundError, UnavailableError } from "../errors.ts";
import {
  type HeldLock,
  type LeaseGrant,
  type LeaseInfo,
  LeaseNotFoundError,
  type LockOptions,
  prefixEnd,
  StreamQueue,
  WatchCompactedError,
  type WatchEvent,
  type WatchOptions,
} from "./etcd_types.ts";
import { type KeepAliveStats, type KeepOptions, LeaseKeeper } from "./lease_keeper.ts";
import { type CallKind, NodeConnection, type NodeStats } from "./node_connection.ts";
import {
  type ConnectOptions,
  loadTls,
  type ResolvedOptions,
  resolveOptions,
  type TlsMaterialText,
} from "./options.ts";
import { type KnownServer, Picker, type Route } from "./picker.ts";
import { errorCode, isServiceError, leaderHintOf, RpcError, toClientError } from "./rpc_error.ts";
import { type SessionLease, SessionPool } from "./session_pool.ts";

/** Read consistency: "linearizable" (default; ReadIndex) or "stale" (local state at once). */
export type ReadConsistency = "linearizable" | "stale";

/** A value to write: bytes, or a string stored as UTF-8. */
export type ValueInput = Uint8Array | string;

/** One key with its value and version (the Raft index of its last write). */
export interface KvEntry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly version: number;
}

/** Options of a read. */
export interface ReadOptions {
  readonly consistency?: ReadConsistency;
}

/** Options of {@link MokvClient.list}. */
export interface ListOptions extends ReadOptions {
  /** Only keys starting with this. */
  readonly prefix?: string;
  /** Inclusive lower bound. */
  readonly start?: string;
  /** At most this many entries; 0 or absent = all. */
  readonly limit?: number;
}

/** One page of {@link MokvClient.range}. */
export interface RangePageResult {
  /** The entries of this page, in key order. */
  readonly entries: KvEntry[];
  /** More keys may follow: ask again with `start: nextKey`. */
  readonly more: boolean;
  /** The first key not yet examined ("" when `more` is false). */
  readonly nextKey: string;
}

/** Result of a write that stores a value. */
export interface WriteResult {
  /** The Raft index of this write (the key's new version). */
  readonly version: number;
}

/** Options of {@link MokvClient.set}. */
export interface SetOptions {
  /** Attach the key to this lease (from {@link MokvClient.leaseGrant}). */
  readonly lease?: number;
}

/** Result of {@link MokvClient.delete}. */
export interface DeleteResult extends WriteResult {
  /** Whether a value was removed (version 0 when not). */
  readonly existed: boolean;
}

/** Result of {@link MokvClient.append}. */
export interface AppendResult extends WriteResult {
  /** Byte length of the value after the append. */
  readonly length: number;
}

/** What {@link MokvClient.compareAndSet} compares: the current value, or the version (0 = absent). */
export type CasExpectation =
  | { readonly kind: "value"; readonly value: ValueInput }
  | { readonly kind: "version"; readonly version: number };

/** Result of {@link MokvClient.compareAndSet}. */
export interface CasResult {
  /** True when the value was stored. */
  readonly ok: boolean;
  /** On success the new version, on failure the current one (0 when absent). */
  readonly version: number;
  /** On failure the current value (empty when absent). */
  readonly currentValue: Uint8Array;
}

/** One Raft server as GetServers reports it. */
export interface ServerEntry {
  readonly id: string;
  readonly rpcAddr: string;
  readonly isLeader: boolean;
  readonly isVoter: boolean;
}

/** One gossip member as Admin.Members reports it. */
export interface MemberEntry {
  readonly name: string;
  readonly gossipAddr: string;
  readonly rpcAddr: string;
  readonly state: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Watch stream failures that another node (or the same one later) may not repeat. */
const WATCH_RETRYABLE: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.CANCELLED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
]);

/** What a watch stream delivered to its reader. */
type WatchItem =
  | { readonly kind: "response"; readonly response: EtcdWatchResponse }
  | { readonly kind: "error"; readonly error: Error }
  | { readonly kind: "end" }
  | { readonly kind: "abort" };

function toWatchEvent(e: EtcdEvent): WatchEvent {
  const kv = e.kv!;
  return {
    type: e.type === "DELETE" ? "delete" : "put",
    key: decoder.decode(kv.key),
    value: kv.value,
    revision: kv.mod_revision,
    createRevision: kv.create_revision,
    version: kv.version,
    ...(e.prev_kv ? { prevValue: e.prev_kv.value } : {}),
  };
}
const EMPTY = new Uint8Array(0);
/** grpc-js's descriptions of a node it could not reach (as opposed to a node's own answer). */
const UNREACHABLE =
  /No connection established|Connection dropped|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|GOAWAY|socket hang up/i;
/** Deadline of one GetServers during a refresh. */
const REFRESH_TIMEOUT_MS = 1000;

function bytes(value: ValueInput): Uint8Array {
  return typeof value === "string" ? encoder.encode(value) : value;
}

function wire(consistency: ReadConsistency | undefined): Consistency {
  return consistency === "stale" ? "STALE" : "LINEARIZABLE";
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The four-argument overload of a unary method. */
type FullUnaryMethod<Req, Res> = (
  request: MessageInput<Req>,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response?: Res) => void,
) => grpc.ClientUnaryCall;

/** Calls a typed unary method as a promise. */
function unary<Req, Res>(
  client: grpc.Client,
  method: UnaryMethod<Req, Res>,
  request: MessageInput<Req>,
  deadlineMs: number,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    (method as FullUnaryMethod<Req, Res>).call(
      client,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + deadlineMs },
      (error, response) => (error ? reject(error) : resolve(response as Res)),
    );
  });
}

/**
 * A client of a mokv cluster. Guarantees: a call fails only with a non-retryable error
 * (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, ...) or after `maxRetries` retries; a
 * write retried after a lost answer is applied once (unless `exactlyOnce: false`); at most
 * `maxSessions` writes are in flight, more wait their turn. Use {@link MokvClient.connect}.
 */
export class MokvClient {
  readonly #options: ResolvedOptions;
  readonly #tls: TlsMaterialText | undefined;
  readonly #credentials: grpc.ChannelCredentials;
  readonly #channelOptions: grpc.ChannelOptions;
  readonly #picker: Picker;
  readonly #sessions: SessionPool;
  readonly #connections = new Map<string, NodeConnection>();
  readonly #discover: boolean;
  readonly #keeper: LeaseKeeper;
  #refreshing: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  private constructor(
    options: ResolvedOptions,
    tls: TlsMaterialText | undefined,
    discover: boolean,
  ) {
    this.#options = options;
    this.#discover = discover;
    this.#tls = tls;
    this.#credentials = tls
      ? grpc.credentials.createSsl(Buffer.from(tls.ca), Buffer.from(tls.key), Buffer.from(tls.cert))
      : grpc.credentials.createInsecure();
    this.#channelOptions = {
      ...(tls?.serverName ? { "grpc.ssl_target_name_override": tls.serverName } : {}),
      "grpc.use_local_subchannel_pool": 1,
    };
    this.#picker = new Picker(options.addrs, options.downMs);
    this.#sessions = new SessionPool(options.clientId, options.maxSessions);
    this.#keeper = new LeaseKeeper({
      connect: () => this.#connection(this.#picker.pick("leader", Date.now())),
      onFailure: (addr, error) => this.#onFailure(addr, error),
      markDown: (addr) => this.#picker.markDown(addr, Date.now()),
      backoffMs: (attempt) => this.#backoffMs(attempt),
      answerTimeoutMs: options.attemptTimeoutMs,
    });
  }

  /**
   * Loads TLS material (unless `insecure`), asks the seeds for the servers once (a failure
   * here is not fatal: calls retry and refresh), and starts the periodic refresh. With
   * `discover: false` the client uses only `addrs` and never asks GetServers (for an address
   * behind a load balancer or proxy). Throws InvalidArgumentError on bad options or unreadable
   * TLS files.
   */
  static async connect(options: ConnectOptions & { discover?: boolean }): Promise<MokvClient> {
    const resolved = resolveOptions(options);
    const tls = options.insecure ? undefined : await loadTls(options.tls);
    const client = new MokvClient(resolved, tls, options.discover ?? true);
    if (client.#discover) {
      await client.refresh().catch(() => {});
      const timer = setInterval(() => {
        client.refresh().catch(() => {});
      }, resolved.refreshMs);
      Deno.unrefTimer(timer);
      client.#timer = timer;
    }
    return client;
  }

  /** This client's id: the prefix of its session ids. */
  get clientId(): string {
    return this.#options.clientId;
  }

  /** The servers last learned from GetServers (empty before the first answer). */
  get knownServers(): readonly KnownServer[] {
    return this.#picker.servers;
  }

  /** The leader's address as last learned, if any. */
  get leaderAddr(): string | undefined {
    return this.#picker.leaderAddr;
  }

  /** Session ids made so far (at most `maxSessions`). */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /**
   * Asks GetServers again, now (one refresh at a time; concurrent callers share it). Tries the
   * leader first, then the other usable nodes. Rejects with UnavailableError when none answers.
   */
  refresh(): Promise<void> {
    if (!this.#discover) return Promise.resolve();
    this.#refreshing ??= this.#doRefresh().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  async #doRefresh(): Promise<void> {
    const now = Date.now();
    const leader = this.#picker.leaderAddr;
    const addrs = this.#picker.usable(now);
    const order = leader && addrs.includes(leader)
      ? [leader, ...addrs.filter((a) => a !== leader)]
      : addrs;
    let lastError: unknown = new UnavailableError("no server to ask");
    for (const addr of order) {
      if (this.#closed) return;
      const conn = this.#connection(addr);
      try {
        const response = await conn.track(
          unary(conn.kv, conn.kv.GetServers, {}, REFRESH_TIMEOUT_MS),
        );
        conn.count("admin");
        const servers = response.servers
          .filter((s) => s.rpc_addr !== "")
          .map((s) => ({ id: s.id, addr: s.rpc_addr, isLeader: s.is_leader, isVoter: s.is_voter }));
        this.#picker.setServers(servers);
        return;
      } catch (error) {
        conn.countFailure();
        lastError = error;
      }
    }
    throw toClientError(lastError);
  }

  #connection(addr: string): NodeConnection {
    let conn = this.#connections.get(addr);
    if (!conn) {
      conn = this.#newConnection(addr);
      this.#connections.set(addr, conn);
    }
    return conn;
  }

  /**
   * Deno's TLS refuses an IP address as the SNI name, so for "ip:port" without an explicit
   * `serverName` the handshake names "localhost" and the certificate is then checked against
   * the IP itself (its IP SANs), as a TLS client dialling that IP would.
   */
  #newConnection(addr: string): NodeConnection {
    const tls = this.#tls;
    const host = addr.slice(0, addr.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1");
    if (!tls || tls.serverName || isIP(host) === 0) {
      return new NodeConnection(addr, this.#credentials, this.#channelOptions);
    }
    const credentials = grpc.credentials.createSsl(
      Buffer.from(tls.ca),
      Buffer.from(tls.key),
      Buffer.from(tls.cert),
      { checkServerIdentity: (_name, cert) => checkServerIdentity(host, cert) },
    );
    return new NodeConnection(addr, credentials, {
      ...this.#channelOptions,
      "grpc.ssl_target_name_override": "localhost",
    });
  }

  #backoffMs(attempt: number): number {
    const ceiling = Math.min(
      this.#options.maxBackoffMs,
      this.#options.baseBackoffMs * 2 ** Math.min(attempt, 20),
    );
    return ceiling / 2 + Math.random() * ceiling / 2;
  }

  /** Whether the failure may go away on another attempt (possibly on another node). */
  #retryable(error: unknown, idempotent: boolean): boolean {
    if (!isServiceError(error)) return false;
    if (error.code === grpc.status.UNAVAILABLE) return true;
    if (!idempotent) return false;
    // A connection that broke under the call: grpc-js reports a request written to a socket
    // the node had just closed as INTERNAL ("Received RST_STREAM with code 2 triggered by
    // internal client error: write EPIPE"). The request may have been applied, so only
    // idempotent calls (reads, and writes under a session) go again.
    return error.code === grpc.status.DEADLINE_EXCEEDED ||
      (error.code === grpc.status.INTERNAL && UNREACHABLE.test(error.details ?? ""));
  }

  /**
   * Runs `attempt` on the node `route` picks until it succeeds, fails for good, or
   * `maxRetries` retries are spent. Leader hints redirect; other failures avoid the node for
   * `downMs` and refresh the server list.
   */
  async #call<T>(
    route: Route,
    kind: CallKind,
    idempotent: boolean,
    attempt: (conn: NodeConnection) => Promise<T>,
    key = "",
  ): Promise<T> {
    for (let i = 0;; i++) {
      if (this.#closed) throw new UnavailableError("client closed");
      const conn = this.#connection(this.#picker.pick(route, Date.now()));
      try {
        const result = await conn.track(attempt(conn));
        conn.count(kind);
        return result;
      } catch (error) {
        if (!this.#retryable(error, idempotent) || i >= this.#options.maxRetries) {
          throw toClientError(error, key);
        }
        conn.countFailure();
        this.#onFailure(conn.addr, error as grpc.ServiceError);
        await sleep(this.#backoffMs(i));
      }
    }
  }

  /**
   * After a retryable failure on `addr`: a node that could not be reached is avoided for
   * `downMs`; a leader hint is followed unless it names such a node (a follower may still
   * point at a leader that just died); and the server list is refreshed.
   */
  #onFailure(addr: string, error: grpc.ServiceError): void {
    const now = Date.now();
    if (UNREACHABLE.test(error.details ?? "")) this.#picker.markDown(addr, now);
    const hint = leaderHintOf(error).leaderAddr;
    if (hint !== undefined && hint !== addr && !this.#picker.isDown(hint, now)) {
      this.#picker.setLeader(hint);
      return;
    }
    this.refresh().catch(() => {});
  }

  /** Runs a write on the leader under a borrowed session (one write per session at a time). */
  async #write<T>(
    key: string,
    send: (
      conn: NodeConnection,
      session: SessionLease | undefined,
      timeoutMs: number,
    ) => Promise<T>,
  ): Promise<T> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    if (!this.#options.exactlyOnce) {
      return await this.#call("leader", "write", false, (c) => send(c, undefined, timeoutMs), key);
    }
    const lease = await this.#sessions.acquire();
    try {
      return await this.#call("leader", "write", true, (c) => send(c, lease, timeoutMs), key);
    } finally {
      this.#sessions.release(lease);
    }
  }

  /** Reads one key; throws KeyNotFoundError when it is absent. */
  get(key: string, options: ReadOptions = {}): Promise<KvEntry> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    const consistency = wire(options.consistency);
    return this.#call("follower", "read", true, async (conn) => {
      const r = await unary(conn.kv, conn.kv.Get, { key, consistency }, timeoutMs);
      return { key: r.key, value: r.value, version: r.version };
    }, key);
  }

  /**
   * Stores `value` under `key`. With `lease` the write goes through etcd's Put and attaches
   * the key to the lease (deleted when it expires or is revoked); the result's version is
   * then the write's revision.
   */
  set(key: string, value: ValueInput, options: SetOptions = {}): Promise<WriteResult> {
    const data = bytes(value);
    if (options.lease !== undefined && options.lease !== 0) {
      return this.#putWithLease(key, data, options.lease);
    }
    return this.#write(key, async (conn, s, timeoutMs) => {
      const r = await unary(conn.kv, conn.kv.Set, {
        key,
        value: data,
        client_id: s?.clientId ?? "",
        seq: s?.seq ?? 0,
      }, timeoutMs);
      return { version: r.version };
    });
  }

  /** Removes `key`; `existed` tells whether there was a value. */
  delete(key: string): Promise<DeleteResult> {
    return this.#write(key, async (conn, s, timeoutMs) => {
      const r = await unary(conn.kv, conn.kv.Delete, {
        key,
        client_id: s?.clientId ?? "",
        seq: s?.seq ?? 0,
      }, timeoutMs);
      return { version: r.version, existed: r.existed };
    });
  }

  /** Appends `value` to the key's value (creating it when absent). */
  append(key: string, value: ValueInput): Promise<AppendResult> {
    const data = bytes(value);
    return this.#write(key, async (conn, s, timeoutMs) => {
      const r = await unary(conn.kv, conn.kv.Append, {
        key,
        value: data,
        client_id: s?.clientId ?? "",
        seq: s?.seq ?? 0,
      }, timeoutMs);
      return { version: r.version, length: r.length };
    });
  }

  /** Stores `value` only if the key's current value or version matches `expect`. */
  compareAndSet(key: string, value: ValueInput, expect: CasExpectation): Promise<CasResult> {
    const data = bytes(value);
    const expectation = expect.kind === "value"
      ? { has_expect_value: true, expect_value: bytes(expect.value) }
      : { has_expect_value: false, expect_version: expect.version };
    return this.#write(key, async (conn, s, timeoutMs) => {
      const r = await unary(conn.kv, conn.kv.CompareAndSet, {
        key,
        value: data,
        ...expectation,
        client_id: s?.clientId ?? "",
        seq: s?.seq ?? 0,
      }, timeoutMs);
      return { ok: r.ok, version: r.version, currentValue: r.ok ? EMPTY : r.current_value };
    });
  }

  /**
   * One page of entries in key order (the Range RPC: many entries per response): at most
   * `limit` (0: as many as fit the server's page). Each page is one consistent view, read with
   * `consistency` on its own; continue with `start: nextKey` while `more`.
   */
  range(options: ListOptions = {}): Promise<RangePageResult> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    const request = {
      prefix: options.prefix ?? "",
      start: options.start ?? "",
      limit: options.limit ?? 0,
      consistency: wire(options.consistency),
    };
    return this.#call("follower", "read", true, async (conn) => {
      const r = await unary(conn.kv, conn.kv.Range, request, timeoutMs);
      return { entries: r.kvs, more: r.more, nextKey: r.next_key };
    });
  }

  /**
   * Every entry in key order (at most `limit`), read page by page with {@link range}; the next
   * page is asked for before the entries of the current one are handed out. Each page is
   * linearizable on its own (with the default consistency), the listing as a whole is not one
   * snapshot. A server without Range (UNIMPLEMENTED) is read with the List stream instead.
   */
  async *list(options: ListOptions = {}): AsyncGenerator<KvEntry, void, undefined> {
    const prefix = options.prefix ?? "";
    const consistency = options.consistency;
    let remaining = options.limit ?? 0;
    let pageStart = options.start ?? "";
    let page: Promise<RangePageResult> = this.range({
      prefix,
      start: pageStart,
      limit: remaining,
      ...(consistency ? { consistency } : {}),
    });
    try {
      for (;;) {
        let current: RangePageResult;
        try {
          current = await page;
        } catch (error) {
          if (errorCode(error) !== "UNIMPLEMENTED") throw error;
          yield* this.listStream({ ...options, start: pageStart, limit: remaining });
          return;
        }
        if (remaining > 0) remaining -= current.entries.length;
        const more = current.more && !(options.limit && remaining <= 0);
        if (more) {
          pageStart = current.nextKey;
          page = this.range({
            prefix,
            start: current.nextKey,
            limit: remaining,
            ...(consistency ? { consistency } : {}),
          });
          // A consumer that stops early must not leave a rejection unhandled.
          page.catch(() => {});
        }
        yield* current.entries;
        if (!more) return;
      }
    } finally {
      page.catch(() => {});
    }
  }

  /**
   * Streams entries in key order with the List RPC (one read index for the whole stream). A
   * stream broken by a retryable error resumes after the last
   * key received (on any node), so a linearizable listing that needed a retry is linearizable
   * per part, not as a whole. Breaking out of the loop cancels the stream.
   */
  async *listStream(options: ListOptions = {}): AsyncGenerator<KvEntry, void, undefined> {
    const prefix = options.prefix ?? "";
    let start = options.start ?? "";
    let remaining = options.limit ?? 0;
    const consistency = wire(options.consistency);
    for (let i = 0;; i++) {
      if (this.#closed) throw new UnavailableError("client closed");
      const conn = this.#connection(this.#picker.pick("follower", Date.now()));
      const stream = conn.kv.List({ prefix, start, limit: remaining, consistency });
      let received = 0;
      let ended!: () => void;
      const tracked = conn.track(new Promise<void>((resolve) => (ended = resolve)));
      try {
        for await (const item of stream as AsyncIterable<GetResponse>) {
          received++;
          start = item.key + "\u0000";
          yield { key: item.key, value: item.value, version: item.version };
          if (remaining > 0 && --remaining === 0) return;
        }
        conn.count("read");
        return;
      } catch (error) {
        if (!this.#retryable(error, true) || i >= this.#options.maxRetries) {
          throw toClientError(error);
        }
        conn.countFailure();
        this.#onFailure(conn.addr, error as grpc.ServiceError);
        if (received === 0) await sleep(this.#backoffMs(i));
      } finally {
        stream.cancel();
        ended();
        await tracked;
      }
    }
  }

  /**
   * The changes to `key` (or every key under it with `prefix`) from `startRevision` (default:
   * now), in revision order, over etcd's Watch service on any node. When the stream breaks or
   * the node goes away it resumes on another node from the last delivered revision + 1, so
   * every event is seen once, in order, across node failures; it throws after `maxRetries`
   * consecutive failed reconnects, and with {@link WatchCompactedError} when the revision is
   * older than the server's history. Breaking out of the loop or aborting `signal` cancels
   * the stream.
   */
  async *watch(
    key: string,
    options: WatchOptions = {},
  ): AsyncGenerator<WatchEvent, void, undefined> {
    const keyBytes = encoder.encode(key);
    const rangeEnd = options.prefix ? prefixEnd(keyBytes) : EMPTY;
    const signal = options.signal;
    let next = options.startRevision ?? 0;
    let failures = 0;
    for (;;) {
      if (signal?.aborted) return;
      if (this.#closed) throw new UnavailableError("client closed");
      const conn = this.#connection(this.#picker.pick("follower", Date.now()));
      const queue = new StreamQueue<WatchItem>();
      const stream = conn.etcdWatch.Watch();
      stream.on("data", (r: EtcdWatchResponse) => queue.push({ kind: "response", response: r }));
      stream.on("error", (error: Error) => queue.push({ kind: "error", error }));
      stream.on("end", () => queue.push({ kind: "end" }));
      const onAbort = () => queue.push({ kind: "abort" });
      signal?.addEventListener("abort", onAbort);
      let ended!: () => void;
      const tracked = conn.track(new Promise<void>((resolve) => (ended = resolve)));
      // Events below `from` were delivered before this stream; the server never repeats one
      // within a stream, and a Txn's events (one revision) arrive in one response.
      const from = next;
      let failure: unknown = undefined;
      try {
        stream.write({
          create_request: {
            key: keyBytes,
            range_end: rangeEnd,
            start_revision: from,
            prev_kv: options.prevValue ?? false,
          },
        });
        for (;;) {
          const item = await queue.next();
          if (item.kind === "abort") return;
          if (item.kind === "end") {
            failure = new UnavailableError(`watch stream on ${conn.addr} ended`);
            break;
          }
          if (item.kind === "error") {
            failure = item.error;
            break;
          }
          const r = item.response;
          if (r.created) {
            failures = 0;
            conn.count("read");
            if (next === 0 && r.header) next = r.header.revision + 1;
          }
          if (r.canceled) {
            if (r.compact_revision > 0) throw new WatchCompactedError(r.compact_revision, from);
            failure = new UnavailableError(`watch cancelled on ${conn.addr}: ${r.cancel_reason}`);
            break;
          }
          for (const e of r.events) {
            const kv = e.kv;
            if (!kv || kv.mod_revision < from) continue;
            next = kv.mod_revision + 1;
            yield toWatchEvent(e);
          }
        }
      } finally {
        signal?.removeEventListener("abort", onAbort);
        stream.cancel();
        ended();
        await tracked;
      }
      if (signal?.aborted) return;
      if (isServiceError(failure) && !WATCH_RETRYABLE.has(failure.code)) {
        throw toClientError(failure, key);
      }
      conn.countFailure();
      this.#picker.markDown(conn.addr, Date.now());
      this.refresh().catch(() => {});
      if (failures >= this.#options.maxRetries) throw toClientError(failure, key);
      await sleep(this.#backoffMs(failures++));
    }
  }

  /** Grants a lease of `ttlSeconds` (etcd's LeaseGrant; the server may raise a short TTL). */
  async leaseGrant(ttlSeconds: number): Promise<LeaseGrant> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    const askedAtMs = performance.now();
    const r = await this.#call(
      "leader",
      "write",
      false,
      (conn) =>
        unary(conn.etcdLease, conn.etcdLease.LeaseGrant, { TTL: ttlSeconds, ID: 0 }, timeoutMs),
    );
    if (r.error !== "") throw new RpcError(grpc.status.UNKNOWN, r.error);
    return { id: r.ID, ttlSeconds: r.TTL, grantedAtMs: askedAtMs };
  }

  /**
   * Renews lease `id` once, on the client's shared LeaseKeepAlive stream; resolves with its
   * TTL, or throws {@link LeaseNotFoundError} when it expired or was revoked (or
   * {@link LeaseExpiredError} when no node answered within twice `attemptTimeoutMs`).
   */
  leaseKeepAlive(id: number): Promise<number> {
    return this.#keeper.renewOnce(id);
  }

  /**
   * Keeps lease `id` alive until `signal` aborts (then resolves): a renewal every third of its
   * TTL on one LeaseKeepAlive stream shared by all the leases this client keeps (replaced, on
   * another node if need be, when it breaks or stops answering). Rejects with
   * {@link LeaseNotFoundError} when the server says the lease is gone, or with
   * {@link LeaseExpiredError} when its TTL passed with no renewal answered, so the caller knows
   * the keys and locks on it are gone. `options.ttlSeconds` (a TTL just granted) lets the
   * first renewal wait a third of it; without it the first goes out at once.
   */
  keepAlive(id: number, signal: AbortSignal, options: KeepOptions = {}): Promise<void> {
    return this.#keeper.keep(id, signal, options);
  }

  /** Counters of the lease keep-alive stream (streams opened, renewals answered, failures). */
  keepAliveStats(): KeepAliveStats {
    return this.#keeper.stats();
  }

  /** Revokes lease `id`: its keys are deleted at one revision. */
  async leaseRevoke(id: number): Promise<void> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    try {
      await this.#call(
        "leader",
        "write",
        true,
        (conn) => unary(conn.etcdLease, conn.etcdLease.LeaseRevoke, { ID: id }, timeoutMs),
      );
    } catch (error) {
      if (error instanceof KeyNotFoundError) throw new LeaseNotFoundError(id);
      throw error;
    }
  }

  /** The remaining and granted TTL of lease `id` and, with `keys`, its keys. */
  async leaseTimeToLive(id: number, options: { keys?: boolean } = {}): Promise<LeaseInfo> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    const r = await this.#call(
      "follower",
      "read",
      true,
      (conn) =>
        unary(conn.etcdLease, conn.etcdLease.LeaseTimeToLive, {
          ID: id,
          keys: options.keys ?? false,
        }, timeoutMs),
    );
    if (r.TTL < 0) throw new LeaseNotFoundError(id);
    return {
      id: r.ID,
      ttlSeconds: r.TTL,
      grantedTtlSeconds: r.grantedTTL,
      keys: r.keys.map((k) => decoder.decode(k)),
    };
  }

  /** etcd's Put with a lease: the key is deleted when the lease expires or is revoked. */
  async #putWithLease(key: string, value: Uint8Array, lease: number): Promise<WriteResult> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    try {
      const r = await this.#call(
        "leader",
        "write",
        true,
        (conn) =>
          unary(conn.etcdKv, conn.etcdKv.Put, {
            key: encoder.encode(key),
            value,
            lease,
          }, timeoutMs),
        key,
      );
      return { version: r.header.revision };
    } catch (error) {
      if (error instanceof KeyNotFoundError) throw new LeaseNotFoundError(lease);
      throw error;
    }
  }

  /** One etcd Txn, retried (callers make it safe to apply twice). */
  #txn(request: EtcdRequest): Promise<EtcdTxnResponse> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    return this.#call(
      "leader",
      "write",
      true,
      (conn) => unary(conn.etcdKv, conn.etcdKv.Txn, request, timeoutMs),
    );
  }

  /** One linearizable etcd Range. */
  #etcdRange(request: EtcdRequest): Promise<EtcdRangeResponse> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    return this.#call(
      "follower",
      "read",
      true,
      (conn) => unary(conn.etcdKv, conn.etcdKv.Range, request, timeoutMs),
    );
  }

  /**
   * Takes the distributed lock `name`, as etcd's clientv3 concurrency.Mutex does: a lease, the
   * key `name/<lease id in hex>` created under it, and then a wait (no polling) for the
   * deletion of the key created just before it, so waiters are served in arrival order. The
   * lease is kept alive until release() (which revokes it, deleting the key); if that fails (the server says the lease is gone, or
   * its TTL passed with no renewal answered) the handle's `lost` signal aborts, with the error
   * as its reason, and a lock() still waiting throws it. The returned `revision` is a fencing
   * token: a holder paused past its TTL may act before it sees `lost`, so a resource should
   * refuse writes carrying a revision older than one it has seen.
   */
  async lock(name: string, options: LockOptions = {}): Promise<HeldLock> {
    const lease = await this.leaseGrant(options.ttlSeconds ?? 60);
    const stop = new AbortController();
    const lost = new AbortController();
    const keeping = this.keepAlive(lease.id, stop.signal, {
      ttlSeconds: lease.ttlSeconds,
      renewedAtMs: lease.grantedAtMs,
    }).catch((error: Error) => lost.abort(error));
    const prefix = encoder.encode(`${name}/`);
    const key = `${name}/${lease.id.toString(16)}`;
    const keyBytes = encoder.encode(key);
    // The lease is this lock's alone: revoking it deletes the key (waiters see the DELETE) in
    // one write. A lease already gone has taken the key with it.
    const release = async () => {
      stop.abort();
      await keeping;
      await this.leaseRevoke(lease.id).catch((error) => {
        if (!(error instanceof LeaseNotFoundError)) throw error;
      });
    };
    try {
      const firstCreated = {
        request_range: {
          key: prefix,
          range_end: prefixEnd(prefix),
          sort_order: "ASCEND",
          sort_target: "CREATE",
          limit: 1,
        },
      };
      const r = await this.#txn({
        compare: [{ result: "EQUAL", target: "CREATE", key: keyBytes, create_revision: 0 }],
        success: [{ request_put: { key: keyBytes, value: EMPTY, lease: lease.id } }, firstCreated],
        failure: [{ request_range: { key: keyBytes } }, firstCreated],
      });
      const revision = r.succeeded
        ? r.header.revision
        : r.responses[0]?.response_range?.kvs[0]?.create_revision ?? 0;
      if (revision === 0) throw new LeaseNotFoundError(lease.id);
      const owner = r.responses[1]?.response_range?.kvs[0];
      if (owner && owner.create_revision !== revision) {
        const giveUp = options.signal
          ? AbortSignal.any([options.signal, lost.signal])
          : lost.signal;
        await this.#waitDeletes(prefix, revision, giveUp);
        // Still ours after the wait? (The lease may have lapsed meanwhile.)
        const mine = await this.#etcdRange({ key: keyBytes });
        if (lost.signal.aborted) throw lost.signal.reason;
        if (mine.kvs.length === 0) throw new LeaseNotFoundError(lease.id);
      }
      return { key, revision, leaseId: lease.id, lost: lost.signal, release };
    } catch (error) {
      await release().catch(() => {});
      throw error;
    }
  }

  /** Waits until no key under `prefix` was created before `revision`. */
  async #waitDeletes(prefix: Uint8Array, revision: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (signal?.aborted) {
        throw signal.reason instanceof LeaseNotFoundError
          ? signal.reason
          : new UnavailableError("lock: gave up waiting");
      }
      const r = await this.#etcdRange({
        key: prefix,
        range_end: prefixEnd(prefix),
        sort_order: "DESCEND",
        sort_target: "CREATE",
        max_create_revision: revision - 1,
        limit: 1,
      });
      const before = r.kvs[0];
      if (!before) return;
      const stop = new AbortController();
      const onAbort = () => stop.abort();
      signal?.addEventListener("abort", onAbort);
      try {
        for await (
          const e of this.watch(decoder.decode(before.key), {
            startRevision: r.header.revision + 1,
            signal: stop.signal,
          })
        ) {
          if (e.type === "delete") break;
        }
      } finally {
        signal?.removeEventListener("abort", onAbort);
      }
    }
  }

  /** The Raft servers (GetServers, asked of the leader), and updates the routing table. */
  async servers(): Promise<ServerEntry[]> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    const response = await this.#call(
      "leader",
      "admin",
      true,
      (conn) => unary(conn.kv, conn.kv.GetServers, {}, timeoutMs),
    );
    const list = response.servers.map((s) => ({
      id: s.id,
      rpcAddr: s.rpc_addr,
      isLeader: s.is_leader,
      isVoter: s.is_voter,
    }));
    if (this.#discover) {
      this.#picker.setServers(
        list.filter((s) => s.rpcAddr !== "").map((s) => ({ ...s, addr: s.rpcAddr })),
      );
    }
    return list;
  }

  /** The gossip members as the leader sees them. */
  async members(): Promise<MemberEntry[]> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    const response = await this.#call(
      "leader",
      "admin",
      true,
      (conn) => unary(conn.admin, conn.admin.Members, {}, timeoutMs),
    );
    return response.members.map((m) => ({
      name: m.name,
      gossipAddr: m.gossip_addr,
      rpcAddr: m.rpc_addr,
      state: m.state,
    }));
  }

  /** Removes server `id` from the Raft configuration. */
  async removeServer(id: string): Promise<void> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    await this.#call(
      "leader",
      "admin",
      false,
      (conn) => unary(conn.admin, conn.admin.RemoveServer, { id }, timeoutMs),
    );
    this.refresh().catch(() => {});
  }

  /** Hands leadership to `id` (any up-to-date voter when absent); resolves with the new leader's id. */
  async transferLeadership(id?: string): Promise<string> {
    const timeoutMs = this.#options.attemptTimeoutMs;
    const response = await this.#call(
      "leader",
      "admin",
      false,
      (conn) => unary(conn.admin, conn.admin.TransferLeadership, { id: id ?? "" }, timeoutMs),
    );
    this.refresh().catch(() => {});
    return response.leader_id;
  }

  /**
   * Asks the node at `addr` (not routed, not retried) to leave the cluster. A node may shut
   * down before its answer is out: a call the server cancelled, or a connection dropped after
   * it was established, counts as done. A node that cannot be reached at all is an error.
   */
  async leave(addr: string): Promise<void> {
    const conn = this.#connection(addr);
    try {
      await conn.track(
        unary<Empty, Empty>(conn.admin, conn.admin.Leave, {}, this.#options.attemptTimeoutMs),
      );
      conn.count("admin");
    } catch (error) {
      const gone = isServiceError(error) &&
        (error.code === grpc.status.CANCELLED ||
          (error.code === grpc.status.UNAVAILABLE && /Connection dropped/i.test(error.details)));
      if (gone) {
        conn.count("admin");
        return;
      }
      conn.countFailure();
      throw toClientError(error);
    }
  }

  /** A consistent backup of the whole state machine, from the leader (retried from scratch). */
  snapshot(): Promise<Uint8Array> {
    return this.#call("leader", "admin", true, async (conn) => {
      const parts: Uint8Array[] = [];
      let total = 0;
      for await (const chunk of conn.admin.Snapshot({}) as AsyncIterable<{ data: Uint8Array }>) {
        parts.push(chunk.data);
        total += chunk.data.length;
      }
      const out = new Uint8Array(total);
      let offset = 0;
      for (const part of parts) {
        out.set(part, offset);
        offset += part.length;
      }
      return out;
    });
  }

  /**
   * The grpc.health.v1 status of the node at `addr` (default: the first usable node), for
   * `service` ("" = the whole server). One attempt, no retry, so it reports what it sees.
   */
  async health(addr?: string, service = ""): Promise<ServingStatus> {
    const target = addr ?? this.#picker.usable(Date.now())[0];
    const conn = this.#connection(target);
    try {
      const r = await conn.track(
        unary(conn.health, conn.health.Check, { service }, this.#options.attemptTimeoutMs),
      );
      conn.count("admin");
      return r.status;
    } catch (error) {
      conn.countFailure();
      throw toClientError(error);
    }
  }

  /** Per-node counters of answered calls, for every node this client has talked to. */
  nodeStats(): NodeStats[] {
    return [...this.#connections.values()].map((c) => c.stats());
  }

  /**
   * Stops the refresh timer and closes every channel once the calls in flight on it are done
   * (they all have deadlines); later calls fail with UnavailableError.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#keeper.close();
    for (const conn of this.#connections.values()) conn.close();
    this.#connections.clear();
  }
}
