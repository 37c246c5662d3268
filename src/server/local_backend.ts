/**
 * A single-node {@link KvBackend} without Raft: commands are applied straight to a
 * {@link KvStateMachine} at increasing indexes. For tests and the single-process development
 * mode; it never pretends to be a cluster (one voter, itself, always the leader).
 */
import { InvalidArgumentError, UnavailableError } from "../errors.ts";
import { type Command, type CommandResult, encodeCommand, KvStateMachine } from "../kv/mod.ts";
import type { KvBackend, KvReader, MemberInfo, ReadConsistency, ServerInfo } from "./backend.ts";

/** Settings of a {@link LocalBackend}. */
export interface LocalBackendOptions {
  /** Default "local". */
  readonly nodeId?: string;
  /** Reported by GetServers and Members; default "". */
  readonly rpcAddr?: string;
  /** The state machine to apply to; default a fresh one. */
  readonly stateMachine?: KvStateMachine;
}

/** Single-node backend: every write is "committed" the moment it is applied locally. */
export class LocalBackend implements KvBackend {
  readonly nodeId: string;
  readonly rpcAddr: string;
  readonly stateMachine: KvStateMachine;
  #healthy = true;
  #left = false;

  constructor(options: LocalBackendOptions = {}) {
    this.nodeId = options.nodeId ?? "local";
    this.rpcAddr = options.rpcAddr ?? "";
    this.stateMachine = options.stateMachine ?? new KvStateMachine();
  }

  get reader(): KvReader {
    return this.stateMachine;
  }

  /** Encodes and applies at the next index, exactly as a replica would apply the log entry. */
  apply(cmd: Command): Promise<CommandResult> {
    if (this.#left) return Promise.reject(new UnavailableError("this node has left"));
    let data: Uint8Array;
    try {
      data = encodeCommand(cmd);
    } catch (error) {
      return Promise.reject(error);
    }
    return Promise.resolve(this.stateMachine.apply(this.stateMachine.appliedIndex + 1, data));
  }

  /** Local state is the only state, so every read is linearizable at once. */
  readBarrier(_consistency: ReadConsistency): Promise<void> {
    return this.#left
      ? Promise.reject(new UnavailableError("this node has left"))
      : Promise.resolve();
  }

  servers(): Promise<ServerInfo[]> {
    return Promise.resolve([{
      id: this.nodeId,
      rpcAddr: this.rpcAddr,
      isLeader: true,
      isVoter: true,
    }]);
  }

  members(): MemberInfo[] {
    return [{
      name: this.nodeId,
      gossipAddr: "",
      rpcAddr: this.rpcAddr,
      state: this.#left ? "left" : "alive",
    }];
  }

  /** There is no other server to remove, and the only one cannot remove itself. */
  removeServer(id: string): Promise<void> {
    return Promise.reject(
      new InvalidArgumentError(
        id === this.nodeId
          ? "cannot remove the only server of a single-node backend"
          : `unknown server ${id}: this is a single-node backend`,
      ),
    );
  }

  /** Leadership can only stay here: succeeds for no id or this node's id. */
  transferLeadership(id?: string): Promise<string> {
    if (id === undefined || id === "" || id === this.nodeId) return Promise.resolve(this.nodeId);
    return Promise.reject(
      new InvalidArgumentError(`unknown server ${id}: this is a single-node backend`),
    );
  }

  /** Marks the node as gone: it stops serving reads and writes and reports NOT_SERVING. */
  leave(): Promise<void> {
    this.#left = true;
    return Promise.resolve();
  }

  snapshot(): Promise<Uint8Array> {
    return Promise.resolve(this.stateMachine.snapshot());
  }

  isHealthy(): boolean {
    return this.#healthy && !this.#left;
  }

  /** Test and operator hook: force the health status (for example while restoring). */
  setHealthy(healthy: boolean): void {
    this.#healthy = healthy;
  }
}
