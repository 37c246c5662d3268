/**
 * The mokv node: one process that replicates through Raft (durable in a Deno KV file), finds
 * its peers by gossip, and serves api.KV, health and reflection on one port shared with Raft.
 * `MokvNode.start(config)` brings it up; `shutdown()` is the rolling-restart stop (it stays a
 * member); `leave()` leaves the cluster for good.
 */
import type { Duplex } from "node:stream";
import type * as grpc from "@grpc/grpc-js";
import { ConfigError, InvalidArgumentError, UnavailableError } from "../errors.ts";
import type { NodeConfig } from "../config/mod.ts";
import { type Command, type CommandResult, encodeCommand, KvStateMachine } from "../kv/mod.ts";
import { GossipHost, type MemberEvent } from "../membership/mod.ts";
import {
  decodeResult,
  encodeResult,
  PeerTransport,
  RaftStorage,
  type ReplicationHooks,
  ReplicationHost,
} from "../replication/mod.ts";
import type {
  KvBackend,
  KvReader,
  MemberInfo,
  ReadConsistency,
  ServerInfo,
} from "../server/backend.ts";
import { createGrpcServer } from "../server/grpc_server.ts";
import type { RequestInfo } from "../server/kv_service.ts";
import { dialRaft, listenPort } from "../server/port.ts";
import { Authorizer } from "../server/auth.ts";
import {
  expectedBootstrapConfig,
  nextReconcileAction,
  type ReconcileMember,
  verificationsToStart,
} from "./reconcile.ts";

/** Extra wiring a caller (main, tests) may add; all optional. */
export interface NodeHooks extends ReplicationHooks {
  /** Every KV and Admin RPC, once it has answered. */
  onRequest?(info: RequestInfo): void;
  /** Every gossip membership event. */
  onGossipEvent?(event: MemberEvent): void;
}

/** A running mokv node. */
export class MokvNode implements KvBackend {
  readonly nodeId: string;
  readonly reader: KvReader;
  private reconcileTimer: ReturnType<typeof setInterval> | undefined;
  private bootstrapTimer: ReturnType<typeof setInterval> | undefined;
  private reconciling = false;
  private stateAdvertised = false;
  /** Set once leave() starts: no more gossip tag changes or membership changes from here. */
  private leaving = false;
  private readonly verified = new Set<string>();
  /** Members being checked over the peer transport now (at most MAX_CONCURRENT_VERIFICATIONS). */
  private readonly verifying = new Set<string>();
  /** When a member last failed its check (at most MAX_TRACKED_VERIFY_FAILURES entries). */
  private readonly verifyFailedAt = new Map<string, number>();
  private closed = false;
  private leftListeners: (() => void)[] = [];

  private constructor(
    readonly config: NodeConfig,
    readonly host: ReplicationHost<CommandResult>,
    readonly gossip: GossipHost,
    private readonly fsm: KvStateMachine,
    private readonly storage: RaftStorage,
    private readonly grpcServer: grpc.Server,
    private readonly port: { port: number; close(): Promise<void> },
    readonly authorizer: Authorizer | undefined,
    private readonly hooks: NodeHooks,
  ) {
    this.nodeId = config.nodeName;
    this.reader = fsm;
  }

  /** The RPC port actually bound (useful when configured as 0 in tests). */
  get rpcPort(): number {
    return this.port.port;
  }

  /** Starts every part of a node from a validated configuration. */
  static async start(config: NodeConfig, hooks: NodeHooks = {}): Promise<MokvNode> {
    requireGossipAuth(config);
    const fsm = new KvStateMachine();
    const storage = await RaftStorage.open(`${config.dataDir}/raft.kv`);
    const tls = config.tls.mode === "mutual" ? config.tls : undefined;
    const peerTls = tls
      ? {
        cert: await Deno.readTextFile(tls.peer.certFile),
        key: await Deno.readTextFile(tls.peer.keyFile),
        ca: await Deno.readTextFile(tls.peer.caFile),
      }
      : undefined;
    const rpcAddr = `${config.advertiseAddr}:${config.rpcPort}`;
    // Callbacks below run only once the node exists; they reach it through this reference.
    const ref: { node?: MokvNode } = {};
    let transport: PeerTransport | undefined;
    const host = await ReplicationHost.open({
      nodeId: config.nodeName,
      rpcAddr,
      storage,
      fsm,
      results: { encode: encodeResult, decode: decodeResult },
      transport: (handlers) =>
        transport = new PeerTransport({
          selfId: config.nodeName,
          dial: (addr: string): Promise<Duplex> => {
            const at = addr.lastIndexOf(":");
            return dialRaft({
              host: addr.slice(0, at),
              port: Number(addr.slice(at + 1)),
              tls: peerTls,
            });
          },
          allowedPeerCns: tls ? tls.peerAllowedCns : undefined,
          ...handlers,
        }),
      tickMs: config.raftTickMs,
      electionTicks: config.raftElectionTicks,
      heartbeatTicks: config.raftHeartbeatTicks,
      snapshotEntries: config.snapshotEntries,
      memoryLogEntries: config.memoryLogEntries,
      // Deno KV and the peer transport copy what they keep: snapshot buffers can go at once.
      freeSnapshotBytes: true,
      hooks,
    });
    const authorizer = config.acl
      ? await Authorizer.load(config.acl.modelFile, config.acl.policyFile)
      : undefined;
    // The backend is the node itself; it exists once the server does, so bind lazily.
    const backend: KvBackend = {
      get nodeId() {
        return config.nodeName;
      },
      get reader() {
        return fsm;
      },
      apply: (cmd) => ref.node!.apply(cmd),
      readBarrier: (c) => ref.node!.readBarrier(c),
      servers: () => ref.node!.servers(),
      members: () => ref.node!.members(),
      removeServer: (id) => ref.node!.removeServer(id),
      transferLeadership: (id) => ref.node!.transferLeadership(id),
      leave: () => ref.node!.leaveThenStop(),
      snapshot: () => ref.node!.snapshot(),
      isHealthy: () => ref.node?.isHealthy() ?? false,
    };
    const grpcServer = createGrpcServer({
      backend,
      maxKeyBytes: config.maxKeyBytes,
      maxValueBytes: config.maxValueBytes,
      quotaBytes: config.quotaBytes,
      authorize: authorizer
        ? (subject, object, action) => authorizer.enforce(subject, object, action)
        : undefined,
      onRequest: hooks.onRequest,
      etcd: {
        nodeId: config.nodeName,
        store: fsm,
        scheme: tls ? "https" : "http",
        apply: (cmd) => ref.node!.apply(cmd),
        applyAsLeader: (cmd, term) => host.apply(encodeCommand(cmd), { leaderTerm: term }),
        readBarrier: (c) => ref.node!.readBarrier(c),
        raftStatus: () => {
          const st = host.status();
          return {
            term: st.term,
            leader: st.leader,
            commit: st.commit,
            applied: fsm.appliedIndex,
            isLearner: st.config.learners.includes(config.nodeName),
          };
        },
        servers: () => ref.node!.servers(),
        removeServer: (id) => ref.node!.removeServer(id),
        transferLeadership: (id) => ref.node!.transferLeadership(id),
        snapshot: () => ref.node!.snapshot(),
      },
    });
    const serverTls = tls
      ? {
        cert: await Deno.readTextFile(tls.server.certFile),
        key: await Deno.readTextFile(tls.server.keyFile),
        ca: await Deno.readTextFile(tls.server.caFile),
      }
      : undefined;
    const port = await listenPort({
      host: config.bindAddr.host === "0.0.0.0" ? "0.0.0.0" : config.advertiseAddr,
      port: config.rpcPort,
      grpcServer,
      tls: serverTls,
      maxConnections: config.maxConnections,
      maxPendingHandshakes: config.maxPendingHandshakes,
      onRaftSocket: (socket, peer) => transport!.accept(socket, peer),
    });
    const gossip = await GossipHost.start({
      name: config.nodeName,
      bindAddr: `${config.bindAddr.host}:${config.bindAddr.port}`,
      advertiseAddr: `${config.advertiseAddr}:${config.bindAddr.port}`,
      tags: stateTags(config.nodeName, rpcAddr, host.hasState()),
      seeds: config.startJoinAddrs.map((a) => `${a.host}:${a.port}`),
      keys: config.gossipKeyring.length > 0 ? config.gossipKeyring : undefined,
      tickMs: config.gossipTickMs,
      maxMembers: config.gossipMaxMembers,
      onEvent: (e) => ref.node?.onGossipEvent(e),
    });
    const node = new MokvNode(
      config,
      host,
      gossip,
      fsm,
      storage,
      grpcServer,
      port,
      authorizer,
      hooks,
    );
    ref.node = node;
    for (const m of gossip.members()) if (m.rpcAddr) host.setAddress(m.name, m.rpcAddr);
    host.start();
    if (!host.hasState()) {
      if (config.bootstrap) {
        host.bootstrap({
          voters: [config.nodeName],
          learners: [],
          addresses: { [config.nodeName]: rpcAddr },
        });
      } else if (config.bootstrapExpect > 0) {
        node.waitToBootstrap();
      }
    }
    node.reconcileTimer = setInterval(() => node.reconcile(), 1000);
    return node;
  }

  // ---------------------------------------------------------------------------------------
  // KvBackend

  apply(cmd: Command): Promise<CommandResult> {
    return this.host.apply(encodeCommand(cmd));
  }

  readBarrier(consistency: ReadConsistency): Promise<void> {
    return this.host.readBarrier(consistency);
  }

  /** The Raft voters and learners with their RPC addresses, and who leads. */
  servers(): Promise<ServerInfo[]> {
    const st = this.host.status();
    const out: ServerInfo[] = [];
    for (const id of st.config.voters) {
      out.push({
        id,
        rpcAddr: st.config.addresses[id] ?? "",
        isLeader: id === st.leader,
        isVoter: true,
      });
    }
    for (const id of st.config.learners) {
      out.push({ id, rpcAddr: st.config.addresses[id] ?? "", isLeader: false, isVoter: false });
    }
    return Promise.resolve(out);
  }

  /** This node's gossip view. */
  members(): MemberInfo[] {
    return this.gossip.members().map((m) => ({
      name: m.name,
      gossipAddr: m.addr,
      rpcAddr: m.rpcAddr,
      state: m.state,
    }));
  }

  /** Removes a member from Raft (forwarded to the leader). */
  removeServer(id: string): Promise<void> {
    return this.host.removeServer(id);
  }

  /** Moves leadership to `id`, or to the most caught-up voter; resolves with the new leader. */
  transferLeadership(id?: string): Promise<string> {
    return this.host.transferLeadership(id ?? "");
  }

  snapshot(): Promise<Uint8Array> {
    return this.host.backup();
  }

  isHealthy(): boolean {
    return !this.closed && this.host.isCaughtUp();
  }

  /** Number of keys held. */
  storeKeys(): number {
    return this.fsm.keyCount;
  }

  /** Bytes of keys and values held. */
  storeBytes(): number {
    return this.fsm.byteCount;
  }

  /** True while the data-size quota refuses writes (until a write frees space). */
  quotaAlarm(): boolean {
    return this.fsm.quotaAlarm;
  }

  /** Called once the node has left the cluster for good (after `leave()`). */
  onLeft(listener: () => void): void {
    this.leftListeners.push(listener);
  }

  // ---------------------------------------------------------------------------------------
  // Membership

  private onGossipEvent(e: MemberEvent): void {
    if (e.type === "reap") {
      // Gone from gossip for good: unless still in the Raft configuration, its address and
      // the transport's connection and queue for it go.
      this.host.forgetAddress(e.member.name);
    } else {
      const rpc = e.member.tags["rpc_addr"];
      if (rpc) this.host.setAddress(e.member.name, rpc);
    }
    this.hooks.onGossipEvent?.(e);
    if (e.type === "join" || e.type === "leave" || e.type === "fail" || e.type === "update") {
      queueMicrotask(() => this.reconcile());
    }
  }

  private gossipView(): ReconcileMember[] {
    return this.gossip.members().map((m) => ({
      name: m.name,
      rpcAddr: m.rpcAddr,
      state: m.state,
      hasState: m.tags[RAFT_STATE_TAG] === "1",
    }));
  }

  /** Tells the cluster by gossip that this node holds Raft state (so no one bootstraps anew). */
  private advertiseState(): void {
    if (this.leaving || this.stateAdvertised || !this.host.hasState()) return;
    this.stateAdvertised = true;
    this.gossip.setTags(stateTags(this.nodeId, this.host.rpcAddr, true));
  }

  /** bootstrap-expect: once enough members are seen, every one bootstraps the same config. */
  private waitToBootstrap(): void {
    this.bootstrapTimer = setInterval(() => {
      if (this.closed || this.host.hasState()) {
        clearInterval(this.bootstrapTimer);
        return;
      }
      const config = expectedBootstrapConfig(
        this.nodeId,
        this.gossipView(),
        this.config.bootstrapExpect,
      );
      if (!config) return;
      clearInterval(this.bootstrapTimer);
      try {
        this.host.bootstrap(config);
      } catch (err) {
        // A leader reached us first: we join its cluster instead (never a crash).
        this.hooks.log?.("info", "not bootstrapping: this node already has Raft state", {
          error: String(err),
        });
        return;
      }
      this.advertiseState();
      this.hooks.log?.("info", "bootstrapped", { voters: config.voters });
    }, 200);
  }

  /** Leader only: makes the Raft configuration follow the gossip view, one change at a time. */
  private async reconcile(): Promise<void> {
    if (this.closed || this.leaving || this.reconciling) return;
    this.advertiseState();
    const st = this.host.status();
    if (st.role !== "leader") return;
    this.reconciling = true;
    try {
      const match: Record<string, number> = {};
      const active = new Set<string>();
      for (const [id, p] of Object.entries(st.progress)) {
        match[id] = p.match;
        if (p.active) active.add(id);
      }
      const { action, verify } = nextReconcileAction({
        selfId: this.nodeId,
        config: st.config,
        match,
        commitIndex: st.commit,
        members: this.gossipView(),
        verified: this.verified,
        active,
        deadServerCleanup: this.config.deadServerCleanup,
        deadServerMinQuorum: this.config.deadServerMinQuorum,
      });
      this.startVerifications(verify);
      if (!action) return;
      this.hooks.log?.("info", "membership change", { ...action });
      switch (action.type) {
        case "addLearner":
          await this.host.changeConfig({
            type: "addLearner",
            id: action.id,
            address: action.address,
          });
          break;
        case "promote":
          await this.host.changeConfig({ type: "promote", id: action.id });
          break;
        case "remove":
          this.verified.delete(action.id);
          await this.host.changeConfig({ type: "remove", id: action.id });
          break;
        default: {
          const never: never = action;
          throw new Error(`unknown action ${JSON.stringify(never)}`);
        }
      }
      queueMicrotask(() => this.reconcile());
    } catch (err) {
      this.hooks.log?.("debug", "reconcile step deferred", { error: String(err) });
    } finally {
      this.reconciling = false;
    }
  }

  /**
   * Checks new members over the peer transport in the background, at most
   * {@link MAX_CONCURRENT_VERIFICATIONS} at once, each bounded by {@link VERIFY_TIMEOUT_MS};
   * a member that failed is not tried again for {@link VERIFY_RETRY_MS}. So fake members
   * gossip made up cost a bounded number of dials and never hold up a real change.
   */
  private startVerifications(ids: readonly string[]): void {
    const now = Date.now();
    for (const [id, at] of this.verifyFailedAt) {
      if (now - at >= VERIFY_RETRY_MS) this.verifyFailedAt.delete(id);
    }
    const start = verificationsToStart({
      candidates: ids,
      inFlight: this.verifying,
      failedAtMs: this.verifyFailedAt,
      nowMs: now,
      maxConcurrent: MAX_CONCURRENT_VERIFICATIONS,
      retryMs: VERIFY_RETRY_MS,
    });
    for (const id of start) {
      const addr = this.gossip.members().find((m) => m.name === id)?.rpcAddr;
      if (!addr) continue;
      this.verifying.add(id);
      void this.verifyMember(id, addr).finally(() => {
        this.verifying.delete(id);
        if (!this.closed) queueMicrotask(() => this.reconcile());
      });
    }
  }

  private async verifyMember(id: string, addr: string): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("timed out")), VERIFY_TIMEOUT_MS);
    });
    try {
      const answered = await Promise.race([this.host.ping(addr), timeout]);
      if (answered === id) {
        this.verified.add(id);
        return;
      }
      this.hooks.log?.("warn", "member answered with another id", { id, answered });
    } catch (err) {
      this.hooks.log?.("warn", "cannot reach new member over the peer transport", {
        id,
        addr,
        error: String(err),
      });
    } finally {
      clearTimeout(timer);
    }
    if (this.verifyFailedAt.size < MAX_TRACKED_VERIFY_FAILURES) {
      this.verifyFailedAt.set(id, Date.now());
    }
  }

  // ---------------------------------------------------------------------------------------
  // Stopping

  /**
   * Leaves the cluster for good: hands off leadership, asks the leader to remove this node
   * from Raft (waiting for the commit), announces the leave by gossip, then shuts down.
   */
  async leave(): Promise<void> {
    if (this.closed) return;
    await this.leaveCluster();
    await this.stopAfterLeaving();
  }

  /**
   * Admin.Leave: leaves the cluster, answers, and only then shuts down (shortly after), so
   * the caller gets its answer instead of a cancelled call.
   */
  async leaveThenStop(): Promise<void> {
    if (this.closed) return;
    await this.leaveCluster();
    setTimeout(() => void this.stopAfterLeaving(), 300);
  }

  private async stopAfterLeaving(): Promise<void> {
    await this.shutdown({ transfer: false });
    for (const l of this.leftListeners) l();
  }

  private async leaveCluster(): Promise<void> {
    this.leaving = true;
    const st = this.host.status();
    if (st.role === "leader" && st.config.voters.length > 1) {
      await this.host.transferLeadership("").catch(() => undefined);
    }
    const cfg = this.host.status().config;
    const lastVoter = cfg.voters.length === 1 && cfg.voters[0] === this.nodeId;
    // Gossip first: once the others see us as "left", the leader's reconciler never adds us
    // back, whatever the order in which the removal below and its own removal land.
    await this.gossip.leave();
    if (lastVoter) return;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await this.host.removeServer(this.nodeId);
        return;
      } catch (err) {
        // "not a member": an operator (or a retry of ours) removed us first.
        if (err instanceof InvalidArgumentError) return;
        if (Date.now() > deadline) {
          throw new UnavailableError(`could not leave the Raft configuration: ${err}`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /**
   * Stops the node without leaving (a restart): stops accepting requests, hands off
   * leadership if it leads, finishes the batch in flight, closes the Deno KV file.
   */
  async shutdown(opts: { transfer?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    if (opts.transfer !== false) {
      const st = this.host.status();
      if (st.role === "leader" && st.config.voters.length > 1) {
        await Promise.race([
          this.host.transferLeadership("").catch(() => undefined),
          new Promise((r) => setTimeout(r, 2000)),
        ]);
      }
    }
    this.closed = true;
    clearInterval(this.reconcileTimer);
    clearInterval(this.bootstrapTimer);
    // Close the sockets before the gRPC server: its shutdown sends GOAWAY, and a GOAWAY can
    // crash the HTTP/2 client of a Deno 2.9.6 process (denoland/deno#36788). Clients see a
    // closed connection instead and retry elsewhere.
    await this.port.close();
    this.grpcServer.forceShutdown();
    await this.host.close();
    await this.gossip.close();
    this.storage.close();
  }
}

/**
 * Refuses a configuration that runs TLS with unauthenticated gossip unless `gossip-insecure`
 * says so: without a key, anyone who can send UDP to `bind-addr` can make up members, mark real
 * ones failed or left and steer `bootstrap-expect`. Throws {@link ConfigError} naming
 * `gossip-key`.
 */
export function requireGossipAuth(config: NodeConfig): void {
  if (config.tls.mode !== "mutual" || config.gossipKeyring.length > 0 || config.gossipInsecure) {
    return;
  }
  throw new ConfigError(
    "gossip-key",
    "required with TLS (or gossip-key-file; `deno task gencert` writes one): without it anyone who can reach bind-addr can forge gossip; set gossip-insecure: true to run without",
  );
}

/** Members the leader checks over the peer transport at the same time. */
export const MAX_CONCURRENT_VERIFICATIONS = 4;
/** Longest one reachability check of a new member may take, in ms. */
export const VERIFY_TIMEOUT_MS = 2000;
/** A member that failed its check is not tried again for this long, in ms. */
export const VERIFY_RETRY_MS = 10_000;
/** Bound of the table of recent check failures (one entry per member at most). */
export const MAX_TRACKED_VERIFY_FAILURES = 4096;

/** Gossip tag set once a node holds Raft state; bootstrap-expect never bootstraps beside one. */
export const RAFT_STATE_TAG = "raft_state";

function stateTags(id: string, rpcAddr: string, hasState: boolean): Record<string, string> {
  return hasState ? { id, rpc_addr: rpcAddr, [RAFT_STATE_TAG]: "1" } : { id, rpc_addr: rpcAddr };
}
