/**
 * The deterministic Raft simulator and its test harness: a seeded network, simulated hosts
 * with disks and a KV state machine, the safety checkers, a manually driven cluster for
 * scenario tests, and the whole-run simulation.
 */
export { assert, assertEquals, assertThrows } from "../../helpers/assert.ts";
export { InvariantViolation, SafetyChecker, type ServedRead } from "./checker.ts";
export { Cluster, type ClusterOptions, type MessageFilter } from "./cluster.ts";
export { Disk, type LogView, PersistenceContractError } from "./disk.ts";
export {
  decodeOp,
  encodeOp,
  fingerprint,
  type KvOp,
  KvStateMachine,
  opOf,
} from "./kv_state_machine.ts";
export { type NetworkFaults, NO_FAULTS, SimNetwork } from "./network.ts";
export {
  type ClientOutcomes,
  type CompletedRead,
  SimNode,
  type SimRaftOptions,
} from "./sim_node.ts";
export {
  DEFAULT_LIVENESS_TICKS,
  DEFAULT_STEPS,
  replayCommand,
  runSimulation,
  type SimOptions,
  type SimReport,
  SimulationFailure,
} from "./simulation.ts";
