/**
 * The api.KV and api.Admin handlers over a {@link KvBackend}: validation at the edge,
 * authorization, consistency, and one observation per RPC. Errors stay typed until
 * status.ts maps them.
 */
import { setImmediate } from "node:timers";
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
  RemoveServerRequest,
  SetRequest,
  SetResponse,
  SnapshotChunk,
  TransferLeadershipRequest,
  TransferLeadershipResponse,
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
    List: stream<ListRequest, GetResponse>(
      "/api.KV/List",
      (req) => {
        for (const bound of [req.prefix, req.start]) {
          const sizeBytes = encoder.encode(bound).length;
          if (sizeBytes > maxKeyBytes) throw new KeyTooLargeError(sizeBytes, maxKeyBytes);
        }
        return { action: "consume", object: req.prefix === "" ? "*" : req.prefix };
      },
      async (req, subject, isCancelled) => {
        await backend.readBarrier(consistencyOf(req.consistency));
        if (!authorize) {
          return allowedEntries(
            backend.reader.list({ prefix: req.prefix, start: req.start, limit: req.limit }),
            undefined,
            req.limit,
            isCancelled,
          );
        }
        // An allowed prefix does not make every key under it allowed (an exact-key rule, or a
        // pattern narrower than the prefix): each key is checked, and `limit` counts only the
        // keys sent, so a short page still means the end.
        return allowedEntries(
          backend.reader.list({ prefix: req.prefix, start: req.start }),
          (key) => authorize(subject, key, "consume"),
          req.limit,
          isCancelled,
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
  return result;
}

function nextMacrotask(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function toGetResponse(e: ListItem): MessageInput<GetResponse> {
  return { key: e.key, value: e.value, version: e.version };
}

/**
 * The entries whose key `allowed` accepts (all of them without `allowed`), at most `limit` of
 * them (0: no limit). Every {@link LIST_YIELD_KEYS} keys examined it yields a macrotask and
 * stops once the client has gone, so a scan over keys the subject may not read is bounded per
 * event-loop turn and never outlives its request.
 */
async function* allowedEntries(
  entries: Iterable<ListItem>,
  allowed: ((key: string) => boolean | Promise<boolean>) | undefined,
  limit: number,
  isCancelled: () => boolean,
): AsyncGenerator<MessageInput<GetResponse>> {
  let sent = 0;
  let examined = 0;
  for (const e of entries) {
    if (limit > 0 && sent >= limit) return;
    if (++examined % LIST_YIELD_KEYS === 0) {
      await nextMacrotask();
      if (isCancelled()) return;
    }
    if (allowed && !(await allowed(e.key))) continue;
    sent++;
    yield toGetResponse(e);
  }
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
