/**
 * etcd's Watch service: one bidirectional stream carries many watchers. A watcher created at
 * `start_revision` catches up from the event history from there and then follows live
 * events, with no gap and no duplicate: the read of the history and the switch to live
 * events happen in one synchronous step of the event loop, and applies are synchronous too.
 * Works on any node (a follower sends an event once it has applied it), so a client resuming
 * elsewhere from its last revision + 1 misses nothing. A start revision older than the
 * history is answered as etcd answers a compacted one (`compact_revision` set, watcher
 * cancelled).
 *
 * A slow client never slows the node or other streams, and is not dropped while the history
 * can still serve it: once more than a bounded number of bytes waits for a stream's client,
 * the stream is parked, as etcd's watchable store parks a blocked watcher among its
 * "unsynced" ones: no more live events are queued for it, each watcher keeps the revision it
 * has been sent up to, and when the client has read half the bound the watchers catch up
 * from the shared history, a bounded chunk at a time, and rejoin the live events. Only a
 * watcher whose next revision has left the history is cancelled (`compact_revision` set).
 * What a slow stream holds is its send buffer; the history is the node's.
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
import {
  type EventBatch,
  eventsFrom,
  MAX_WATCH_RESPONSE_EVENT_BYTES,
  packedResponsesOf,
  readCatchUp,
} from "./watch_batch.ts";

export { MAX_WATCH_RESPONSE_EVENT_BYTES };

/**
 * Bytes of responses that may wait for a slow client on one stream before its watchers are
 * parked (no more live events queued; they catch up from the history once it drains).
 */
export const DEFAULT_WATCH_STREAM_BUFFER_BYTES = 16 * 1024 * 1024;
/** How often a parked stream looks whether its client has read enough to catch up. */
const CATCH_UP_POLL_MS = 10;
/** How often watchers that asked for progress notifications get one when idle (etcd: 10 min). */
export const DEFAULT_PROGRESS_NOTIFY_MS = 10 * 60 * 1000;
/** Requests of one stream taken off the connection but not handled yet, at most. */
const MAX_QUEUED_REQUESTS = 64;
/** Watchers one stream may hold. */
export const MAX_WATCHERS_PER_STREAM = 10_000;

/** Settings of the Watch service. */
export interface WatchServiceOptions {
  readonly backend: EtcdBackend;
  readonly authorize?: AuthorizeFn;
  readonly onRequest?: (info: RequestInfo) => void;
  /** Default {@link DEFAULT_WATCH_STREAM_BUFFER_BYTES}. */
  readonly streamBufferBytes?: number;
  /** Called with the number of watchers each time a stream is parked (metrics, tests). */
  readonly onParked?: (watchers: number) => void;
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

/** The watchers of one stream with one selector, and the events they share this turn. */
interface Group extends Selector {
  readonly key: string;
  readonly watchers: Set<Watcher>;
  /** Live events selected this turn, for the group's synced watchers. */
  pending: EventBatch;
}

interface Watcher {
  readonly id: number;
  readonly group: Group;
  readonly progressNotify: boolean;
  /**
   * The lowest revision whose events have not been queued for this watcher. While synced
   * the live events it has not been sent yet are those of the turn in its group's pending.
   */
  next: number;
  /** Follows the live events; false while parked or catching up from the history. */
  synced: boolean;
  /** Something was sent since the last progress tick. */
  active: boolean;
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
 * revision's bytes are kept (a catch-up encodes older ones again rather than keep bytes beside
 * the whole history).
 */
let cached: { rev: RevisionEvents; events: EncodedEvent[] } | undefined;

const encode = (rev: RevisionEvents): EncodedEvent[] =>
  rev.events.map((e) => ({ event: e, key: keyBytes(e.key) }));

function encodingsOf(rev: RevisionEvents): EncodedEvent[] {
  if (cached?.rev !== rev) cached = { rev, events: encode(rev) };
  return cached.events;
}

/**
 * Revisions of the history one catch-up step looks at, over all its watchers: a watcher that
 * selects little reads far in a step, and a stream with many such watchers (a thousand keys
 * watched one by one) must not hold the event loop, and every other stream, for the whole
 * history at once.
 */
export const CATCH_UP_STEP_REVISIONS = 20_000;

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

/**
 * The encoded events of `rev` that `s` selects, in order (empty when none). `encodings` gives
 * the revision's events ready to encode: the node's cache of the newest revision by default.
 */
function select(
  s: Selector,
  rev: RevisionEvents,
  encodings: (rev: RevisionEvents) => EncodedEvent[] = encodingsOf,
): Uint8Array[] {
  const out: Uint8Array[] = [];
  const events = rev.events;
  // A one-key selector compares the key as a string: the revision's encodings are looked up
  // (made, if it is not the newest revision) only once something matches.
  const oneKey = s.range.end === undefined;
  let encs: EncodedEvent[] | undefined;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    if (e.type === "put" ? s.noPut : s.noDelete) continue;
    if (oneKey && e.key !== s.range.start) continue;
    encs ??= encodings(rev);
    if (!oneKey && !matches(s.range, e.key, encs[i].key)) continue;
    out.push(encodedEvent(encs[i], rev.revision, s.prevKv));
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
  /** Sends framed responses. */
  write(framed: Uint8Array): void;
  /** Bytes written that still wait for the client. */
  readonly waiting: number;
}

function rawSink(call: grpc.ServerDuplexStream<WatchRequest, unknown>): ResponseSink | undefined {
  const stream = http2StreamOf(call);
  if (!stream) return undefined;
  call.sendMetadata(new grpc.Metadata());
  return {
    write(framed) {
      stream.write(framed);
    },
    get waiting() {
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
    },
    get waiting() {
      return waiting;
    },
  };
}

const COMPACTED = "etcdserver: mvcc: required revision has been compacted";

/** Builds the handler of `etcdserverpb.Watch`. */
export function createWatchHandler(opts: WatchServiceOptions): grpc.UntypedServiceImplementation {
  const backend = opts.backend;
  const store = backend.store;
  const bufferBytes = opts.streamBufferBytes ?? DEFAULT_WATCH_STREAM_BUFFER_BYTES;
  // A parked stream catches up once its client has read half the bound, and each catch-up
  // step fills the buffer to three quarters of it (at least one revision per step).
  const resumeBytes = Math.floor(bufferBytes / 2);
  const fillBytes = Math.floor((bufferBytes * 3) / 4);
  const progressMs = opts.progressNotifyMs ?? DEFAULT_PROGRESS_NOTIFY_MS;
  const headerAt = (revision?: number) => encodeHeaderField(header(backend, revision));

  const Watch = (call: grpc.ServerDuplexStream<WatchRequest, unknown>) => {
    const startedMs = performance.now();
    const subject = subjectOf(call);
    const sink = (opts.forceObjectWrites ? undefined : rawSink(call)) ?? objectSink(call);
    const watchers = new Map<number, Watcher>();
    const groups = new Map<string, Group>();
    /** Watchers parked or catching up from the history (not following live events). */
    const unsynced = new Set<Watcher>();
    let nextId = 0;
    let closed = false;
    /** The revision after the newest live one this stream has seen. */
    let liveNext = store.revision + 1;
    /** A progress request waits until every watcher is synced (as etcd 3.5 defers it). */
    let progressDeferred = false;
    let pollTimer: ReturnType<typeof setTimeout> | undefined;
    /** Set while the request queue waits for the client to read (see `drained`). */
    let requestTimer: ReturnType<typeof setTimeout> | undefined;

    const frames = new WatchFrames();
    /** Writes what is framed; parks the stream once its client lags by more than the bound. */
    const write = (): void => {
      if (frames.count === 0) return;
      const framed = frames.take();
      if (closed) return;
      sink.write(framed);
      if (sink.waiting > bufferBytes && unsynced.size < watchers.size) park();
    };
    /** Sends one control response (after everything appended before it). */
    const send = (r: WatchResponseParts): void => {
      frames.append(r);
      write();
    };

    const remove = (w: Watcher): boolean => {
      if (watchers.get(w.id) !== w) return false;
      watchers.delete(w.id);
      unsynced.delete(w);
      w.group.watchers.delete(w);
      if (w.group.watchers.size === 0) groups.delete(w.group.key);
      return true;
    };

    /** The header of each response of one framing pass, encoded once per revision. */
    const headerCache = () => {
      const headers = new Map<number, Uint8Array>();
      return (revision: number) => {
        let h = headers.get(revision);
        if (!h) headers.set(revision, h = headerAt(revision));
        return h;
      };
    };
    /** Frames `b` for `w`; `packed` is `b` as packedResponsesOf made it, made once per batch. */
    const frameEvents = (
      w: Watcher,
      b: EventBatch,
      packed: readonly { events: Uint8Array[]; revision: number }[],
      headerOf: (r: number) => Uint8Array,
    ) => {
      if (b.events.length === 0) return;
      w.active = true;
      for (const r of packed) {
        frames.append({ header: headerOf(r.revision), watchId: w.id, events: r.events });
      }
      w.next = Math.max(w.next, b.revisions[b.revisions.length - 1] + 1);
    };

    // Every revision applied in one turn of the event loop goes to a watcher in one response
    // (in revision order, a transaction's events together), and all responses of the turn in
    // one write: under load the node applies many entries per turn.
    const dirtyGroups = new Set<Group>();
    let flushing = false;
    /** Frames the turn's live events for the synced watchers. */
    const frameLive = (): void => {
      if (dirtyGroups.size === 0) return;
      const headerOf = headerCache();
      let parkedHere = false;
      for (const g of dirtyGroups) {
        // The group's watchers are nearly always at one position: one packing for all.
        let last: EventBatch | undefined, packed: ReturnType<typeof packedResponsesOf> = [];
        for (const w of g.watchers) {
          if (!w.synced) continue;
          const b = eventsFrom(g.pending, w.next);
          if (b.events.length === 0) continue;
          if (sink.waiting + frames.byteLength > bufferBytes) {
            // One turn can apply thousands of revisions: past the bound, the rest of the
            // stream's watchers are parked where they stand (everything they select before
            // this turn's first event was framed) and read the turn from the history.
            w.synced = false;
            w.next = Math.max(w.next, b.revisions[0]);
            unsynced.add(w);
            parkedHere = true;
            continue;
          }
          if (b !== last) [last, packed] = [b, packedResponsesOf(b)];
          frameEvents(w, b, packed, headerOf);
        }
        g.pending = { events: [], revisions: [] };
      }
      dirtyGroups.clear();
      if (parkedHere) wake();
    };
    const flush = (): void => {
      flushing = false;
      frameLive();
      write();
    };
    const schedule = (): void => {
      if (!flushing) {
        flushing = true;
        queueMicrotask(flush);
      }
    };

    /** Stops queueing live events: every synced watcher keeps its position and waits. */
    const park = (): void => {
      frameLive();
      for (const w of watchers.values()) {
        if (!w.synced) continue;
        w.synced = false;
        // Everything below liveNext was framed for it above, or did not match.
        w.next = Math.max(w.next, liveNext);
        unsynced.add(w);
      }
      if (frames.count > 0) sink.write(frames.take());
      try {
        opts.onParked?.(watchers.size);
      } catch {
        // a hook failure must not break the stream
      }
      wake();
    };

    /** Cancels the unsynced watchers whose next revision has left the history. */
    const cancelBehind = (): void => {
      const compacted = store.compactedRevision;
      let h: Uint8Array | undefined;
      for (const w of [...unsynced]) {
        if (w.next > compacted) continue;
        remove(w);
        frames.append({
          header: h ??= headerAt(),
          watchId: w.id,
          canceled: true,
          compactRevision: compacted,
          cancelReason: `${COMPACTED} (mokv: the watch stream was too slow: revision ${w.next} ` +
            `is no longer in the event history)`,
        });
      }
    };

    /**
     * One catch-up step: the unsynced watchers of one group at one position read the history
     * once, up to the step's budget; a watcher that reaches the newest revision is synced
     * again. Synchronous, so nothing is applied between its read and its switch to live.
     */
    const catchUp = (): void => {
      if (closed || unsynced.size === 0) return;
      cancelBehind();
      const batches = new Map<Group, Map<number, Watcher[]>>();
      for (const w of unsynced) {
        let byNext = batches.get(w.group);
        if (!byNext) batches.set(w.group, byNext = new Map());
        const list = byNext.get(w.next);
        if (list) list.push(w);
        else byNext.set(w.next, [w]);
      }
      // The furthest behind first (as etcd syncs from the oldest unsynced revision): the
      // budget goes to whoever the history would drop first, so a busy watcher that takes
      // every step's budget cannot hold a quiet one back until the history passes it.
      const order: { group: Group; next: number; list: Watcher[] }[] = [];
      for (const [group, byNext] of batches) {
        for (const [next, list] of byNext) order.push({ group, next, list });
      }
      order.sort((x, y) => x.next - y.next);
      const newest = store.revision;
      const headerOf = headerCache();
      // The step's history revisions, each prepared once for all of its watchers (the live
      // path prepares each once per node; here most are old, not the node's cached one).
      const prepared = new Map<RevisionEvents, EncodedEvent[]>();
      const encodings = (rev: RevisionEvents): EncodedEvent[] => {
        let events = prepared.get(rev);
        if (!events) prepared.set(rev, events = encode(rev));
        return events;
      };
      let revisionsLeft = CATCH_UP_STEP_REVISIONS;
      for (const { group, next, list } of order) {
        const budget = fillBytes - sink.waiting - frames.byteLength;
        if (budget <= 0 || revisionsLeft <= 0) break;
        const read = readCatchUp(
          store.history.revisionsFrom(next),
          next,
          (rev) => select(group, rev, encodings),
          Math.max(1, Math.floor(budget / list.length)),
          newest,
          revisionsLeft,
        );
        revisionsLeft -= read.visited;
        const packed = read.batch.events.length > 0 ? packedResponsesOf(read.batch) : [];
        for (const w of list) {
          frameEvents(w, read.batch, packed, headerOf);
          w.next = read.next;
          if (read.done) {
            w.synced = true;
            unsynced.delete(w);
          }
        }
      }
      answerDeferredProgress();
      write();
      // Stopped by the revision bound, not by the client: go on as soon as the event loop
      // has served everyone else.
      wake(revisionsLeft <= 0 ? 0 : CATCH_UP_POLL_MS);
    };

    /** Answers a deferred progress request once every watcher follows live events again. */
    const answerDeferredProgress = (): void => {
      if (!progressDeferred || unsynced.size > 0) return;
      // Framing the turn's events may park watchers (past the bound): then it waits on.
      frameLive();
      if (unsynced.size > 0) return;
      progressDeferred = false;
      frames.append({ header: headerAt(), watchId: -1 });
    };

    /** Looks again soon whether the client has read enough (while any watcher is unsynced). */
    const wake = (delayMs = CATCH_UP_POLL_MS): void => {
      if (pollTimer !== undefined || closed || unsynced.size === 0) return;
      pollTimer = setTimeout(() => {
        pollTimer = undefined;
        if (closed) return;
        if (sink.waiting <= resumeBytes) {
          catchUp();
        } else {
          cancelBehind();
          answerDeferredProgress();
          write();
          wake();
        }
      }, delayMs);
    };

    const unsubscribe = store.onEvents((rev) => {
      liveNext = rev.revision + 1;
      // A parked stream queues nothing: its watchers read the history when they catch up.
      if (unsynced.size === watchers.size) return;
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
        if ((w.synced ? Math.max(w.next, liveNext) : w.next) > revision) continue;
        remove(w);
        frames.append({
          header: headerAt(),
          watchId: w.id,
          canceled: true,
          compactRevision: revision,
          cancelReason: COMPACTED,
        });
      }
      liveNext = Math.max(liveNext, revision + 1);
      answerDeferredProgress();
      write();
    });
    const timer = setInterval(() => {
      flush();
      for (const w of watchers.values()) {
        // A parked watcher gets no progress notification: it has not been sent that far.
        if (w.synced && w.progressNotify && !w.active) {
          frames.append({ header: headerAt(), watchId: w.id });
        }
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
      // From here to the end nothing awaits: the catch-up and the subscription see one state.
      const current = store.revision;
      const compacted = store.compactedRevision;
      send({ header: headerAt(current), watchId: id, created: true });
      if (req.start_revision > 0 && req.start_revision <= compacted) {
        send({
          header: headerAt(current),
          watchId: id,
          canceled: true,
          compactRevision: compacted,
          cancelReason: COMPACTED,
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
        group = { ...selector, key, watchers: new Set(), pending: { events: [], revisions: [] } };
        groups.set(key, group);
      }
      const start = req.start_revision > 0 ? req.start_revision : current + 1;
      // A watcher from the past starts unsynced and catches up from the history (in steps,
      // like a parked one); so does any new watcher of a parked stream.
      const parked = watchers.size > 0 && unsynced.size === watchers.size;
      const w: Watcher = {
        id,
        group,
        progressNotify: req.progress_notify,
        next: start,
        synced: start > current && !parked,
        active: false,
      };
      watchers.set(id, w);
      group.watchers.add(w);
      if (!w.synced) {
        unsynced.add(w);
        if (sink.waiting <= resumeBytes) catchUp();
        else wake();
      }
    };

    // Requests are handled one after another (authorization may await). Every create and
    // cancel is answered, so a client that sends requests but does not read its responses
    // would grow the stream without bound: while more than the bound waits for the client,
    // the next request waits too, and at most MAX_QUEUED_REQUESTS are taken off the
    // connection (then reading pauses, and HTTP/2 flow control holds the client back).
    let queue: Promise<void> = Promise.resolve();
    let queued = 0;
    let requestsPaused = false;
    const drained = async (): Promise<void> => {
      while (!closed && sink.waiting > bufferBytes) {
        await new Promise<void>((resolve) => {
          requestTimer = setTimeout(() => {
            requestTimer = undefined;
            resolve();
          }, CATCH_UP_POLL_MS);
        });
      }
    };
    call.on("data", (req: WatchRequest) => {
      if (++queued >= MAX_QUEUED_REQUESTS && !requestsPaused) {
        requestsPaused = true;
        call.pause();
      }
      queue = queue.then(async () => {
        if (sink.waiting > bufferBytes) await drained();
        if (--queued <= MAX_QUEUED_REQUESTS / 2 && requestsPaused && !closed) {
          requestsPaused = false;
          call.resume();
        }
        if (closed) return;
        switch (req.request_union) {
          case "create_request":
            if (req.create_request) await create(req.create_request);
            return;
          case "cancel_request": {
            const w = watchers.get(req.cancel_request?.watch_id ?? -1);
            if (w && remove(w)) {
              frames.append({ header: headerAt(), watchId: w.id, canceled: true });
              answerDeferredProgress();
              write();
            }
            return;
          }
          case "progress_request":
            // Not tied to a watcher: clientv3 broadcasts it to all of the stream's watchers,
            // so it waits while any is parked. Events still pending go first: nothing may
            // follow at or below its revision.
            flush();
            if (unsynced.size > 0) {
              progressDeferred = true;
              return;
            }
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
      if (pollTimer !== undefined) clearTimeout(pollTimer);
      if (requestTimer !== undefined) clearTimeout(requestTimer);
      watchers.clear();
      unsynced.clear();
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
