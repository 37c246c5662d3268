/**
 * etcd's Watch service: one bidirectional stream carries many watchers. A watcher created at
 * `start_revision` replays the event history from there and then follows live events, with
 * no gap and no duplicate: the replay and the subscription happen in one synchronous step of
 * the event loop, and applies are synchronous too. Works on any node (a follower sends an
 * event once it has applied it), so a client resuming elsewhere from its last revision + 1
 * misses nothing. A start revision older than the history is answered as etcd answers a
 * compacted one (`compact_revision` set, watcher cancelled). A stream whose client does not
 * read is cancelled once a bounded number of bytes waits for it: a slow watcher never slows
 * the node or other streams.
 */
import * as grpc from "@grpc/grpc-js";
import { PermissionDeniedError } from "../errors.ts";
import {
  type HistoryEntry,
  inRange,
  keyBytes,
  type KeyRange,
  keyRange,
  type KvEvent,
  type RevisionEvents,
  toKeyValue,
} from "../kv/mod.ts";
import type { AuthorizeFn, RequestInfo } from "../server/kv_service.ts";
import { subjectOf } from "../server/kv_service.ts";
import { rangeObject } from "./authz.ts";
import type { EtcdBackend } from "./backend.ts";
import { toEtcdStatus } from "./errors.ts";
import { header } from "./service.ts";

/** Bytes of responses that may wait for a slow client on one stream before it is cancelled. */
export const DEFAULT_WATCH_STREAM_BUFFER_BYTES = 16 * 1024 * 1024;
/** How often watchers that asked for progress notifications get one when idle (etcd: 10 min). */
export const DEFAULT_PROGRESS_NOTIFY_MS = 10 * 60 * 1000;
/** Watchers one stream may hold. */
export const MAX_WATCHERS_PER_STREAM = 10_000;

/** Settings of the Watch service. */
export interface WatchServiceOptions {
  readonly backend: EtcdBackend;
  readonly authorize?: AuthorizeFn;
  readonly onRequest?: (info: RequestInfo) => void;
  /** Default {@link DEFAULT_WATCH_STREAM_BUFFER_BYTES}. */
  readonly streamBufferBytes?: number;
  /** Default {@link DEFAULT_PROGRESS_NOTIFY_MS}. */
  readonly progressNotifyMs?: number;
}

interface WatchCreateRequest {
  key: Uint8Array;
  range_end: Uint8Array;
  start_revision: number;
  progress_notify: boolean;
  filters: string[];
  prev_kv: boolean;
  watch_id: number;
}

interface WatchRequest {
  request_union?: "create_request" | "cancel_request" | "progress_request";
  create_request?: WatchCreateRequest;
  cancel_request?: { watch_id: number };
}

interface Watcher {
  readonly id: number;
  readonly range: KeyRange;
  readonly noPut: boolean;
  readonly noDelete: boolean;
  readonly prevKv: boolean;
  readonly progressNotify: boolean;
  /** Events of revisions below this are not for this watcher (already replayed or too old). */
  next: number;
  /** Something was sent since the last progress tick. */
  active: boolean;
  /** Events selected but not yet sent (sent together at the end of this turn). */
  pending: ReturnType<typeof toEvent>[];
  /** Revision of the newest pending event. */
  pendingRevision: number;
}

function toEvent(e: KvEvent, revision: number, withPrev: boolean) {
  const kv = e.entry ? toKeyValue(e.key, e.entry) : {
    key: keyBytes(e.key),
    create_revision: 0,
    mod_revision: revision,
    version: 0,
    value: new Uint8Array(0),
    lease: 0,
  };
  const prev = withPrev && e.prev ? toKeyValue(e.key, e.prev as HistoryEntry) : null;
  return { type: e.type === "put" ? "PUT" : "DELETE", kv, prev_kv: prev };
}

/** About how many bytes a response takes on the wire (its keys and values dominate). */
function responseBytes(res: Record<string, unknown>): number {
  let n = 64;
  const events = res.events as {
    kv: { key: Uint8Array; value: Uint8Array };
    prev_kv: { value: Uint8Array } | null;
  }[] | undefined;
  for (const e of events ?? []) {
    n += 48 + e.kv.key.length + e.kv.value.length + (e.prev_kv?.value.length ?? 0);
  }
  return n;
}

/** The events of `rev` this watcher wants, in etcd's form (empty when none). */
function select(w: Watcher, rev: RevisionEvents) {
  const out = [];
  for (const e of rev.events) {
    if (e.type === "put" ? w.noPut : w.noDelete) continue;
    if (!inRange(w.range, e.key)) continue;
    out.push(toEvent(e, rev.revision, w.prevKv));
  }
  return out;
}

/** Builds the handler of `etcdserverpb.Watch`. */
export function createWatchHandler(opts: WatchServiceOptions): grpc.UntypedServiceImplementation {
  const backend = opts.backend;
  const store = backend.store;
  const bufferBytes = opts.streamBufferBytes ?? DEFAULT_WATCH_STREAM_BUFFER_BYTES;
  const progressMs = opts.progressNotifyMs ?? DEFAULT_PROGRESS_NOTIFY_MS;

  const Watch = (call: grpc.ServerDuplexStream<WatchRequest, unknown>) => {
    const startedMs = performance.now();
    const subject = subjectOf(call);
    const watchers = new Map<number, Watcher>();
    let nextId = 0;
    let closed = false;

    /** Bytes of responses handed to grpc-js and not yet flushed to the connection. */
    let pendingBytes = 0;
    const send = (res: Record<string, unknown>): void => {
      if (closed) return;
      const bytes = responseBytes(res);
      pendingBytes += bytes;
      call.write(res, () => {
        pendingBytes -= bytes;
      });
      if (pendingBytes > bufferBytes && watchers.size > 0) {
        // The client does not keep up: drop its watchers rather than buffer without bound.
        const reason = `mokv: watch stream too slow: over ${bufferBytes} bytes of events waiting`;
        for (const w of [...watchers.values()]) {
          watchers.delete(w.id);
          call.write({
            header: header(backend),
            watch_id: w.id,
            canceled: true,
            cancel_reason: reason,
          });
        }
      }
    };

    // Every revision applied in one turn of the event loop goes to a watcher in one response
    // (in revision order, a transaction's events together): under load the node applies many
    // entries per turn, and one response per watcher per revision would not keep up.
    const dirty = new Set<Watcher>();
    let flushing = false;
    const flush = (): void => {
      flushing = false;
      for (const w of dirty) {
        if (watchers.get(w.id) !== w || w.pending.length === 0) continue;
        const events = w.pending;
        w.pending = [];
        send({ header: header(backend, w.pendingRevision), watch_id: w.id, events });
      }
      dirty.clear();
    };
    const deliver = (w: Watcher, rev: RevisionEvents): void => {
      if (rev.revision < w.next) return;
      w.next = rev.revision + 1;
      const events = select(w, rev);
      if (events.length === 0) return;
      w.active = true;
      for (const e of events) w.pending.push(e);
      w.pendingRevision = rev.revision;
      dirty.add(w);
      if (!flushing) {
        flushing = true;
        queueMicrotask(flush);
      }
    };

    const unsubscribe = store.onEvents((rev) => {
      for (const w of watchers.values()) deliver(w, rev);
    });
    const unreset = store.onReset((revision) => {
      // A snapshot replaced the state: events up to its revision were never seen here.
      for (const w of [...watchers.values()]) {
        if (w.next > revision) continue;
        watchers.delete(w.id);
        send({
          header: header(backend),
          watch_id: w.id,
          canceled: true,
          compact_revision: revision,
          cancel_reason: "etcdserver: mvcc: required revision has been compacted",
        });
      }
    });
    const timer = setInterval(() => {
      flush();
      for (const w of watchers.values()) {
        if (w.progressNotify && !w.active) {
          send({ header: header(backend), watch_id: w.id, events: [] });
        }
        w.active = false;
      }
    }, progressMs);

    const create = async (req: WatchCreateRequest): Promise<void> => {
      let range: KeyRange;
      try {
        range = keyRange(req.key, req.range_end);
        if (opts.authorize) {
          const object = rangeObject(req.key, req.range_end);
          if (!(await opts.authorize(subject, object, "consume"))) {
            throw new PermissionDeniedError(subject || "anonymous", "consume", object);
          }
        }
      } catch (error) {
        send({
          header: header(backend),
          watch_id: -1,
          created: true,
          canceled: true,
          cancel_reason: toEtcdStatus(error).details,
        });
        return;
      }
      let id = req.watch_id;
      if (id === 0 || id === undefined) {
        while (watchers.has(nextId)) nextId++;
        id = nextId++;
      }
      if (watchers.has(id) || watchers.size >= MAX_WATCHERS_PER_STREAM) {
        send({
          header: header(backend),
          watch_id: id,
          created: true,
          canceled: true,
          cancel_reason: watchers.has(id)
            ? "etcdserver: duplicate watch ID"
            : `mokv: at most ${MAX_WATCHERS_PER_STREAM} watchers per stream`,
        });
        return;
      }
      // From here to the end nothing awaits: the replay and the subscription see one state.
      const current = store.revision;
      const compacted = store.compactedRevision;
      send({ header: header(backend, current), watch_id: id, created: true });
      if (req.start_revision > 0 && req.start_revision <= compacted) {
        send({
          header: header(backend, current),
          watch_id: id,
          canceled: true,
          compact_revision: compacted,
          cancel_reason: "etcdserver: mvcc: required revision has been compacted",
        });
        return;
      }
      const w: Watcher = {
        id,
        range,
        noPut: req.filters.includes("NOPUT"),
        noDelete: req.filters.includes("NODELETE"),
        prevKv: req.prev_kv,
        progressNotify: req.progress_notify,
        next: req.start_revision > 0 ? req.start_revision : current + 1,
        active: false,
        pending: [],
        pendingRevision: 0,
      };
      if (w.next <= current) {
        for (const rev of store.history.since(w.next)) deliver(w, rev);
        w.next = current + 1;
      }
      watchers.set(id, w);
    };

    // Requests are handled one after another (authorization may await).
    let queue: Promise<void> = Promise.resolve();
    call.on("data", (req: WatchRequest) => {
      queue = queue.then(async () => {
        if (closed) return;
        switch (req.request_union) {
          case "create_request":
            if (req.create_request) await create(req.create_request);
            return;
          case "cancel_request": {
            const id = req.cancel_request?.watch_id ?? -1;
            if (watchers.delete(id)) {
              send({ header: header(backend), watch_id: id, canceled: true });
            }
            return;
          }
          case "progress_request":
            // Not tied to a watcher: clientv3 broadcasts it to all of the stream's watchers.
            // Events still pending go first: nothing may follow at or below its revision.
            flush();
            send({ header: header(backend), watch_id: -1 });
            return;
          default:
            return;
        }
      }).catch(() => undefined);
    });
    const close = () => {
      if (closed) return;
      closed = true;
      unsubscribe();
      unreset();
      clearInterval(timer);
      watchers.clear();
      try {
        opts.onRequest?.({
          method: "/etcdserverpb.Watch/Watch",
          code: grpc.status.OK,
          durationMs: performance.now() - startedMs,
          subject,
        });
      } catch {
        // a hook failure must not break the stream's cleanup
      }
    };
    call.on("end", () => {
      close();
      call.end();
    });
    call.on("cancelled", close);
    call.on("error", close);
    call.on("close", close);
  };

  return { Watch };
}
