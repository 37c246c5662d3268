/**
 * One server's connection: a single grpc-js channel shared by the api.KV, api.Admin,
 * grpc.health.v1.Health and etcd KV/Watch/Lease clients, and counters of what the server answered.
 */
import type * as grpc from "@grpc/grpc-js";
import {
  AdminClient,
  EtcdKvClient,
  EtcdLeaseClient,
  EtcdWatchClient,
  HealthClient,
  KvClient,
} from "../api/mod.ts";

/** What a call was, for the per-node counters. */
export type CallKind = "read" | "write" | "admin";

/** Requests one server answered, and attempts that failed on it. */
export interface NodeStats {
  readonly addr: string;
  /** Successful reads (Get, List). */
  readonly reads: number;
  /** Successful writes (Set, Delete, Append, CompareAndSet). */
  readonly writes: number;
  /** Successful other calls (GetServers, Admin, Health). */
  readonly admin: number;
  /** Attempts that failed with a retryable error. */
  readonly failures: number;
}

/** Channel options: reconnect quickly after a node restarts (grpc-js waits up to 2 min by default). */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.min_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 1000,
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
};

/** The typed clients of one server over one channel, and its counters. */
export class NodeConnection {
  readonly kv: InstanceType<typeof KvClient>;
  readonly admin: InstanceType<typeof AdminClient>;
  readonly health: InstanceType<typeof HealthClient>;
  /** etcd's KV, Watch and Lease services on the same channel. */
  readonly etcdKv: InstanceType<typeof EtcdKvClient>;
  readonly etcdWatch: InstanceType<typeof EtcdWatchClient>;
  readonly etcdLease: InstanceType<typeof EtcdLeaseClient>;
  #reads = 0;
  #writes = 0;
  #admin = 0;
  #failures = 0;
  #inflight = 0;
  #closing = false;

  constructor(
    readonly addr: string,
    credentials: grpc.ChannelCredentials,
    extraOptions: grpc.ChannelOptions = {},
  ) {
    const options = { ...CHANNEL_OPTIONS, ...extraOptions };
    this.kv = new KvClient(addr, credentials, options);
    const shared = { ...options, channelOverride: this.kv.getChannel() };
    this.admin = new AdminClient(addr, credentials, shared);
    this.health = new HealthClient(addr, credentials, shared);
    this.etcdKv = new EtcdKvClient(addr, credentials, shared);
    this.etcdWatch = new EtcdWatchClient(addr, credentials, shared);
    this.etcdLease = new EtcdLeaseClient(addr, credentials, shared);
  }

  /** Counts one successful call of `kind`. */
  count(kind: CallKind): void {
    switch (kind) {
      case "read":
        this.#reads++;
        return;
      case "write":
        this.#writes++;
        return;
      case "admin":
        this.#admin++;
        return;
      default: {
        const never: never = kind;
        throw new Error(`unknown call kind ${never}`);
      }
    }
  }

  /** Counts one failed attempt. */
  countFailure(): void {
    this.#failures++;
  }

  /** A copy of the counters. */
  stats(): NodeStats {
    return {
      addr: this.addr,
      reads: this.#reads,
      writes: this.#writes,
      admin: this.#admin,
      failures: this.#failures,
    };
  }

  /** Counts `call` as in flight until it settles, so close() waits for it. */
  async track<T>(call: Promise<T>): Promise<T> {
    this.#inflight++;
    try {
      return await call;
    } finally {
      this.#inflight--;
      if (this.#closing && this.#inflight === 0) this.kv.close();
    }
  }

  /**
   * Closes the channel once no tracked call is in flight. (Closing a grpc-js channel under a
   * pending call can spin Deno's event loop, so it is never done.)
   */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#inflight === 0) this.kv.close();
  }
}
