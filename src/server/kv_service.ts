/**
 * The api.KV and api.Admin handlers over a {@link KvBackend}: validation at the edge,
 * authorization, consistency, and one observation per RPC. Errors stay typed until
 * status.ts maps them.
 */
import { setImmediate } from "node:timers";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import type { PeerIdentities } from "./http2_guard.ts";
import type {
  AppendRequest,
  AppendResponse,
  CompareAndSetRequest,
  CompareAndSetResponse,
  Consistency,
  DeleteRequest,
  DeleteResponse,
  Empty,
  GetRequest,
  GetResponse,
  GetServersResponse,
  ListRequest,
  MembersResponse,
  MessageInput,
  RangeRequest,
  RemoveServerRequest,
  SetRequest,
  SetResponse,
  SnapshotChunk,
  TransferLeadershipRequest,
  TransferLeadershipResponse,
} from "../api/mod.ts";
import {
  type GetResponseSize,
  RangeResponseWriter,
  sizeGetResponse,
  writeFrameHeader,
  writeGetResponse,
} from "../api/mod.ts";
import {
  ClientIdTooLargeError,
  EmptyKeyError,
  InvalidArgumentError,
  KeyNotFoundError,
  KeyTooLargeError,
  PermissionDeniedError,
  QuotaExceededError,
  ValueTooLargeError,
} from "../errors.ts";
import {
  type ClientSession,
  type CommandResult,
  DEFAULT_QUOTA_BYTES,
  MAX_CLIENT_ID_BYTES,
  type Refusal,
} from "../kv/mod.ts";
import type { KvBackend, ReadConsistency } from "./backend.ts";
import { toGrpcStatus } from "./status.ts";

/** Default limit on a key's UTF-8 length. */
export const DEFAULT_MAX_KEY_BYTES = 4096;
/** Default limit on a value's length (1 MiB). */
export const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;
/**
 * Keys a List examines per event-loop turn: after this many (sent or skipped by
 * authorization) it yields a macrotask, so listing a million keys a subject may not read
 * never stops Raft ticks, other requests or I/O.
 */
export const LIST_YIELD_KEYS = 1024;
/**
 * Bytes of framed GetResponse messages a List gathers before one write to its HTTP/2 stream:
 * many messages per write (and per DATA frame) instead of one write per key.
 */
export const LIST_BATCH_BYTES = 64 * 1024;
/**
 * Most bytes a List leaves queued in its HTTP/2 stream: beyond, it waits for 'drain' before
 * reading more of the store, so a slow client costs the node at most this plus one batch.
 */
export const LIST_MAX_BUFFERED_BYTES = 1024 * 1024;
/** Bytes of entries one Range response carries at most (a single larger entry goes alone). */
export const RANGE_PAGE_BYTES = 2 * 1024 * 1024;
/**
 * Keys one Range response examines at most (sent or skipped by authorization); a page is
 * built in one event-loop turn, so this bounds the turn.
 */
export const RANGE_PAGE_EXAMINED_KEYS = 16 * 1024;
/** Size of the chunks Admin.Snapshot streams. */
export const SNAPSHOT_CHUNK_BYTES = 256 * 1024;

/** What an authorization decision is about: produce (writes), consume (reads), admin. */
export type AuthAction = "produce" | "consume" | "admin";

/** Decides whether `subject` (the client certificate's CN; "" in plaintext) may act on object. */
export type AuthorizeFn = (
  subject: string,
  object: string,
  action: AuthAction,
) => boolean | Promise<boolean>;

/** One finished RPC, reported once (metrics and logging plug in here). */
export interface RequestInfo {
  /** The full gRPC method path, e.g. "/api.KV/Get". */
  readonly method: string;
  readonly code: grpc.status;
  readonly durationMs: number;
  readonly subject: string;
  /** The error behind a non-OK code. */
  readonly error?: Error;
}

/** Settings of the api.KV / api.Admin handlers. */
export interface KvServiceOptions {
  readonly backend: KvBackend;
  /** Absent: everything is allowed (plaintext development mode). */
  readonly authorize?: AuthorizeFn;
  /** Called once per KV/Admin RPC. Absent: INTERNAL errors are written to stderr. */
  readonly onRequest?: (info: RequestInfo) => void;
  /** Longest key accepted, in UTF-8 bytes; default {@link DEFAULT_MAX_KEY_BYTES}. */
  readonly maxKeyBytes?: number;
  /**
   * Longest value accepted, and longest value Append may produce (carried in each command, so
   * the state machine refuses a longer result on every replica); default 1 MiB.
   */
  readonly maxValueBytes?: number;
  /**
   * Data-size quota in bytes (keys plus values): writes that would grow the data above it are
   * refused by the state machine (carried in each command) with RESOURCE_EXHAUSTED; default
   * {@link DEFAULT_QUOTA_BYTES}.
   */
  readonly quotaBytes?: number;
  /**
   * Clock read into each command's `timeMs` for session expiry; only differences between
   * readings of one `clockSource` count. Default: the monotonic `performance.now()`.
   */
  readonly nowMs?: () => number;
  /**
   * Names the clock behind `nowMs` in commands; must differ between processes. Default: the
   * backend's node id and a random suffix drawn once per handler set (each process start).
   */
  readonly clockSource?: string;
  /**
   * Certificate subjects of connections the one-port server guards (see http2_guard.ts),
   * consulted when grpc-js cannot see the TLS socket itself.
   */
  readonly identities?: PeerIdentities;
  /**
   * Tests only: List writes one message object per entry through grpc-js (the fallback path)
   * instead of framed batches on the HTTP/2 stream.
   */
  readonly listObjectWrites?: boolean;
}

/** Handlers ready for `server.addService(kvServiceDefinition, kv)` and the Admin service. */
export interface KvServiceHandlers {
  readonly kv: grpc.UntypedServiceImplementation;
  readonly admin: grpc.UntypedServiceImplementation;
}

interface Authz {
  readonly action: AuthAction;
  readonly object: string;
}

const encoder = new TextEncoder();
const EMPTY_BYTES = new Uint8Array(0);
const ALL: Authz = { action: "consume", object: "*" };
const ADMIN: Authz = { action: "admin", object: "*" };

function consistencyOf(c: Consistency | undefined): ReadConsistency {
  return c === "STALE" ? "stale" : "linearizable";
}

/** The client certificate's Common Name, or "" without TLS. */
export function subjectOf(
  call: Pick<grpc.ServerUnaryCall<unknown, unknown>, "getAuthContext" | "getPeer">,
  identities?: PeerIdentities,
): string {
  const cn = call.getAuthContext()?.sslPeerCertificate?.subject?.CN;
  if (typeof cn === "string") return cn;
  return identities?.get(call.getPeer()) ?? "";
}

/**
 * Builds the api.KV and api.Admin handlers. Guarantees: every request is validated from its
 * own fields (empty or oversized key, value or client_id → INVALID_ARGUMENT) and authorized
 * before anything reads state or reaches the backend, so a denied answer is the same whether
 * or not the key exists; CompareAndSet needs `consume` and `produce` on its key (a compare is
 * a read); writes carry the value limit and data-size quota for the state machine to enforce
 * (refusals → INVALID_ARGUMENT / RESOURCE_EXHAUSTED); sessions are scoped to the subject; a
 * handler never throws into grpc-js (any failure becomes a status); `onRequest` sees each RPC
 * exactly once.
 */
export function createKvServiceHandlers(options: KvServiceOptions): KvServiceHandlers {
  const backend = options.backend;
  const maxKeyBytes = options.maxKeyBytes ?? DEFAULT_MAX_KEY_BYTES;
  const maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
  const quotaBytes = options.quotaBytes ?? DEFAULT_QUOTA_BYTES;
  const nowMs = options.nowMs ?? (() => Math.floor(performance.now()));
  const clockSource = options.clockSource ??
    `${backend.nodeId}#${crypto.randomUUID().slice(0, 8)}`;
  /** Fields every command from this edge carries: its clock and the limits it must respect. */
  const stamp = () => ({ timeMs: nowMs(), clockSource, maxValueBytes, quotaBytes });
  const authorize = options.authorize;
  const forceObjectWrites = options.listObjectWrites ?? false;
  const onRequest = options.onRequest ?? ((info: RequestInfo) => {
    if (info.code === grpc.status.INTERNAL) {
      console.error(`mokv: ${info.method} failed:`, info.error);
    }
  });

  function checkKey(key: string): void {
    if (key.length === 0) throw new EmptyKeyError();
    // UTF-8 never uses fewer bytes than UTF-16 code units; only long keys need the exact count.
    if (key.length * 3 > maxKeyBytes) {
      const sizeBytes = encoder.encode(key).length;
      if (sizeBytes > maxKeyBytes) throw new KeyTooLargeError(sizeBytes, maxKeyBytes);
    }
  }

  function checkValue(value: Uint8Array): void {
    if (value.length > maxValueBytes) throw new ValueTooLargeError(value.length, maxValueBytes);
  }

  /** The session of a write, scoped to the subject; client_id is bounded in bytes. */
  function sessionOf(subject: string, clientId: string, seq: number): ClientSession | undefined {
    if (clientId === "") return undefined;
    if (clientId.length * 3 > MAX_CLIENT_ID_BYTES) {
      const sizeBytes = encoder.encode(clientId).length;
      if (sizeBytes > MAX_CLIENT_ID_BYTES) {
        throw new ClientIdTooLargeError(sizeBytes, MAX_CLIENT_ID_BYTES);
      }
    }
    if (!(seq >= 1)) {
      throw new InvalidArgumentError("seq must be >= 1 when client_id is set");
    }
    return { subject, clientId, seq };
  }

  /** Every decision in `authz` must allow; the first refusal throws. */
  async function check(subject: string, authz: Authz | readonly Authz[]): Promise<void> {
    if (!authorize) return;
    for (const one of Array.isArray(authz) ? authz : [authz as Authz]) {
      if (!(await authorize(subject, one.object, one.action))) {
        throw new PermissionDeniedError(subject || "anonymous", one.action, one.object);
      }
    }
  }

  function report(
    method: string,
    startedMs: number,
    subject: string,
    error?: unknown,
    code?: grpc.status,
  ): void {
    const status = code ?? (error === undefined ? grpc.status.OK : toGrpcStatus(error).code);
    const info: RequestInfo = {
      method,
      code: status,
      durationMs: performance.now() - startedMs,
      subject,
      ...(error === undefined
        ? {}
        : { error: error instanceof Error ? error : new Error(String(error)) }),
    };
    try {
      onRequest(info);
    } catch (hookError) {
      console.error("mokv: onRequest hook threw:", hookError);
    }
  }

  /** Prefix and start bounds are keys too: oversized ones are refused before any read. */
  function checkBounds(req: { prefix: string; start: string }): Authz {
    for (const bound of [req.prefix, req.start]) {
      if (bound.length * 3 > maxKeyBytes) {
        const sizeBytes = encoder.encode(bound).length;
        if (sizeBytes > maxKeyBytes) throw new KeyTooLargeError(sizeBytes, maxKeyBytes);
      }
    }
    return { action: "consume", object: req.prefix === "" ? "*" : req.prefix };
  }

  /**
   * List: after validation, authorization and one read barrier (one read index for the whole
   * stream), entries are encoded by hand into batches of many framed messages written straight
   * to the HTTP/2 stream, waiting for 'drain' whenever more than LIST_MAX_BUFFERED_BYTES are
   * queued. When grpc-js's stream cannot be reached, it falls back to one call.write per entry.
   */
  function listHandler(): grpc.handleServerStreamingCall<ListRequest, MessageInput<GetResponse>> {
    const method = "/api.KV/List";
    return (call) => {
      const startedMs = performance.now();
      const subject = subjectOf(call, options.identities);
      const req = call.request;
      const done = watchCall(call);
      (async () => {
        await check(subject, checkBounds(req));
        await backend.readBarrier(consistencyOf(req.consistency));
        if (done.cancelled) throw new CancelledError();
        // An allowed prefix does not make every key under it allowed (an exact-key rule, or a
        // pattern narrower than the prefix): each key is checked, and `limit` counts only the
        // keys sent, so a short page still means the end.
        const allowed = authorize ? (key: string) => authorize(subject, key, "consume") : undefined;
        const entries = backend.reader.list({
          prefix: req.prefix,
          start: req.start,
          ...(allowed ? {} : { limit: req.limit }),
        });
        const sink = forceObjectWrites ? undefined : rawSink(call, done);
        if (sink) await writeFramed(sink, entries, allowed, req.limit, done);
        else await writeObjects(call, entries, allowed, req.limit, done);
        if (done.cancelled) throw new CancelledError();
      })().then(
        () => {
          done.release();
          call.end();
          report(method, startedMs, subject);
        },
        (error: unknown) => {
          done.release();
          if (done.cancelled) {
            report(method, startedMs, subject, error, grpc.status.CANCELLED);
          } else {
            call.emit("error", toGrpcStatus(error));
            report(method, startedMs, subject, error);
          }
        },
      );
    };
  }

  // `validate` looks at the request only, never at state; `handle` runs after authorization,
  // so nothing an unauthorized subject sees depends on what is stored.
  function unary<Req, Res>(
    method: string,
    validate: (req: Req) => Authz | readonly Authz[],
    handle: (req: Req, subject: string) => Promise<MessageInput<Res>>,
  ): grpc.handleUnaryCall<Req, MessageInput<Res>> {
    return (call, callback) => {
      const startedMs = performance.now();
      const subject = subjectOf(call, options.identities);
      (async () => {
        const authz = validate(call.request);
        await check(subject, authz);
        return await handle(call.request, subject);
      })().then(
        (response) => {
          callback(null, response);
          report(method, startedMs, subject);
        },
        (error: unknown) => {
          callback(toGrpcStatus(error));
          report(method, startedMs, subject, error);
        },
      );
    };
  }

  function stream<Req, Res>(
    method: string,
    validate: (req: Req) => Authz | readonly Authz[],
    produce: (
      req: Req,
      subject: string,
      isCancelled: () => boolean,
    ) => Promise<Iterable<MessageInput<Res>> | AsyncIterable<MessageInput<Res>>>,
  ): grpc.handleServerStreamingCall<Req, MessageInput<Res>> {
    return (call) => {
      const startedMs = performance.now();
      const subject = subjectOf(call, options.identities);
      let cancelled = false;
      const stop = new Promise<void>((resolve) => {
        call.once("cancelled", () => {
          cancelled = true;
          resolve();
        });
        call.once("close", resolve);
        call.once("error", resolve);
      });
      (async () => {
        const authz = validate(call.request);
        await check(subject, authz);
        for await (const item of await produce(call.request, subject, () => cancelled)) {
          if (cancelled) throw new CancelledError();
          if (!call.write(item)) {
            await Promise.race([new Promise((resolve) => call.once("drain", resolve)), stop]);
          }
        }
        if (cancelled) throw new CancelledError();
      })().then(
        () => {
          call.end();
          report(method, startedMs, subject);
        },
        (error: unknown) => {
          if (cancelled) {
            report(method, startedMs, subject, error, grpc.status.CANCELLED);
          } else {
            call.emit("error", toGrpcStatus(error));
            report(method, startedMs, subject, error);
          }
        },
      );
    };
  }

  const kv: grpc.UntypedServiceImplementation = {
    Get: unary<GetRequest, GetResponse>(
      "/api.KV/Get",
      (req) => {
        checkKey(req.key);
        return { action: "consume", object: req.key };
      },
      async (req) => {
        await backend.readBarrier(consistencyOf(req.consistency));
        const entry = backend.reader.get(req.key);
        if (!entry) throw new KeyNotFoundError(req.key);
        return { key: req.key, value: entry.value, version: entry.version };
      },
    ),
    Set: unary<SetRequest, SetResponse>(
      "/api.KV/Set",
      (req) => {
        checkKey(req.key);
        checkValue(req.value);
        return { action: "produce", object: req.key };
      },
      async (req, subject) => {
        const session = sessionOf(subject, req.client_id, req.seq);
        const result = succeeded(
          await backend.apply({
            type: "set",
            key: req.key,
            value: req.value,
            ...stamp(),
            ...(session ? { session } : {}),
            ...(req.lease ? { lease: req.lease } : {}),
          }),
        );
        return { ok: result.ok, version: result.version };
      },
    ),
    Delete: unary<DeleteRequest, DeleteResponse>(
      "/api.KV/Delete",
      (req) => {
        checkKey(req.key);
        return { action: "produce", object: req.key };
      },
      async (req, subject) => {
        const session = sessionOf(subject, req.client_id, req.seq);
        const result = await backend.apply({
          type: "delete",
          key: req.key,
          ...stamp(),
          ...(session ? { session } : {}),
        });
        return { ok: result.ok, version: result.version, existed: result.existed ?? false };
      },
    ),
    List: listHandler(),
    Range: unary<RangeRequest, Uint8Array>(
      "/api.KV/Range",
      (req) => checkBounds(req),
      async (req, subject) => {
        await backend.readBarrier(consistencyOf(req.consistency));
        return rangePage(
          backend.reader,
          req,
          authorize ? (key) => authorize(subject, key, "consume") : undefined,
        );
      },
    ),
    GetServers: unary<Empty, GetServersResponse>("/api.KV/GetServers", () => ALL, async () => {
      const servers = await backend.servers();
      return {
        servers: servers.map((s) => ({
          id: s.id,
          rpc_addr: s.rpcAddr,
          is_leader: s.isLeader,
          is_voter: s.isVoter,
        })),
      };
    }),
    Append: unary<AppendRequest, AppendResponse>(
      "/api.KV/Append",
      (req) => {
        checkKey(req.key);
        checkValue(req.value);
        return { action: "produce", object: req.key };
      },
      async (req, subject) => {
        const session = sessionOf(subject, req.client_id, req.seq);
        // The state machine decides (the value may grow before this append applies); this
        // early answer, after authorization, only spares the log a write that cannot fit.
        const current = backend.reader.get(req.key);
        if (current && current.value.length + req.value.length > maxValueBytes) {
          throw new ValueTooLargeError(current.value.length + req.value.length, maxValueBytes);
        }
        const result = succeeded(
          await backend.apply({
            type: "append",
            key: req.key,
            value: req.value,
            ...stamp(),
            ...(session ? { session } : {}),
          }),
        );
        return { ok: result.ok, version: result.version, length: result.length ?? 0 };
      },
    ),
    CompareAndSet: unary<CompareAndSetRequest, CompareAndSetResponse>(
      "/api.KV/CompareAndSet",
      (req) => {
        checkKey(req.key);
        checkValue(req.value);
        checkValue(req.expect_value);
        // A compare reads the key (a failed one answers its value): consume and produce.
        return [{ action: "consume", object: req.key }, { action: "produce", object: req.key }];
      },
      async (req, subject) => {
        const session = sessionOf(subject, req.client_id, req.seq);
        const result = succeeded(
          await backend.apply({
            type: "cas",
            key: req.key,
            value: req.value,
            ...stamp(),
            ...(req.has_expect_value
              ? { expectValue: req.expect_value }
              : { expectVersion: req.expect_version }),
            ...(session ? { session } : {}),
          }),
        );
        return {
          ok: result.ok,
          version: result.version,
          current_value: result.value ?? EMPTY_BYTES,
        };
      },
    ),
  };

  const admin: grpc.UntypedServiceImplementation = {
    Members: unary<Empty, MembersResponse>("/api.Admin/Members", () => ALL, () =>
      Promise.resolve({
        members: backend.members().map((m) => ({
          name: m.name,
          gossip_addr: m.gossipAddr,
          rpc_addr: m.rpcAddr,
          state: m.state,
        })),
      })),
    RemoveServer: unary<RemoveServerRequest, Empty>(
      "/api.Admin/RemoveServer",
      (req) => {
        if (req.id === "") throw new InvalidArgumentError("id must not be empty");
        return ADMIN;
      },
      async (req) => {
        await backend.removeServer(req.id);
        return {};
      },
    ),
    TransferLeadership: unary<TransferLeadershipRequest, TransferLeadershipResponse>(
      "/api.Admin/TransferLeadership",
      () => ADMIN,
      async (req) => ({
        leader_id: await backend.transferLeadership(req.id === "" ? undefined : req.id),
      }),
    ),
    Leave: unary<Empty, Empty>("/api.Admin/Leave", () => ADMIN, async () => {
      await backend.leave();
      return {};
    }),
    Snapshot: stream<Empty, SnapshotChunk>("/api.Admin/Snapshot", () => ADMIN, async () => {
      const image = await backend.snapshot();
      return chunks(image, SNAPSHOT_CHUNK_BYTES);
    }),
  };

  return { kv, admin };
}

/** The client went away in the middle of a stream. */
class CancelledError extends Error {
  constructor() {
    super("cancelled by the client");
    this.name = "CancelledError";
  }
}

type ListItem = { key: string; value: Uint8Array; version: number };

/** The typed error of a write the state machine refused. */
function refusalError(refused: Refusal): Error {
  switch (refused.reason) {
    case "value-too-large":
      return new ValueTooLargeError(refused.sizeBytes, refused.limitBytes);
    case "quota-exceeded":
      return new QuotaExceededError(refused.limitBytes, refused.sizeBytes);
    default: {
      const never: never = refused.reason;
      return new InvalidArgumentError(`refused: ${never}`);
    }
  }
}

/** `result`, or the typed error when the state machine refused the write. */
function succeeded(result: CommandResult): CommandResult {
  if (result.refused) throw refusalError(result.refused);
  if (result.etcdError) throw new InvalidArgumentError(result.etcdError.message);
  return result;
}

function nextMacrotask(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A per-key read decision (absent: everything allowed). */
type Allowed = ((key: string) => boolean | Promise<boolean>) | undefined;

/** Whether `allowed` accepts `key`, without a microtask when the decision is synchronous. */
function isAllowed(allowed: Allowed, key: string): boolean | Promise<boolean> {
  return allowed === undefined ? true : allowed(key);
}

/** The end of a streaming call: cancelled by the client, or closed. */
interface CallWatch {
  readonly cancelled: boolean;
  /** Resolves the pending {@link CallWatch.wait}, if any. */
  wake(): void;
  /** A promise the next wake() (drain, cancel, close) resolves. */
  wait(): Promise<void>;
  /** Drops the listeners. */
  release(): void;
}

function watchCall(call: grpc.ServerWritableStream<unknown, unknown>): CallWatch {
  let cancelled = false;
  let waiter: (() => void) | undefined;
  const wake = () => {
    const w = waiter;
    waiter = undefined;
    w?.();
  };
  const onCancel = () => {
    cancelled = true;
    wake();
  };
  call.once("cancelled", onCancel);
  call.once("close", wake);
  call.once("error", wake);
  return {
    get cancelled() {
      return cancelled;
    },
    wake,
    wait: () => new Promise<void>((resolve) => (waiter = resolve)),
    release() {
      call.off("cancelled", onCancel);
      call.off("close", wake);
      call.off("error", wake);
      wake();
    },
  };
}

/** Where framed messages go: `write` answers whether the caller must wait before more. */
interface FrameSink {
  write(bytes: Uint8Array): Promise<void> | undefined;
}

/** The part of an HTTP/2 stream the framed List writer uses. */
interface RawHttp2Stream {
  write(chunk: Uint8Array): boolean;
  readonly writableLength: number;
  on(event: "drain", listener: () => void): unknown;
  off(event: "drain", listener: () => void): unknown;
  respond: unknown;
}

/**
 * The HTTP/2 stream under a grpc-js server call (library boundary: grpc-js has no public
 * accessor). It walks `call.call` and the interceptors' `nextCall` to grpc-js's base call and
 * takes its `stream`; undefined when that shape is not found, and List falls back to objects.
 */
function http2StreamOf(call: unknown): RawHttp2Stream | undefined {
  let c = (call as { call?: unknown }).call;
  for (let depth = 0; depth < 16 && c !== null && typeof c === "object"; depth++) {
    const stream = (c as { stream?: Partial<RawHttp2Stream> }).stream;
    if (
      stream && typeof stream.write === "function" && typeof stream.respond === "function" &&
      typeof stream.on === "function" && typeof stream.writableLength === "number"
    ) {
      return stream as RawHttp2Stream;
    }
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/**
 * A sink writing whole gRPC messages straight to the call's HTTP/2 stream, after grpc-js sent
 * the response headers; grpc-js still ends the call (trailers follow the data in order).
 */
function rawSink(
  call: grpc.ServerWritableStream<unknown, unknown>,
  done: CallWatch,
): FrameSink | undefined {
  const stream = http2StreamOf(call);
  if (!stream) return undefined;
  call.sendMetadata(new grpc.Metadata());
  stream.on("drain", done.wake);
  call.once("finish", () => stream.off("drain", done.wake));
  return {
    write(bytes) {
      const ok = stream.write(bytes);
      if (ok || stream.writableLength <= LIST_MAX_BUFFERED_BYTES || done.cancelled) {
        return undefined;
      }
      return done.wait();
    },
  };
}

/**
 * Encodes the allowed entries (at most `limit`, 0: all) as framed GetResponse messages, in
 * batches of about LIST_BATCH_BYTES, into `sink`. Every LIST_YIELD_KEYS keys examined it
 * yields a macrotask and stops once the client has gone, so a scan over keys the subject may
 * not read is bounded per event-loop turn and never outlives its request.
 */
async function writeFramed(
  sink: FrameSink,
  entries: Iterable<ListItem>,
  allowed: Allowed,
  limit: number,
  done: CallWatch,
): Promise<void> {
  const size: GetResponseSize = { keyBytes: 0, bodyBytes: 0 };
  let buf = Buffer.allocUnsafe(LIST_BATCH_BYTES);
  let at = 0;
  let sent = 0;
  let examined = 0;
  const flush = async () => {
    if (at === 0) return;
    const wait = sink.write(buf.subarray(0, at));
    buf = Buffer.allocUnsafe(LIST_BATCH_BYTES);
    at = 0;
    if (wait) await wait;
  };
  for (const e of entries) {
    if (limit > 0 && sent >= limit) break;
    if (++examined % LIST_YIELD_KEYS === 0) {
      await flush();
      await nextMacrotask();
      if (done.cancelled) return;
    }
    let ok = isAllowed(allowed, e.key);
    if (typeof ok !== "boolean") ok = await ok;
    if (!ok) continue;
    const body = sizeGetResponse(e, size);
    const need = 5 + body;
    if (at + need > buf.length) {
      await flush();
      if (done.cancelled) return;
      if (need > buf.length) buf = Buffer.allocUnsafe(need);
    }
    at = writeFrameHeader(buf, at, body);
    at = writeGetResponse(buf, at, e, size);
    sent++;
  }
  await flush();
}

/** The fallback: one message object per entry through grpc-js, with the same bounds. */
async function writeObjects(
  call: grpc.ServerWritableStream<unknown, MessageInput<GetResponse>>,
  entries: Iterable<ListItem>,
  allowed: Allowed,
  limit: number,
  done: CallWatch,
): Promise<void> {
  let sent = 0;
  let examined = 0;
  call.on("drain", done.wake);
  try {
    for (const e of entries) {
      if (limit > 0 && sent >= limit) return;
      if (++examined % LIST_YIELD_KEYS === 0) {
        await nextMacrotask();
        if (done.cancelled) return;
      }
      let ok = isAllowed(allowed, e.key);
      if (typeof ok !== "boolean") ok = await ok;
      if (!ok) continue;
      sent++;
      if (!call.write({ key: e.key, value: e.value, version: e.version })) {
        await done.wait();
        if (done.cancelled) return;
      }
    }
  } finally {
    call.off("drain", done.wake);
  }
}

/**
 * One Range page, encoded by hand: the allowed entries from `start` (at most `limit`, 0: as
 * many as fit RANGE_PAGE_BYTES), examining at most RANGE_PAGE_EXAMINED_KEYS keys. With a
 * synchronous `allowed` (mokv's Casbin authorizer) the page is built in one pass with no await,
 * so it is one consistent view of the state; `next_key` is the first key not examined.
 */
async function rangePage(
  reader: KvBackend["reader"],
  req: RangeRequest,
  allowed: Allowed,
): Promise<Uint8Array> {
  const out = new RangeResponseWriter();
  const limit = req.limit > 0 ? req.limit : Infinity;
  let examined = 0;
  for (const e of reader.list({ prefix: req.prefix, start: req.start })) {
    if (
      out.count >= limit || examined >= RANGE_PAGE_EXAMINED_KEYS ||
      (out.count > 0 && out.sizeBytes + out.bytesFor(e) > RANGE_PAGE_BYTES)
    ) {
      return out.finish(true, e.key);
    }
    examined++;
    let ok = isAllowed(allowed, e.key);
    if (typeof ok !== "boolean") ok = await ok;
    if (ok) out.add(e);
  }
  return out.finish(false, "");
}

/**
 * `definition` with api.KV/Range's response serializer taking the bytes {@link rangePage}
 * encoded as they are (message objects still go through protobufjs).
 */
export function withPreEncodedResponses(
  definition: grpc.ServiceDefinition,
): grpc.ServiceDefinition {
  const range = definition.Range;
  if (!range) return definition;
  const encode = range.responseSerialize;
  return {
    ...definition,
    Range: {
      ...range,
      responseSerialize: (value: unknown) =>
        value instanceof Uint8Array
          ? Buffer.from(value.buffer, value.byteOffset, value.byteLength)
          : encode(value),
    },
  };
}

function* chunks(bytes: Uint8Array, sizeBytes: number): Generator<MessageInput<SnapshotChunk>> {
  if (bytes.length === 0) {
    yield { data: bytes };
    return;
  }
  for (let offset = 0; offset < bytes.length; offset += sizeBytes) {
    yield { data: bytes.subarray(offset, offset + sizeBytes) };
  }
}
