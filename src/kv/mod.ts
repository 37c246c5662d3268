/**
 * The KV state machine layer: commands, their binary encoding, the key order and the ordered
 * map that the replication layer applies committed log entries to.
 */
export {
  type AppendCommand,
  type CasCommand,
  type ClientSession,
  type Command,
  COMMAND_ENCODING_VERSION,
  type CommandResult,
  type CompactCommand,
  decodeCommand,
  type DeleteCommand,
  encodeCommand,
  type EtcdFailure,
  MAX_CLIENT_ID_BYTES,
  MAX_CLOCK_SOURCE_BYTES,
  type Refusal,
  type RefusalReason,
  type SetCommand,
  type TxnCommand,
  validateCommand,
} from "./commands.ts";
export { compareKeys } from "./key_order.ts";
export * from "./etcd_wire.ts";
export {
  checkTxn,
  compareBytes,
  ETCD_ERRORS,
  EtcdError,
  evaluateReadOnlyTxn,
  inRange,
  isReadOnlyTxn,
  keyBytes,
  type KeyRange,
  keyRange,
  keyString,
  MAX_TXN_OPS,
  toKeyValue,
} from "./etcd_txn.ts";
export {
  DEFAULT_HISTORY_BYTES,
  DEFAULT_HISTORY_REVISIONS,
  EventHistory,
  type HistoryEntry,
  type KvEvent,
  type RevisionEvents,
} from "./history.ts";
export {
  DEFAULT_MAX_KEYS_PER_LEASE,
  DEFAULT_MAX_LEASES,
  DEFAULT_MAX_SESSION_BYTES,
  DEFAULT_MAX_SESSION_BYTES_PER_SUBJECT,
  DEFAULT_MAX_SESSIONS_PER_SUBJECT,
  DEFAULT_QUOTA_BYTES,
  DEFAULT_SESSION_TTL_MS,
  type KvEntry,
  type KvListItem,
  KvStateMachine,
  type KvStateMachineOptions,
  type LeaseEvent,
  type LeaseInfo,
  type ListOptions,
  MAX_CLOCK_SOURCES,
  MAX_CLOCK_STEP_MS,
  SESSION_OVERHEAD_BYTES,
} from "./state_machine.ts";
