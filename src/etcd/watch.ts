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
 *
 * Fan-out: watchers of a stream with the same range, filters and prev_kv form one group, so
 * an event is matched once per group, not once per watcher; each live event is encoded once
 * per node (watch_codec.ts) and its bytes are copied into every response that carries it; and all
 * the responses of one event-loop turn go to the stream's HTTP/2 stream in one write.
 */
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { ETCD_KV_PROTO, ETCD_RPC_PROTO } from "../api/etcd_proto.ts";
import { PermissionDeniedError } from "../errors.ts";
import {
  compareBytes,
  keyBytes,
  type KeyRange,
  keyRange,
  type KvEvent,
  type RevisionEvents,
} from "../kv/mod.ts";
import type { AuthorizeFn, RequestInfo } from "../server/kv_service.ts";
import { subjectOf } from "../server/kv_service.ts";
import { rangeObject } from "./authz.ts";
import type { EtcdBackend } from "./backend.ts";
import { toEtcdStatus } from "./errors.ts";
import { header } from "./service.ts";
import {
  encodeEventField,
  encodeHeaderField,
  frameBodies,
  WatchFrames,
  type WatchResponseParts,
} from "./watch_codec.ts";

/** Bytes of responses that may wait for a slow client on one stream before it is cancelled. */
export const DEFAULT_WATCH_STREAM_BUFFER_BYTES = 16 * 1024 * 1024;
/** How often watchers that asked for progress notifications get one when idle (etcd: 10 min). */
export const DEFAULT_PROGRESS_NOTIFY_MS = 10 * 60 * 1000;
/** Watchers one stream may hold. */
export const MAX_WATCHERS_PER_STREAM = 10_000;
/**
 * Bytes of events one response carries at most: more (a long replay, a long turn) go in
 * several responses, split between revisions only, so a transaction's events stay together
 * (a single larger revision goes alone). grpc-js clients refuse messages above 4 MiB.
 */
export const MAX_WATCH_RESPONSE_EVENT_BYTES = 1024 * 1024;

/** Settings of the Watch service. */
export interface WatchServiceOptions {
  readonly backend: EtcdBackend;
  readonly authorize?: AuthorizeFn;
  readonly onRequest?: (info: RequestInfo) => void;
  /** Default {@link DEFAULT_WATCH_STREAM_BUFFER_BYTES}. */
  readonly streamBufferBytes?: number;
  /** Default {@link DEFAULT_PROGRESS_NOTIFY_MS}. */
  readonly progressNotifyMs?: number;
  /**
   * Send through grpc-js's `call.write` (message objects) instead of framed bytes written
   * straight to the HTTP/2 stream; also used whenever that stream cannot be reached. Tests.
   */
  readonly forceObjectWrites?: boolean;
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

/** What selects a watcher's events: its range, filters and prev_kv. */
interface Selector {
  readonly range: KeyRange;
  readonly noPut: boolean;
  readonly noDelete: boolean;
  readonly prevKv: boolean;
}

/** Encoded events, oldest first, and the revision of each. */
interface EventBatch {
  readonly events: Uint8Array[];
  readonly revisions: number[];
}

const emptyBatch = (): EventBatch => ({ events: [], revisions: [] });

/** The watchers of one stream with one selector, and the events they share this turn. */
interface Group extends Selector {
  readonly key: string;
  readonly watchers: Set<Watcher>;
  /** Events selected this turn. */
  pending: EventBatch;
}

interface Watcher {
  readonly id: number;
  readonly group: Group;
  readonly progressNotify: boolean;
  /** The first live revision for this watcher (lower ones were replayed or are too old). */
  readonly liveFrom: number;
  /** Something was sent since the last progress tick. */
  active: boolean;
  /** Replayed events not yet sent (they go before the group's). */
  replay: EventBatch;
}

/** The events of `b` from revision `from` on (`b` itself when all are). */
function eventsFrom(b: EventBatch, from: number): EventBatch {
  const revs = b.revisions;
  if (revs.length === 0 || revs[0] >= from) return b;
  let i = 0;
  while (i < revs.length && revs[i] < from) i++;
  return { events: b.events.slice(i), revisions: revs.slice(i) };
}

/**
 * `b` as the event lists of consecutive responses of at most MAX_WATCH_RESPONSE_EVENT_BYTES
 * each, split between revisions only, with the revision of each list's newest event.
 */
function responsesOf(b: EventBatch): { events: Uint8Array[]; revision: number }[] {
  const { events, revisions } = b;
  let total = 0;
  for (const e of events) total += e.length;
  if (total <= MAX_WATCH_RESPONSE_EVENT_BYTES) {
    return [{ events, revision: revisions[revisions.length - 1] }];
  }
  const out: { events: Uint8Array[]; revision: number }[] = [];
  let start = 0, bytes = 0;
  for (let i = 0; i < events.length;) {
    // The events of revision revisions[i] are [i, j).
    let j = i, revisionBytes = 0;
    while (j < events.length && revisions[j] === revisions[i]) revisionBytes += events[j++].length;
    if (i > start && bytes + revisionBytes > MAX_WATCH_RESPONSE_EVENT_BYTES) {
      out.push({ events: events.slice(start, i), revision: revisions[i - 1] });
      start = i;
      bytes = 0;
    }
    bytes += revisionBytes;
    i = j;
  }
  out.push({ events: events.slice(start), revision: revisions[revisions.length - 1] });
  return out;
}

/** The encodings of one event, made when a selector first needs them. */
interface EncodedEvent {
  readonly event: KvEvent;
  readonly key: Uint8Array;
  plain?: Uint8Array;
  withPrev?: Uint8Array;
}

/**
 * The encodings of the newest revision seen: every stream of the node selects from the same
 * revision in one synchronous dispatch, so each event is encoded once per node; only that
 * revision's bytes are kept (a replay encodes older ones again rather than keep bytes beside
 * the whole history).
 */
let cached: { rev: RevisionEvents; events: EncodedEvent[] } | undefined;

function encodingsOf(rev: RevisionEvents): EncodedEvent[] {
  if (cached?.rev !== rev) {
    cached = { rev, events: rev.events.map((e) => ({ event: e, key: keyBytes(e.key) })) };
  }
  return cached.events;
}

/** Event `enc` of `revision` as a WatchResponse's events field, with or without prev_kv. */
function encodedEvent(enc: EncodedEvent, revision: number, withPrev: boolean): Uint8Array {
  const e = enc.event;
  // Without a previous entry both forms are the same bytes.
  if (withPrev && e.prev) {
    return enc.withPrev ??= encodeEventField({
      type: e.type,
      key: enc.key,
      entry: e.entry,
      prev: e.prev,
      revision,
    });
  }
  return enc.plain ??= encodeEventField({ type: e.type, key: enc.key, entry: e.entry, revision });
}

/** Is the key (as a string and as bytes) inside `range`? (inRange, without encoding the key.) */
function matches(range: KeyRange, key: string, bytes: Uint8Array): boolean {
  if (range.end === undefined) return key === range.start;
  if (range.start !== "" && compareBytes(bytes, range.startBytes) < 0) return false;
  return range.end === null || compareBytes(bytes, range.end) < 0;
}

/** The encoded events of `rev` that `s` selects, in order (empty when none). */
function select(s: Selector, rev: RevisionEvents): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const enc of encodingsOf(rev)) {
    const e = enc.event;
    if (e.type === "put" ? s.noPut : s.noDelete) continue;
    if (!matches(s.range, e.key, enc.key)) continue;
    out.push(encodedEvent(enc, rev.revision, s.prevKv));
  }
  return out;
}

function hex(bytes: Uint8Array | null | undefined): string {
  if (bytes === undefined) return "u";
  if (bytes === null) return "n";
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** A string equal for two selectors exactly when they select the same events the same way. */
function selectorKey(s: Selector): string {
  return `${hex(s.range.startBytes)}/${s.range.start === "" ? "*" : ""}/${hex(s.range.end)}/` +
    `${s.noPut ? 1 : 0}${s.noDelete ? 1 : 0}${s.prevKv ? 1 : 0}`;
}

/** The part of an HTTP/2 stream the framed writer uses. */
interface RawHttp2Stream {
  write(chunk: Uint8Array): boolean;
  readonly writableLength: number;
  respond: unknown;
}

/**
 * The HTTP/2 stream under a grpc-js server call (library boundary: grpc-js has no public
 * accessor, as for api.KV's List): walks `call.call` and the interceptors' `nextCall` to
 * grpc-js's base call; undefined when that shape is not found.
 */
function http2StreamOf(call: unknown): RawHttp2Stream | undefined {
  let c = (call as { call?: unknown }).call;
  for (let depth = 0; depth < 16 && c !== null && typeof c === "object"; depth++) {
    const stream = (c as { stream?: Partial<RawHttp2Stream> }).stream;
    if (
      stream && typeof stream.write === "function" && typeof stream.respond === "function" &&
      typeof stream.writableLength === "number"
    ) {
      return stream as RawHttp2Stream;
    }
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

const root = new protobuf.Root();
protobuf.parse(ETCD_KV_PROTO, root, { keepCase: true });
protobuf.parse(ETCD_RPC_PROTO, root, { keepCase: true });
root.resolveAll();
const WatchResponseType = root.lookupType("etcdserverpb.WatchResponse");

/** Where a stream's framed responses go: straight to HTTP/2, or through grpc-js's objects. */
interface ResponseSink {
  /** Sends framed responses; answers the bytes waiting for the client afterwards. */
  write(framed: Uint8Array): number;
}

function rawSink(call: grpc.ServerDuplexStream<WatchRequest, unknown>): ResponseSink | undefined {
  const stream = http2StreamOf(call);
  if (!stream) return undefined;
  call.sendMetadata(new grpc.Metadata());
  return {
    write(framed) {
      stream.write(framed);
      return stream.writableLength;
    },
  };
}

/** The fallback: each response decoded back to an object and written by grpc-js. */
function objectSink(call: grpc.ServerDuplexStream<WatchRequest, unknown>): ResponseSink {
  let waiting = 0;
  return {
    write(framed) {
      for (const body of frameBodies(framed)) {
        const bytes = body.length;
        waiting += bytes;
        const res = WatchResponseType.toObject(WatchResponseType.decode(body), {
          longs: Number,
          enums: String,
          defaults: true,
        });
        call.write(res, () => {
          waiting -= bytes;
        });
      }
      return waiting;
    },
  };
}

/** Builds the handler of `etcdserverpb.Watch`. */
export function createWatchHandler(opts: WatchServiceOptions): grpc.UntypedServiceImplementation {
  const backend = opts.backend;
  const store = backend.store;
  const bufferBytes = opts.streamBufferBytes ?? DEFAULT_WATCH_STREAM_BUFFER_BYTES;
  const progressMs = opts.progressNotifyMs ?? DEFAULT_PROGRESS_NOTIFY_MS;
  const headerAt = (revision?: number) => encodeHeaderField(header(backend, revision));

  const Watch = (call: grpc.ServerDuplexStream<WatchRequest, unknown>) => {
    const startedMs = performance.now();
    const subject = subjectOf(call);
    const sink = (opts.forceObjectWrites ? undefined : rawSink(call)) ?? objectSink(call);
    const watchers = new Map<number, Watcher>();
    const groups = new Map<string, Group>();
    let nextId = 0;
    let closed = false;
    /** The revision after the newest live one this stream has seen. */
    let liveNext = store.revision + 1;

    const frames = new WatchFrames();
    const write = (): void => {
      if (frames.count === 0) return;
      const framed = frames.take();
      if (closed) return;
      const waiting = sink.write(framed);
      if (waiting > bufferBytes && watchers.size > 0) {
        // The client does not keep up: drop its watchers rather than buffer without bound.
        const reason = `mokv: watch stream too slow: over ${bufferBytes} bytes of events waiting`;
        const h = headerAt();
        for (const w of [...watchers.values()]) {
          remove(w);
          frames.append({ header: h, watchId: w.id, canceled: true, cancelReason: reason });
        }
        sink.write(frames.take());
      }
    };
    /** Sends one control response (after everything appended before it). */
    const send = (r: WatchResponseParts): void => {
      frames.append(r);
      write();
    };

    const remove = (w: Watcher): boolean => {
      if (watchers.get(w.id) !== w) return false;
      watchers.delete(w.id);
      w.group.watchers.delete(w);
      if (w.group.watchers.size === 0) groups.delete(w.group.key);
      return true;
    };

    // Every revision applied in one turn of the event loop goes to a watcher in one response
    // (in revision order, a transaction's events together), and all responses of the turn in
    // one write: under load the node applies many entries per turn.
    const dirtyGroups = new Set<Group>();
    const replaying = new Set<Watcher>();
    let flushing = false;
    const flush = (): void => {
      flushing = false;
      const headers = new Map<number, Uint8Array>();
      const headerOf = (revision: number) => {
        let h = headers.get(revision);
        if (!h) headers.set(revision, h = headerAt(revision));
        return h;
      };
      const sendEvents = (w: Watcher, b: EventBatch): void => {
        if (b.events.length === 0) return;
        w.active = true;
        for (const r of responsesOf(b)) {
          frames.append({ header: headerOf(r.revision), watchId: w.id, events: r.events });
        }
      };
      for (const w of replaying) {
        if (watchers.get(w.id) !== w) continue;
        const live = dirtyGroups.has(w.group) ? eventsFrom(w.group.pending, w.liveFrom) : undefined;
        sendEvents(
          w,
          live && live.events.length > 0
            ? {
              events: w.replay.events.concat(live.events),
              revisions: w.replay.revisions.concat(live.revisions),
            }
            : w.replay,
        );
        w.replay = emptyBatch();
      }
      for (const g of dirtyGroups) {
        for (const w of g.watchers) {
          if (!replaying.has(w)) sendEvents(w, eventsFrom(g.pending, w.liveFrom));
        }
        g.pending = emptyBatch();
      }
      replaying.clear();
      dirtyGroups.clear();
      write();
    };
    const schedule = (): void => {
      if (!flushing) {
        flushing = true;
        queueMicrotask(flush);
      }
    };

    const unsubscribe = store.onEvents((rev) => {
      liveNext = rev.revision + 1;
      for (const g of groups.values()) {
        const events = select(g, rev);
        if (events.length === 0) continue;
        for (const e of events) {
          g.pending.events.push(e);
          g.pending.revisions.push(rev.revision);
        }
        dirtyGroups.add(g);
        schedule();
      }
    });
    const unreset = store.onReset((revision) => {
      // A snapshot replaced the state: events up to its revision were never seen here.
      for (const w of [...watchers.values()]) {
        if (Math.max(w.liveFrom, liveNext) > revision) continue;
        remove(w);
        frames.append({
          header: headerAt(),
          watchId: w.id,
          canceled: true,
          compactRevision: revision,
          cancelReason: "etcdserver: mvcc: required revision has been compacted",
        });
      }
      liveNext = Math.max(liveNext, revision + 1);
      write();
    });
    const timer = setInterval(() => {
      flush();
      for (const w of watchers.values()) {
        if (w.progressNotify && !w.active) frames.append({ header: headerAt(), watchId: w.id });
        w.active = false;
      }
      write();
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
          header: headerAt(),
          watchId: -1,
          created: true,
          canceled: true,
          cancelReason: toEtcdStatus(error).details,
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
          header: headerAt(),
          watchId: id,
          created: true,
          canceled: true,
          cancelReason: watchers.has(id)
            ? "etcdserver: duplicate watch ID"
            : `mokv: at most ${MAX_WATCHERS_PER_STREAM} watchers per stream`,
        });
        return;
      }
      // From here to the end nothing awaits: the replay and the subscription see one state.
      const current = store.revision;
      const compacted = store.compactedRevision;
      send({ header: headerAt(current), watchId: id, created: true });
      if (req.start_revision > 0 && req.start_revision <= compacted) {
        send({
          header: headerAt(current),
          watchId: id,
          canceled: true,
          compactRevision: compacted,
          cancelReason: "etcdserver: mvcc: required revision has been compacted",
        });
        return;
      }
      const selector: Selector = {
        range,
        noPut: req.filters.includes("NOPUT"),
        noDelete: req.filters.includes("NODELETE"),
        prevKv: req.prev_kv,
      };
      const key = selectorKey(selector);
      let group = groups.get(key);
      if (!group) {
        group = { ...selector, key, watchers: new Set(), pending: emptyBatch() };
        groups.set(key, group);
      }
      const start = req.start_revision > 0 ? req.start_revision : current + 1;
      const w: Watcher = {
        id,
        group,
        progressNotify: req.progress_notify,
        liveFrom: Math.max(start, current + 1),
        active: false,
        replay: emptyBatch(),
      };
      if (start <= current) {
        for (const rev of store.history.since(start)) {
          const events = select(group, rev);
          if (events.length === 0) continue;
          for (const e of events) {
            w.replay.events.push(e);
            w.replay.revisions.push(rev.revision);
          }
        }
        if (w.replay.events.length > 0) {
          replaying.add(w);
          schedule();
        }
      }
      watchers.set(id, w);
      group.watchers.add(w);
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
            const w = watchers.get(req.cancel_request?.watch_id ?? -1);
            if (w && remove(w)) send({ header: headerAt(), watchId: w.id, canceled: true });
            return;
          }
          case "progress_request":
            // Not tied to a watcher: clientv3 broadcasts it to all of the stream's watchers.
            // Events still pending go first: nothing may follow at or below its revision.
            flush();
            send({ header: headerAt(), watchId: -1 });
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
      groups.clear();
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
