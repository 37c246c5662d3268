/**
 * The deterministic simulator and its test harness: the whole-run simulation of real
 * replication hosts over a virtual clock, network and disk (host_sim.ts), the safety checkers
 * and the KV model, and a hand-driven cluster of the same real hosts for scenario tests.
 */
export { assert, assertEquals, assertRejects, assertThrows } from "../../helpers/assert.ts";
export { InvariantViolation, SafetyChecker, type ServedRead } from "./checker.ts";
export {
  Cluster,
  type ClusterOptions,
  type MessageFilter,
  type Outcome,
  type Read,
  TICK_MS,
  type Write,
} from "./cluster.ts";
export { ManualClock } from "./manual_clock.ts";
export { Disk, type LogView, PersistenceContractError } from "./disk.ts";
export { decodeOp, encodeOp, fingerprint, type KvOp, opOf } from "./kv_state_machine.ts";
export { CALM, type LinkFaults, SimNetwork, SimTransport } from "./sim_transport.ts";
export { KvModel } from "./kv_model.ts";
export { NodeClock, Scheduler } from "./scheduler.ts";
export { SimDisk, SimKvFile } from "./sim_kv.ts";
export {
  DEFAULT_LIVENESS_TICKS,
  DEFAULT_STEPS,
  replayCommand,
  runSimulation,
  type SimOptions,
  type SimReport,
  SimulationFailure,
} from "./host_sim.ts";
