/**
 * Requests that travel between nodes beside Raft messages, on the same peer connection:
 * a follower forwards a client's write (or an admin action) to the leader, and the leader
 * checks that a would-be member answers over mutual TLS before adding it.
 */
import {
  type CommandResult,
  decodeTxnResponse,
  encodeTxnResponse,
  type EtcdFailure,
  type Refusal,
  type TxnResponse,
} from "../kv/mod.ts";
import { InvalidArgumentError, NotLeaderError, UnavailableError } from "../errors.ts";
import { ByteReader, ByteWriter } from "./_binary.ts";

/** Request kinds on the peer transport. */
export const RequestKind = {
  /** Payload: an encoded command. Answer: an encoded CommandResult. */
  apply: 1,
  /**
   * Payload: the asker's RPC address, or empty. Answer: the node id, sent only after the
   * answerer reached the asker back: proves both directions work over mutual TLS.
   */
  ping: 2,
  /** Payload: JSON AdminRequest. Answer: JSON string result. */
  admin: 3,
} as const;

/** An admin action forwarded to the leader. */
export type AdminRequest =
  | { readonly type: "remove"; readonly id: string }
  | { readonly type: "transfer"; readonly id: string };

const R_OK = 1, R_VALUE = 2, R_EXISTED = 4, R_HAS_EXISTED = 8, R_LENGTH = 16, R_REFUSED = 32;
/** A second flags byte follows (etcd's results). */
const R_EXTENDED = 64;
const X_TXN = 1, X_ETCD_ERROR = 2, X_REVISION = 4;
/** Wire codes of `CommandResult.refused.reason`. */
const REFUSAL_CODES = { "value-too-large": 1, "quota-exceeded": 2 } as const;

/** Encodes a command result for the trip back to the forwarding follower. */
export function encodeResult(r: CommandResult): Uint8Array {
  const w = new ByteWriter(32 + (r.value?.length ?? 0));
  let flags = r.ok ? R_OK : 0;
  if (r.value !== undefined) flags |= R_VALUE;
  if (r.existed !== undefined) flags |= R_HAS_EXISTED | (r.existed ? R_EXISTED : 0);
  if (r.length !== undefined) flags |= R_LENGTH;
  if (r.refused !== undefined) flags |= R_REFUSED;
  const ext = (r.txn !== undefined ? X_TXN : 0) | (r.etcdError !== undefined ? X_ETCD_ERROR : 0) |
    (r.revision !== undefined ? X_REVISION : 0);
  if (ext !== 0) flags |= R_EXTENDED;
  w.u8(flags);
  w.varint(r.version);
  if (r.value !== undefined) w.bytes(r.value);
  if (r.length !== undefined) w.varint(r.length);
  if (r.refused !== undefined) {
    w.u8(REFUSAL_CODES[r.refused.reason]);
    w.varint(r.refused.sizeBytes);
    w.varint(r.refused.limitBytes);
  }
  if (ext !== 0) {
    w.u8(ext);
    if (r.txn !== undefined) w.bytes(encodeTxnResponse(r.txn));
    if (r.etcdError !== undefined) {
      w.bytes(new TextEncoder().encode(r.etcdError.code));
      w.bytes(new TextEncoder().encode(r.etcdError.message));
    }
    if (r.revision !== undefined) w.varint(r.revision);
  }
  return w.finish();
}

/** Decodes what `encodeResult` made. */
export function decodeResult(bytes: Uint8Array): CommandResult {
  const r = new ByteReader(bytes);
  const flags = r.u8();
  const version = r.varint();
  const value = flags & R_VALUE ? r.bytes() : undefined;
  const length = flags & R_LENGTH ? r.varint() : undefined;
  let refused: Refusal | undefined;
  if (flags & R_REFUSED) {
    const code = r.u8();
    const reason = code === REFUSAL_CODES["value-too-large"]
      ? "value-too-large"
      : code === REFUSAL_CODES["quota-exceeded"]
      ? "quota-exceeded"
      : undefined;
    if (reason === undefined) throw new InvalidArgumentError(`unknown refusal code ${code}`);
    refused = { reason, sizeBytes: r.varint(), limitBytes: r.varint() };
  }
  let txn: TxnResponse | undefined;
  let etcdError: EtcdFailure | undefined;
  let revision: number | undefined;
  if (flags & R_EXTENDED) {
    const ext = r.u8();
    if (ext & X_TXN) txn = decodeTxnResponse(r.bytes());
    if (ext & X_ETCD_ERROR) {
      const dec = new TextDecoder();
      etcdError = { code: dec.decode(r.bytes()), message: dec.decode(r.bytes()) };
    }
    if (ext & X_REVISION) revision = r.varint();
  }
  r.end();
  return {
    ok: (flags & R_OK) !== 0,
    version,
    ...(value !== undefined ? { value } : {}),
    ...(flags & R_HAS_EXISTED ? { existed: (flags & R_EXISTED) !== 0 } : {}),
    ...(length !== undefined ? { length } : {}),
    ...(refused !== undefined ? { refused } : {}),
    ...(txn !== undefined ? { txn } : {}),
    ...(etcdError !== undefined ? { etcdError } : {}),
    ...(revision !== undefined ? { revision } : {}),
  };
}

const NOT_LEADER = "NOT_LEADER";
const UNAVAILABLE = "UNAVAILABLE";
const INVALID = "INVALID_ARGUMENT";

/** Turns an error into the message of an error frame, keeping its kind. */
export function errorToWire(err: unknown): string {
  if (err instanceof NotLeaderError) return `${NOT_LEADER}:${err.leaderId ?? ""}`;
  if (err instanceof UnavailableError) return `${UNAVAILABLE}:${err.message}`;
  if (err instanceof InvalidArgumentError) return `${INVALID}:${err.message}`;
  return `${UNAVAILABLE}:${err instanceof Error ? err.message : String(err)}`;
}

/** Rebuilds the typed error from an error frame's message. */
export function errorFromWire(message: string): Error {
  const at = message.indexOf(":");
  const kind = at < 0 ? "" : message.slice(0, at);
  const rest = at < 0 ? message : message.slice(at + 1);
  if (kind === NOT_LEADER) return new NotLeaderError(rest || undefined);
  if (kind === INVALID) return new InvalidArgumentError(rest);
  return new UnavailableError(rest);
}
