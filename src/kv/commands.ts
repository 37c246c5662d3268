/**
 * The commands the KV state machine applies, their results, and their compact binary encoding
 * (the bytes carried in Raft log entries).
 *
 * Encoding, version 2 (all integers big-endian; "u53" is 8 bytes holding an integer below 2^53):
 * ```
 * u8 version (=2) | u8 type (1 set, 2 delete, 3 append, 4 cas, 5 txn, 6 compact,
 *   7 leaseGrant, 8 leaseRevoke, 9 leaseKeepAlive) | u8 flags
 *   (bit0 session, bit1 expectValue, bit2 expectVersion, bit3 lease) | u53 timeMs | str clockSource
 *   | u53 maxValueBytes (0: none) | u53 quotaBytes (0: none) | str key
 * [session]   str subject | str clientId | u53 seq
 * [set/append/cas] blob value
 * [lease]          u53 lease (a set that attaches its key)
 * [txn]            blob etcdserverpb.TxnRequest (etcd's protobuf encoding)
 * [compact]        u53 revision
 * [leaseGrant]     u53 leaseId | u53 ttlSeconds | str owner
 * [leaseRevoke]    u53 leaseId | u8 expired (0 no, 1 yes, 2 yes and u53 renewedIndex follows)
 * [leaseKeepAlive] u53 leaseId
 * [expectValue]    blob expectValue
 * [expectVersion]  u53 expectVersion
 * ```
 * where `str`/`blob` are a u32 byte length followed by the bytes (strings in UTF-8). Version 1
 * (no clockSource, no limits, no session subject) still decodes, so old log entries replay:
 * such a command has no limits, clock source "" and sessions of subject "".
 */
import { InvalidArgumentError } from "../errors.ts";
import { BinaryReader, BinaryWriter, utf8Length } from "./_binary.ts";
import { decodeTxn, encodeTxn, type TxnRequest, type TxnResponse } from "./etcd_wire.ts";

/** Longest accepted `clientId`, in UTF-8 bytes: sessions are bounded by bytes, not only count. */
export const MAX_CLIENT_ID_BYTES = 128;
/** Longest accepted `clockSource`, in UTF-8 bytes (a node id plus a per-process suffix). */
export const MAX_CLOCK_SOURCE_BYTES = 256;

/**
 * Identifies a client's write for exactly-once retries: one outstanding write per
 * (subject, clientId). Sessions are scoped to the subject, so one subject's ids can never
 * collide with, or evict, another's.
 */
export interface ClientSession {
  /** The certificate subject (CN) that made the write; absent means "" (no certificate). */
  readonly subject?: string;
  /** At most {@link MAX_CLIENT_ID_BYTES} UTF-8 bytes. */
  readonly clientId: string;
  /** Strictly increasing per client, starting at 1. */
  readonly seq: number;
}

/** Fields every command carries. */
interface CommandBase {
  readonly key: string;
  readonly session?: ClientSession;
  /**
   * A reading of the proposing node's clock (monotonic, milliseconds), used only to expire
   * sessions deterministically. Only differences between two readings of the same
   * `clockSource` count (see KvStateMachine), so a node whose clock is offset cannot move
   * log time.
   */
  readonly timeMs: number;
  /** Which clock `timeMs` was read from (a node id and a per-process suffix); default "". */
  readonly clockSource?: string;
  /**
   * Largest value this write may leave under its key, in bytes (the proposing node's
   * `max-value-bytes`); carried in the entry so every replica decides alike. Absent: no limit.
   */
  readonly maxValueBytes?: number;
  /**
   * Data-size quota (the proposing node's `quota-bytes`): a write that grows the stored bytes
   * above it is refused. Carried in the entry so every replica decides alike. Absent: none.
   */
  readonly quotaBytes?: number;
}

/** Stores `value` under `key`, replacing any previous value. */
export interface SetCommand extends CommandBase {
  readonly type: "set";
  readonly value: Uint8Array;
  /** Attaches the key to this lease (refused if it does not exist); absent or 0: none. */
  readonly lease?: number;
}

/** Removes `key`; succeeds whether or not it existed (see `CommandResult.existed`). */
export interface DeleteCommand extends CommandBase {
  readonly type: "delete";
}

/** Appends `value` to the value under `key`, creating it when absent. */
export interface AppendCommand extends CommandBase {
  readonly type: "append";
  readonly value: Uint8Array;
}

/**
 * Stores `value` only if the current state matches exactly one expectation: `expectValue`
 * (the key exists with exactly these bytes) or `expectVersion` (the key's version; 0 means the
 * key must not exist).
 */
export interface CasCommand extends CommandBase {
  readonly type: "cas";
  readonly value: Uint8Array;
  readonly expectValue?: Uint8Array;
  readonly expectVersion?: number;
}

/**
 * An etcd transaction (etcd's Put and DeleteRange arrive as one-op transactions): compares,
 * then the success or failure ops, all at this entry's revision. `key` is "".
 */
export interface TxnCommand extends CommandBase {
  readonly type: "txn";
  readonly txn: TxnRequest;
}

/** etcd's Compact: forget the history at or below `revision`. `key` is "". */
export interface CompactCommand extends CommandBase {
  readonly type: "compact";
  readonly revision: number;
}

/**
 * A lease (etcd's): `leaseId` chosen by the proposing edge (refused if it exists), `ttlSeconds`
 * as granted, `owner` the subject that may keep it alive or revoke it. `key` is "".
 */
export interface LeaseGrantCommand extends CommandBase {
  readonly type: "leaseGrant";
  readonly leaseId: number;
  readonly ttlSeconds: number;
  readonly owner: string;
}

/**
 * Ends a lease and deletes its keys at this entry's revision: a client's LeaseRevoke, or the
 * leader's decision that it expired (`expired`). `key` is "".
 */
export interface LeaseRevokeCommand extends CommandBase {
  readonly type: "leaseRevoke";
  readonly leaseId: number;
  readonly expired: boolean;
  /**
   * An expiry only: the index of the lease's last grant or keep-alive the lessor had seen
   * applied when it decided. A renewal applied after it (a keep-alive already in the log
   * when the expiry was decided) voids the expiry, so no acknowledged keep-alive is followed
   * by its lease's end less than a TTL later.
   */
  readonly renewedIndex?: number;
}

/**
 * Renews a lease: every node restarts its TTL when this entry applies; only the leader's
 * clock decides expiry. `key` is "".
 */
export interface LeaseKeepAliveCommand extends CommandBase {
  readonly type: "leaseKeepAlive";
  readonly leaseId: number;
}

/** Every command the state machine understands, discriminated on `type`. */
export type Command =
  | SetCommand
  | DeleteCommand
  | AppendCommand
  | CasCommand
  | TxnCommand
  | CompactCommand
  | LeaseGrantCommand
  | LeaseRevokeCommand
  | LeaseKeepAliveCommand;

/** An etcd request the state machine refused, with etcd's code and message; nothing changed. */
export interface EtcdFailure {
  readonly code: string;
  readonly message: string;
}

/** Why the state machine refused a write: the value limit or the data-size quota. */
export type RefusalReason = "value-too-large" | "quota-exceeded";

/**
 * A write the state machine refused, changing nothing. For "value-too-large", `sizeBytes` is
 * the value the write would have left; for "quota-exceeded", the total stored bytes it would
 * have reached. `limitBytes` is the limit it carried.
 */
export interface Refusal {
  readonly reason: RefusalReason;
  readonly sizeBytes: number;
  readonly limitBytes: number;
}

/**
 * What applying a command produced.
 * - `version`: the Raft index of the key's last write (for a successful write, this command's
 *   index; for a failed CAS, the current version, 0 when the key is absent).
 * - Set: `existed` tells whether the key had a value before.
 * - Delete: always `ok`; `existed` tells whether something was removed (`version` 0 if not).
 * - Append: `length` is the byte length of the value after the append (the value itself is not
 *   returned, so results stay small in the session cache and in snapshots).
 * - CAS: `ok` false when the expectation failed, with the current `value` (absent when the key
 *   does not exist) and `version`; `existed` tells whether the key exists.
 * - `refused`: the write was refused by a limit it carried (`ok` false, `version` 0, nothing
 *   changed); the edge answers with the matching typed error.
 * - A log entry that does not decode yields `{ ok: false, version: 0 }`.
 */
export interface CommandResult {
  readonly ok: boolean;
  readonly version: number;
  readonly value?: Uint8Array;
  readonly existed?: boolean;
  readonly length?: number;
  readonly refused?: Refusal;
  /** A transaction's (or Put's, DeleteRange's) response, without its header. */
  readonly txn?: TxnResponse;
  /** An etcd request refused at apply (then `ok` is false). */
  readonly etcdError?: EtcdFailure;
  /** The store revision after this command (etcd's header revision). */
  readonly revision?: number;
  /** A lease command's lease TTL as granted, in seconds. */
  readonly ttlSeconds?: number;
}

/** The encoding's version byte as written; a decoder accepts this one and version 1. */
export const COMMAND_ENCODING_VERSION = 2;
const LEGACY_ENCODING_VERSION = 1;

const TYPE_CODES = {
  set: 1,
  delete: 2,
  append: 3,
  cas: 4,
  txn: 5,
  compact: 6,
  leaseGrant: 7,
  leaseRevoke: 8,
  leaseKeepAlive: 9,
} as const;
const FLAG_SESSION = 1;
const FLAG_EXPECT_VALUE = 2;
const FLAG_EXPECT_VERSION = 4;
/** A set that attaches its key to a lease: u53 lease after the value. */
const FLAG_LEASE = 8;

function checkLimit(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) {
    throw new InvalidArgumentError(`${name} must be an integer >= 1, got ${v}`);
  }
}

function checkLeaseId(id: number): void {
  if (!Number.isSafeInteger(id) || id < 1) {
    throw new InvalidArgumentError(`lease id must be an integer in [1, 2^53), got ${id}`);
  }
}

/**
 * Checks a command's invariants (session seq >= 1, clientId and clockSource bounded, integers
 * in range, exactly one CAS expectation). Throws InvalidArgumentError naming the problem.
 */
export function validateCommand(cmd: Command): void {
  if (typeof cmd.key !== "string") throw new InvalidArgumentError("key must be a string");
  if (!Number.isSafeInteger(cmd.timeMs) || cmd.timeMs < 0) {
    throw new InvalidArgumentError(`timeMs must be a non-negative integer, got ${cmd.timeMs}`);
  }
  if (cmd.clockSource !== undefined && utf8Length(cmd.clockSource) > MAX_CLOCK_SOURCE_BYTES) {
    throw new InvalidArgumentError(`clockSource is over ${MAX_CLOCK_SOURCE_BYTES} bytes`);
  }
  checkLimit("maxValueBytes", cmd.maxValueBytes);
  checkLimit("quotaBytes", cmd.quotaBytes);
  if (cmd.session) {
    if (!Number.isSafeInteger(cmd.session.seq) || cmd.session.seq < 1) {
      throw new InvalidArgumentError(`session seq must be an integer >= 1, got ${cmd.session.seq}`);
    }
    const idBytes = utf8Length(cmd.session.clientId);
    if (idBytes > MAX_CLIENT_ID_BYTES) {
      throw new InvalidArgumentError(
        `client_id is ${idBytes} bytes; the limit is ${MAX_CLIENT_ID_BYTES}`,
      );
    }
  }
  switch (cmd.type) {
    case "set":
    case "append":
    case "delete":
    case "txn":
      return;
    case "compact":
      if (!Number.isSafeInteger(cmd.revision) || cmd.revision < 1) {
        throw new InvalidArgumentError(`compact revision must be >= 1, got ${cmd.revision}`);
      }
      return;
    case "leaseGrant":
      if (!Number.isSafeInteger(cmd.ttlSeconds) || cmd.ttlSeconds < 1) {
        throw new InvalidArgumentError(`lease TTL must be >= 1 s, got ${cmd.ttlSeconds}`);
      }
      if (utf8Length(cmd.owner) > MAX_CLOCK_SOURCE_BYTES) {
        throw new InvalidArgumentError("lease owner is too long");
      }
      checkLeaseId(cmd.leaseId);
      return;
    case "leaseRevoke":
    case "leaseKeepAlive":
      checkLeaseId(cmd.leaseId);
      return;
    case "cas": {
      const hasValue = cmd.expectValue !== undefined;
      const hasVersion = cmd.expectVersion !== undefined;
      if (hasValue === hasVersion) {
        throw new InvalidArgumentError("cas needs exactly one of expectValue and expectVersion");
      }
      if (hasVersion && (!Number.isSafeInteger(cmd.expectVersion) || cmd.expectVersion! < 0)) {
        throw new InvalidArgumentError(`expectVersion must be >= 0, got ${cmd.expectVersion}`);
      }
      return;
    }
    default: {
      const never: never = cmd;
      throw new InvalidArgumentError(`unknown command ${(never as { type: string }).type}`);
    }
  }
}

/** Encodes a command for the Raft log. Throws InvalidArgumentError for an invalid command. */
export function encodeCommand(cmd: Command): Uint8Array {
  validateCommand(cmd);
  const keyBytes = utf8Length(cmd.key);
  const clockSource = cmd.clockSource ?? "";
  const clockBytes = utf8Length(clockSource);
  const subject = cmd.session?.subject ?? "";
  const subjectBytes = cmd.session ? utf8Length(subject) : 0;
  const clientBytes = cmd.session ? utf8Length(cmd.session.clientId) : 0;
  let size = 3 + 8 + 4 + clockBytes + 8 + 8 + 4 + keyBytes;
  let flags = 0;
  if (cmd.session) {
    flags |= FLAG_SESSION;
    size += 4 + subjectBytes + 4 + clientBytes + 8;
  }
  let txnBytes: Uint8Array | undefined;
  switch (cmd.type) {
    case "delete":
      break;
    case "set":
      size += 4 + cmd.value.length;
      if (cmd.lease) {
        flags |= FLAG_LEASE;
        size += 8;
      }
      break;
    case "append":
      size += 4 + cmd.value.length;
      break;
    case "txn":
      txnBytes = encodeTxn(cmd.txn);
      size += 4 + txnBytes.length;
      break;
    case "compact":
      size += 8;
      break;
    case "leaseGrant":
      size += 8 + 8 + 4 + utf8Length(cmd.owner);
      break;
    case "leaseRevoke":
      size += 8 + 1 + (cmd.renewedIndex !== undefined ? 8 : 0);
      break;
    case "leaseKeepAlive":
      size += 8;
      break;
    case "cas":
      size += 4 + cmd.value.length;
      if (cmd.expectValue !== undefined) {
        flags |= FLAG_EXPECT_VALUE;
        size += 4 + cmd.expectValue.length;
      } else {
        flags |= FLAG_EXPECT_VERSION;
        size += 8;
      }
      break;
    default: {
      const never: never = cmd;
      throw new InvalidArgumentError(`unknown command ${(never as { type: string }).type}`);
    }
  }
  const w = new BinaryWriter(size);
  w.u8(COMMAND_ENCODING_VERSION);
  w.u8(TYPE_CODES[cmd.type]);
  w.u8(flags);
  w.u53(cmd.timeMs);
  w.str(clockSource, clockBytes);
  w.u53(cmd.maxValueBytes ?? 0);
  w.u53(cmd.quotaBytes ?? 0);
  w.str(cmd.key, keyBytes);
  if (cmd.session) {
    w.str(subject, subjectBytes);
    w.str(cmd.session.clientId, clientBytes);
    w.u53(cmd.session.seq);
  }
  if (cmd.type === "txn") w.blob(txnBytes!);
  else if (cmd.type === "compact") w.u53(cmd.revision);
  else if (cmd.type === "leaseGrant") {
    w.u53(cmd.leaseId);
    w.u53(cmd.ttlSeconds);
    w.str(cmd.owner, utf8Length(cmd.owner));
  } else if (cmd.type === "leaseRevoke") {
    w.u53(cmd.leaseId);
    if (cmd.expired && cmd.renewedIndex !== undefined) {
      w.u8(2);
      w.u53(cmd.renewedIndex);
    } else {
      w.u8(cmd.expired ? 1 : 0);
    }
  } else if (cmd.type === "leaseKeepAlive") w.u53(cmd.leaseId);
  else if (cmd.type !== "delete") w.blob(cmd.value);
  if (cmd.type === "set" && cmd.lease) w.u53(cmd.lease);
  if (cmd.type === "cas") {
    if (cmd.expectValue !== undefined) w.blob(cmd.expectValue);
    else w.u53(cmd.expectVersion!);
  }
  return w.bytes;
}

/**
 * Decodes bytes made by {@link encodeCommand} (version 2, or a version 1 entry from an older
 * log). The result owns its byte arrays (copies, never views into `bytes`); absent optional
 * fields are omitted. Throws InvalidArgumentError for anything else.
 */
export function decodeCommand(bytes: Uint8Array): Command {
  const r = new BinaryReader(bytes);
  const version = r.u8();
  if (version !== COMMAND_ENCODING_VERSION && version !== LEGACY_ENCODING_VERSION) {
    throw new InvalidArgumentError(`unknown command encoding version ${version}`);
  }
  const legacy = version === LEGACY_ENCODING_VERSION;
  const typeCode = r.u8();
  const flags = r.u8();
  if ((flags & ~(FLAG_SESSION | FLAG_EXPECT_VALUE | FLAG_EXPECT_VERSION | FLAG_LEASE)) !== 0) {
    throw new InvalidArgumentError(`unknown command flags ${flags}`);
  }
  const timeMs = r.u53();
  const clockSource = legacy ? "" : r.str();
  const maxValueBytes = legacy ? 0 : r.u53();
  const quotaBytes = legacy ? 0 : r.u53();
  const key = r.str();
  let session: ClientSession | undefined;
  if (flags & FLAG_SESSION) {
    const subject = legacy ? "" : r.str();
    const clientId = r.str();
    const seq = r.u53();
    session = subject === "" ? { clientId, seq } : { subject, clientId, seq };
  }
  const base: CommandBase = {
    key,
    timeMs,
    ...(clockSource !== "" ? { clockSource } : {}),
    ...(maxValueBytes > 0 ? { maxValueBytes } : {}),
    ...(quotaBytes > 0 ? { quotaBytes } : {}),
    ...(session ? { session } : {}),
  };
  const expectFlags = flags & (FLAG_EXPECT_VALUE | FLAG_EXPECT_VERSION);
  let cmd: Command;
  switch (typeCode) {
    case TYPE_CODES.set:
    case TYPE_CODES.append: {
      if (expectFlags) throw new InvalidArgumentError("only cas carries an expectation");
      const value = r.blob();
      if (flags & FLAG_LEASE && typeCode !== TYPE_CODES.set) {
        throw new InvalidArgumentError("only set carries a lease");
      }
      const lease = flags & FLAG_LEASE ? r.u53() : 0;
      cmd = typeCode === TYPE_CODES.set
        ? { type: "set", ...base, value, ...(lease ? { lease } : {}) }
        : { type: "append", ...base, value };
      break;
    }
    case TYPE_CODES.delete:
      if (expectFlags) throw new InvalidArgumentError("only cas carries an expectation");
      cmd = { type: "delete", ...base };
      break;
    case TYPE_CODES.txn: {
      if (expectFlags) throw new InvalidArgumentError("only cas carries an expectation");
      const bytes = r.blob();
      let txn: TxnRequest;
      try {
        txn = decodeTxn(bytes);
      } catch (err) {
        throw new InvalidArgumentError(`txn does not decode: ${err}`);
      }
      cmd = { type: "txn", ...base, txn };
      break;
    }
    case TYPE_CODES.compact:
      if (expectFlags) throw new InvalidArgumentError("only cas carries an expectation");
      cmd = { type: "compact", ...base, revision: r.u53() };
      break;
    case TYPE_CODES.leaseGrant:
      if (expectFlags) throw new InvalidArgumentError("only cas carries an expectation");
      cmd = { type: "leaseGrant", ...base, leaseId: r.u53(), ttlSeconds: r.u53(), owner: r.str() };
      break;
    case TYPE_CODES.leaseRevoke:
      if (expectFlags) throw new InvalidArgumentError("only cas carries an expectation");
      {
        const leaseId = r.u53();
        const flag = r.u8();
        cmd = flag === 2
          ? { type: "leaseRevoke", ...base, leaseId, expired: true, renewedIndex: r.u53() }
          : { type: "leaseRevoke", ...base, leaseId, expired: flag === 1 };
      }
      break;
    case TYPE_CODES.leaseKeepAlive:
      if (expectFlags) throw new InvalidArgumentError("only cas carries an expectation");
      cmd = { type: "leaseKeepAlive", ...base, leaseId: r.u53() };
      break;
    case TYPE_CODES.cas: {
      const value = r.blob();
      if (expectFlags === FLAG_EXPECT_VALUE) {
        cmd = { type: "cas", ...base, value, expectValue: r.blob() };
      } else if (expectFlags === FLAG_EXPECT_VERSION) {
        cmd = { type: "cas", ...base, value, expectVersion: r.u53() };
      } else {
        throw new InvalidArgumentError("cas needs exactly one expectation");
      }
      break;
    }
    default:
      throw new InvalidArgumentError(`unknown command type ${typeCode}`);
  }
  r.end();
  validateCommand(cmd);
  return cmd;
}
