/**
 * etcd v3's KV, Cluster and Maintenance services over the node (wire compatible with etcd
 * 3.4, so etcdctl and clientv3 work unchanged). One state machine serves these and api.KV:
 * revisions are Raft indexes; a Put, DeleteRange or Txn is one log entry; a Range is served
 * from local state after a ReadIndex barrier unless `serializable`. Every key a request reads
 * or writes is authorized (authz.ts) before anything reads state. Errors carry etcd's codes
 * and messages (errors.ts).
 */
import * as grpc from "@grpc/grpc-js";
import { PermissionDeniedError } from "../errors.ts";
import {
  checkTxn,
  type Command,
  type CommandResult,
  ETCD_ERRORS,
  evaluateReadOnlyTxn,
  isReadOnlyTxn,
  keyString,
  normalizeTxn,
  type RangeRequest,
  type TxnRequest,
  type TxnResponse,
} from "../kv/mod.ts";
import type { AuthorizeFn, RequestInfo } from "../server/kv_service.ts";
import { subjectOf } from "../server/kv_service.ts";
import { applyHere, type EtcdBackend } from "./backend.ts";
import { type EtcdAuthz, rangeObject, txnAuthz } from "./authz.ts";
import { failureError, NO_LEADER, toEtcdStatus } from "./errors.ts";
import { CLUSTER_ID, memberId, nameOfMember } from "./ids.ts";
import { EtcdError } from "../kv/mod.ts";

/** The version etcd clients see in Status (the etcd API version mokv speaks). */
export const ETCD_API_VERSION = "3.4.0";

/** Settings of etcd's services. */
export interface EtcdServiceOptions {
  readonly backend: EtcdBackend;
  /** Absent: everything is allowed (plaintext development mode). */
  readonly authorize?: AuthorizeFn;
  readonly onRequest?: (info: RequestInfo) => void;
  /** Longest key accepted, in bytes (max-key-bytes). */
  readonly maxKeyBytes: number;
  /** Longest value accepted (max-value-bytes), carried in each write for the state machine. */
  readonly maxValueBytes: number;
  /** Data-size quota (quota-bytes), carried in each write. */
  readonly quotaBytes: number;
  /** Fields every command carries: the edge's clock reading and source (see kv_service.ts). */
  readonly stamp: () => { timeMs: number; clockSource: string };
}

/** etcd's ResponseHeader for this node now, at `revision` (default: the store's). */
export function header(backend: EtcdBackend, revision?: number) {
  return {
    cluster_id: CLUSTER_ID,
    member_id: memberId(backend.nodeId),
    revision: revision ?? backend.store.revision,
    raft_term: backend.raftStatus().term,
  };
}

/** Sizes etcd checks at the edge. */
function checkSizes(txn: TxnRequest, opts: EtcdServiceOptions): void {
  const visit = (t: TxnRequest) => {
    for (const op of [...t.success, ...t.failure]) {
      const p = op.request_put;
      if (p) {
        if (p.key.length > opts.maxKeyBytes) throw ETCD_ERRORS.valueTooLarge();
        if (p.value.length > opts.maxValueBytes) throw ETCD_ERRORS.valueTooLarge();
      }
      if (op.request_txn) visit(op.request_txn);
    }
  };
  visit(txn);
}

/** Builds the handler sets for `server.addService` of etcd's KV, Cluster and Maintenance. */
export function createEtcdHandlers(opts: EtcdServiceOptions): {
  kv: grpc.UntypedServiceImplementation;
  cluster: grpc.UntypedServiceImplementation;
  maintenance: grpc.UntypedServiceImplementation;
} {
  const backend = opts.backend;
  const onRequest = opts.onRequest ?? ((info: RequestInfo) => {
    if (info.code === grpc.status.INTERNAL) console.error(`mokv: ${info.method}:`, info.error);
  });

  async function check(subject: string, decisions: readonly EtcdAuthz[]): Promise<void> {
    if (!opts.authorize) return;
    for (const d of decisions) {
      if (!(await opts.authorize(subject, d.object, d.action))) {
        throw new PermissionDeniedError(subject || "anonymous", d.action, d.object);
      }
    }
  }

  function report(method: string, startedMs: number, subject: string, error?: unknown): void {
    const code = error === undefined ? grpc.status.OK : toEtcdStatus(error).code;
    try {
      onRequest({
        method,
        code,
        durationMs: performance.now() - startedMs,
        subject,
        ...(error === undefined
          ? {}
          : { error: error instanceof Error ? error : new Error(String(error)) }),
      });
    } catch (hookError) {
      console.error("mokv: onRequest hook threw:", hookError);
    }
  }

  /**
   * One unary etcd RPC: `authz` looks at the request only (never at state), then `handle`
   * runs. A request with `hasleader` metadata fails at once without a leader, as etcd does.
   */
  function unary<Req, Res>(
    method: string,
    authz: (req: Req) => readonly EtcdAuthz[],
    handle: (req: Req) => Promise<Res>,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const startedMs = performance.now();
      const subject = subjectOf(call);
      (async () => {
        if (call.metadata.get("hasleader")[0] === "true" && backend.raftStatus().leader === "") {
          throw new EtcdError("UNAVAILABLE", NO_LEADER);
        }
        await check(subject, authz(call.request));
        return await handle(call.request);
      })().then(
        (res) => {
          callback(null, res);
          report(method, startedMs, subject);
        },
        (error: unknown) => {
          const st = toEtcdStatus(error);
          callback({ code: st.code, details: st.details, metadata: st.metadata });
          report(method, startedMs, subject, error);
        },
      );
    };
  }

  async function applyTxn(txn: TxnRequest): Promise<{ result: CommandResult; txn: TxnResponse }> {
    checkTxn(txn);
    checkSizes(txn, opts);
    const cmd: Command = {
      type: "txn",
      key: "",
      txn,
      ...opts.stamp(),
      maxValueBytes: opts.maxValueBytes,
      quotaBytes: opts.quotaBytes,
    };
    const result = await applyHere(backend, cmd);
    if (result.etcdError) throw failureError(result.etcdError);
    if (!result.txn) throw new EtcdError("INVALID_ARGUMENT", "etcdserver: txn did not apply");
    return { result, txn: result.txn };
  }

  async function barrier(serializable: boolean): Promise<void> {
    await backend.readBarrier(serializable ? "stale" : "linearizable");
  }

  const kv: grpc.UntypedServiceImplementation = {
    Range: unary<RangeRequest, unknown>(
      "/etcdserverpb.KV/Range",
      (req) => [{ action: "consume", object: rangeObject(req.key, req.range_end) }],
      async (req) => {
        keyString(req.key.length === 0 ? new Uint8Array([0]) : req.key);
        await barrier(req.serializable);
        const res = backend.store.range(req);
        return { ...res, header: header(backend) };
      },
    ),
    Put: unary<
      {
        key: Uint8Array;
        value: Uint8Array;
        lease: number;
        prev_kv: boolean;
        ignore_value: boolean;
        ignore_lease: boolean;
      },
      unknown
    >(
      "/etcdserverpb.KV/Put",
      (req) => [{ action: "produce", object: keyString(req.key) }],
      async (req) => {
        const { result, txn } = await applyTxn(
          normalizeTxn({ success: [{ request_put: req }] }),
        );
        // The header goes last: a response decoded from a forwarding follower has header: null.
        return { ...txn.responses[0].response_put, header: header(backend, result.revision) };
      },
    ),
    DeleteRange: unary<{ key: Uint8Array; range_end: Uint8Array; prev_kv: boolean }, unknown>(
      "/etcdserverpb.KV/DeleteRange",
      (req) => [{ action: "produce", object: rangeObject(req.key, req.range_end) }],
      async (req) => {
        const { result, txn } = await applyTxn(
          normalizeTxn({ success: [{ request_delete_range: req }] }),
        );
        return {
          ...txn.responses[0].response_delete_range,
          header: header(backend, result.revision),
        };
      },
    ),
    Txn: unary<TxnRequest, unknown>(
      "/etcdserverpb.KV/Txn",
      (req) => txnAuthz(req),
      async (req) => {
        if (isReadOnlyTxn(req)) {
          // A read-only transaction needs no log entry: a ReadIndex barrier, then local state.
          checkTxn(req);
          await barrier(false);
          const res = evaluateReadOnlyTxn(backend.store.txnView(), req);
          return { ...res, header: header(backend) };
        }
        const { result, txn } = await applyTxn(req);
        return { ...txn, header: header(backend, result.revision) };
      },
    ),
    Compact: unary<{ revision: number; physical: boolean }, unknown>(
      "/etcdserverpb.KV/Compact",
      () => [{ action: "admin", object: "*" }],
      async (req) => {
        const result = await applyHere(backend, {
          type: "compact",
          key: "",
          revision: req.revision,
          ...opts.stamp(),
        });
        if (result.etcdError) throw failureError(result.etcdError);
        return { header: header(backend, result.revision) };
      },
    ),
  };

  async function membersList() {
    const servers = await backend.servers();
    return servers.map((s) => ({
      ID: memberId(s.id),
      name: s.id,
      peerURLs: s.rpcAddr ? [`${backend.scheme}://${s.rpcAddr}`] : [],
      clientURLs: s.rpcAddr ? [`${backend.scheme}://${s.rpcAddr}`] : [],
      isLearner: !s.isVoter,
    }));
  }

  async function nameOf(id: number): Promise<string> {
    const servers = await backend.servers();
    const name = nameOfMember(id, servers.map((s) => s.id));
    if (name === undefined) {
      throw new EtcdError("NOT_FOUND", "etcdserver: member not found");
    }
    return name;
  }

  const admin = (): EtcdAuthz[] => [{ action: "admin", object: "*" }];
  const read = (): EtcdAuthz[] => [{ action: "consume", object: "*" }];

  const cluster: grpc.UntypedServiceImplementation = {
    MemberList: unary<unknown, unknown>(
      "/etcdserverpb.Cluster/MemberList",
      () => [],
      async () => ({ header: header(backend), members: await membersList() }),
    ),
    MemberRemove: unary<{ ID: number }, unknown>(
      "/etcdserverpb.Cluster/MemberRemove",
      admin,
      async (req) => {
        await backend.removeServer(await nameOf(req.ID));
        return { header: header(backend), members: await membersList() };
      },
    ),
    MemberPromote: unary<{ ID: number }, unknown>(
      "/etcdserverpb.Cluster/MemberPromote",
      admin,
      async (req) => {
        const name = await nameOf(req.ID);
        const s = (await backend.servers()).find((x) => x.id === name)!;
        if (s.isVoter) {
          throw new EtcdError(
            "FAILED_PRECONDITION",
            "etcdserver: can only promote a learner member",
          );
        }
        // mokv's leader promotes a learner itself as soon as it has caught up.
        throw new EtcdError(
          "FAILED_PRECONDITION",
          "etcdserver: can only promote a learner member which is in sync with leader",
        );
      },
    ),
    MemberAdd: unary<unknown, unknown>(
      "/etcdserverpb.Cluster/MemberAdd",
      admin,
      () => {
        throw new EtcdError(
          "FAILED_PRECONDITION",
          "mokv: members join through gossip: start the new node with start-join-addrs; " +
            "the leader adds it as a learner and promotes it once caught up",
        );
      },
    ),
    MemberUpdate: unary<unknown, unknown>(
      "/etcdserverpb.Cluster/MemberUpdate",
      admin,
      () => {
        throw new EtcdError(
          "FAILED_PRECONDITION",
          "mokv: a member's address comes from its own configuration and gossip",
        );
      },
    ),
  };

  const maintenance: grpc.UntypedServiceImplementation = {
    Status: unary<unknown, unknown>(
      "/etcdserverpb.Maintenance/Status",
      () => [],
      () => {
        const st = backend.raftStatus();
        const store = backend.store;
        return Promise.resolve({
          header: header(backend),
          version: ETCD_API_VERSION,
          dbSize: store.byteCount,
          leader: st.leader === "" ? 0 : memberId(st.leader),
          raftIndex: st.commit,
          raftTerm: st.term,
          raftAppliedIndex: st.applied,
          errors: store.quotaAlarm
            ? ["memberID:" + memberId(backend.nodeId) + " alarm:NOSPACE "]
            : [],
          dbSizeInUse: store.byteCount,
          isLearner: st.isLearner,
        });
      },
    ),
    Alarm: unary<{ action: string; memberID: number; alarm: string }, unknown>(
      "/etcdserverpb.Maintenance/Alarm",
      (req) => req.action === "GET" ? read() : admin(),
      (req) => {
        if (req.action === "ACTIVATE") {
          throw new EtcdError("FAILED_PRECONDITION", "mokv: alarms are raised by the node itself");
        }
        // DEACTIVATE: mokv's NOSPACE clears itself once a write frees space.
        const alarms = backend.store.quotaAlarm
          ? [{ memberID: memberId(backend.nodeId), alarm: "NOSPACE" }]
          : [];
        return Promise.resolve({ header: header(backend), alarms });
      },
    ),
    Defragment: unary<unknown, unknown>(
      "/etcdserverpb.Maintenance/Defragment",
      admin,
      // Nothing to defragment: the data lives in memory, the Deno KV log is compacted.
      () => Promise.resolve({ header: header(backend) }),
    ),
    Hash: unary<unknown, unknown>(
      "/etcdserverpb.Maintenance/Hash",
      read,
      () => Promise.resolve({ header: header(backend), hash: hashStore(backend, 0) }),
    ),
    HashKV: unary<{ revision: number }, unknown>(
      "/etcdserverpb.Maintenance/HashKV",
      read,
      (req) =>
        Promise.resolve({
          header: header(backend),
          hash: hashStore(backend, req.revision),
          compact_revision: backend.store.compactedRevision,
        }),
    ),
    MoveLeader: unary<{ targetID: number }, unknown>(
      "/etcdserverpb.Maintenance/MoveLeader",
      admin,
      async (req) => {
        await backend.transferLeadership(await nameOf(req.targetID));
        return { header: header(backend) };
      },
    ),
    Snapshot: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      const startedMs = performance.now();
      const subject = subjectOf(call);
      (async () => {
        await check(subject, admin());
        // etcd's stream is a database of 512-byte pages followed by the SHA-256 of it, and
        // etcdctl checks that shape: mokv's image is zero-padded to a page boundary.
        const image = await backend.snapshot();
        const padded = new Uint8Array(Math.ceil(image.length / 512) * 512);
        padded.set(image, 0);
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", padded));
        const data = new Uint8Array(padded.length + digest.length);
        data.set(padded, 0);
        data.set(digest, padded.length);
        const h = header(backend);
        const chunk = 256 * 1024;
        for (let at = 0; at < data.length || at === 0; at += chunk) {
          const blob = data.subarray(at, Math.min(at + chunk, data.length));
          const remaining = data.length - (at + blob.length);
          if (!call.write({ header: h, remaining_bytes: remaining, blob })) {
            await new Promise((r) => call.once("drain", r));
          }
          if (data.length === 0) break;
        }
        call.end();
      })().then(
        () => report("/etcdserverpb.Maintenance/Snapshot", startedMs, subject),
        (error: unknown) => {
          const st = toEtcdStatus(error);
          // emit("error") sends the status; call.destroy() would leave the client's stream
          // open with no answer (as the Lease service learned).
          call.emit("error", Object.assign(new Error(st.details), st));
          report("/etcdserverpb.Maintenance/Snapshot", startedMs, subject, error);
        },
      );
    },
  };

  return { kv, cluster, maintenance };
}

/** FNV-1a 32 over every key, mod revision and value at `revision` (0: now), in key order. */
function hashStore(backend: EtcdBackend, revision: number): number {
  const res = backend.store.range({
    key: new Uint8Array([0]),
    range_end: new Uint8Array([0]),
    limit: 0,
    revision,
    sort_order: "NONE",
    sort_target: "KEY",
    serializable: true,
    keys_only: false,
    count_only: false,
    min_mod_revision: 0,
    max_mod_revision: 0,
    min_create_revision: 0,
    max_create_revision: 0,
  });
  let h = 0x811c9dc5;
  const mix = (b: number) => {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  };
  for (const kv of res.kvs) {
    for (const b of kv.key) mix(b);
    for (let r = kv.mod_revision, i = 0; i < 8; i++, r = Math.floor(r / 256)) mix(r & 0xff);
    for (const b of kv.value) mix(b);
  }
  return h;
}
