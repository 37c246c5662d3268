/**
 * In-process fake clusters for client tests: N real gRPC servers on 127.0.0.1 (plaintext or
 * mutual TLS) over one shared state machine. One node is the "leader": the others answer
 * writes with NOT_LEADER (UNAVAILABLE + leader hint), as a node that does not forward would.
 * Faults are injected per node: fail the next N calls, or apply a write and then lose the
 * answer.
 */
import type * as grpc from "@grpc/grpc-js";
import { NotLeaderError, UnavailableError } from "../../src/errors.ts";
import { type Command, type CommandResult, KvStateMachine } from "../../src/kv/mod.ts";
import {
  type AuthorizeFn,
  createGrpcServer,
  type KvBackend,
  type KvReader,
  LocalBackend,
  type MemberInfo,
  type ReadConsistency,
  type ServerInfo,
  type TlsMaterial,
} from "../../src/server/mod.ts";
import { type GuardedPort, serveGuarded } from "../helpers/guarded_port.ts";

/** Shared by every node of a fake cluster. */
export interface FakeView {
  leaderId: string;
  /** Whether GetServers flags the leader (false: the cluster "does not know" yet). */
  reportLeader: boolean;
  readonly nodes: FakeNode[];
}

/** One node: its server, counters and fault switches. */
export interface FakeNode {
  readonly id: string;
  addr: string;
  readonly backend: FakeBackend;
  server: grpc.Server;
  /** The node's shared port (with mokv's HTTP/2 guard, see guarded_port.ts). */
  port: GuardedPort;
  stopped: boolean;
}

/** A KvBackend that knows whether it leads, counts what it serves and fails on demand. */
export class FakeBackend implements KvBackend {
  /** Commands applied here (only the leader applies). */
  readonly applied: Command[] = [];
  /** Read barriers passed here. */
  reads = 0;
  /** Fail this many next apply/readBarrier calls with UNAVAILABLE (no hint). */
  failNext = 0;
  /** Apply this many next writes and then answer UNAVAILABLE, as if the answer were lost. */
  loseAnswers = 0;
  readonly #local: LocalBackend;

  constructor(readonly nodeId: string, readonly view: FakeView, sm: KvStateMachine) {
    this.#local = new LocalBackend({ nodeId, stateMachine: sm });
  }

  get reader(): KvReader {
    return this.#local.reader;
  }

  #leaderAddr(): string {
    return this.view.nodes.find((n) => n.id === this.view.leaderId)?.addr ?? "";
  }

  async apply(cmd: Command): Promise<CommandResult> {
    if (this.failNext > 0) {
      this.failNext--;
      throw new UnavailableError("injected failure");
    }
    if (this.view.leaderId !== this.nodeId) {
      throw new NotLeaderError(this.view.leaderId, this.#leaderAddr());
    }
    this.applied.push(cmd);
    const result = await this.#local.apply(cmd);
    if (this.loseAnswers > 0) {
      this.loseAnswers--;
      throw new UnavailableError("answer lost (injected)");
    }
    return result;
  }

  readBarrier(consistency: ReadConsistency): Promise<void> {
    if (this.failNext > 0) {
      this.failNext--;
      return Promise.reject(new UnavailableError("injected failure"));
    }
    this.reads++;
    return this.#local.readBarrier(consistency);
  }

  servers(): Promise<ServerInfo[]> {
    return Promise.resolve(this.view.nodes.map((n) => ({
      id: n.id,
      rpcAddr: n.addr,
      isLeader: this.view.reportLeader && n.id === this.view.leaderId,
      isVoter: true,
    })));
  }

  members(): MemberInfo[] {
    return this.view.nodes.map((n) => ({
      name: n.id,
      gossipAddr: "",
      rpcAddr: n.addr,
      state: n.stopped ? "failed" : "alive",
    }));
  }

  removeServer(id: string): Promise<void> {
    return this.#local.removeServer(id);
  }

  transferLeadership(id?: string): Promise<string> {
    if (this.view.leaderId !== this.nodeId) {
      return Promise.reject(new NotLeaderError(this.view.leaderId, this.#leaderAddr()));
    }
    const target = id ?? this.view.nodes.find((n) => n.id !== this.nodeId)!.id;
    this.view.leaderId = target;
    return Promise.resolve(target);
  }

  leave(): Promise<void> {
    return this.#local.leave();
  }

  snapshot(): Promise<Uint8Array> {
    return this.#local.snapshot();
  }

  isHealthy(): boolean {
    return this.#local.isHealthy();
  }
}

/** Server-side TLS material (paths) for a fake cluster with mutual TLS. */
export interface FakeTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  readonly authorize?: AuthorizeFn;
}

/** A running fake cluster. */
export interface FakeCluster {
  readonly view: FakeView;
  readonly nodes: FakeNode[];
  readonly addrs: string[];
  readonly stateMachine: KvStateMachine;
  node(id: string): FakeNode;
  /** Shuts one node's server down at once (calls in flight fail). */
  stopNode(id: string): void;
  close(): void;
}

/** Starts `size` nodes (n1..nN); n1 leads. */
export async function startFakeCluster(
  size = 3,
  options: { tls?: FakeTls } = {},
): Promise<FakeCluster> {
  const sm = new KvStateMachine();
  const view: FakeView = { leaderId: "n1", reportLeader: true, nodes: [] };
  let tls: TlsMaterial | undefined;
  if (options.tls) {
    const read = (p: string) => Deno.readTextFileSync(p);
    tls = { ca: read(options.tls.ca), cert: read(options.tls.cert), key: read(options.tls.key) };
  }
  for (let i = 1; i <= size; i++) {
    const id = `n${i}`;
    const backend = new FakeBackend(id, view, sm);
    const server = createGrpcServer({
      backend,
      ...(options.tls?.authorize ? { authorize: options.tls.authorize } : {}),
    });
    const port = await serveGuarded(server, tls);
    view.nodes.push({ id, addr: port.addr, backend, server, port, stopped: false });
  }
  const node = (id: string) => view.nodes.find((n) => n.id === id)!;
  return {
    view,
    nodes: view.nodes,
    addrs: view.nodes.map((n) => n.addr),
    stateMachine: sm,
    node,
    stopNode: (id) => {
      const n = node(id);
      n.stopped = true;
      void n.port.close();
    },
    close: () => {
      for (const n of view.nodes) void n.port.close();
    },
  };
}
