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
  decodeCommand,
  type DeleteCommand,
  encodeCommand,
  type SetCommand,
  validateCommand,
} from "./commands.ts";
export { compareKeys } from "./key_order.ts";
export {
  DEFAULT_MAX_SESSIONS,
  DEFAULT_SESSION_TTL_MS,
  type KvEntry,
  type KvListItem,
  KvStateMachine,
  type KvStateMachineOptions,
  type ListOptions,
} from "./state_machine.ts";
