/**
 * The data of the SWIM protocol: members, the updates gossiped about them, the datagrams the
 * nodes exchange, and the events the core reports. Everything that crosses the core's
 * boundary is `readonly`.
 */

/** A gossip address, `"host:port"` (IPv6 as `"[::1]:port"`). */
export type Addr = string;

/** String tags a member advertises; mokv sets at least `id` and `rpc_addr`. */
export type Tags = Readonly<Record<string, string>>;

/** A member's state as this node believes it. */
export type MemberState = "alive" | "suspect" | "failed" | "left";

/** One member of the cluster as this node sees it. */
export interface Member {
  /** Unique node name (the node id). */
  readonly name: string;
  /** Gossip address. */
  readonly addr: Addr;
  readonly tags: Tags;
  /** Only the member itself raises it; a higher incarnation supersedes older news about it. */
  readonly incarnation: number;
  readonly state: MemberState;
}

/** News that the member `name` is alive at `incarnation` with this address and tags. */
export interface AliveUpdate {
  readonly kind: "alive";
  readonly name: string;
  readonly addr: Addr;
  readonly incarnation: number;
  readonly tags: Tags;
}

/** News that `from` suspects `name` (at `incarnation`) has failed. */
export interface SuspectUpdate {
  readonly kind: "suspect";
  readonly name: string;
  readonly incarnation: number;
  readonly from: string;
}

/** News that `name` is dead at `incarnation`: failed, or left when `from === name`. */
export interface DeadUpdate {
  readonly kind: "dead";
  readonly name: string;
  readonly incarnation: number;
  readonly from: string;
}

/** A membership update, piggybacked on probes and gossiped. */
export type Update = AliveUpdate | SuspectUpdate | DeadUpdate;

/** A direct probe of `target`; the receiver answers with an `ack` of the same `seq`. */
export interface Ping {
  readonly type: "ping";
  readonly seq: number;
  readonly target: string;
  readonly updates: readonly Update[];
}

/** Asks the receiver to probe `target` at `targetAddr` for the sender and forward the ack. */
export interface PingReq {
  readonly type: "ping-req";
  readonly seq: number;
  readonly target: string;
  readonly targetAddr: Addr;
  readonly updates: readonly Update[];
}

/** The answer to a `ping` (or a forwarded one) with the probe's `seq`. */
export interface Ack {
  readonly type: "ack";
  readonly seq: number;
  readonly updates: readonly Update[];
}

/** Updates only, sent to a few random members every gossip interval. */
export interface Gossip {
  readonly type: "gossip";
  readonly updates: readonly Update[];
}

/**
 * One datagram of a full-state exchange: the sender's view of (part of) the member list.
 * With `needReply` the receiver answers with its own full state.
 */
export interface PushPull {
  readonly type: "push-pull";
  readonly needReply: boolean;
  readonly members: readonly Member[];
}

/** Every datagram of the protocol. */
export type Message = Ping | PingReq | Ack | Gossip | PushPull;

/** A datagram the host must send. */
export interface Outbound {
  readonly to: Addr;
  readonly msg: Message;
}

/** What changed about a member, and the member as it is after the change. */
export interface MemberEvent {
  /**
   * `join`: first seen, or back from failed/left; `update`: address or tags changed;
   * `suspect`/`alive`: suspected, and suspicion refuted; `fail`/`leave`: declared failed, or
   * left on purpose; `reap`: a failed or left member forgotten.
   */
  readonly type: "join" | "update" | "suspect" | "alive" | "fail" | "leave" | "reap";
  readonly member: Member;
}

/** What the host must do after `tick`/`step`/`join`/`leave`/`setTags`, drained by `ready()`. */
export interface Ready {
  readonly messages: readonly Outbound[];
  readonly events: readonly MemberEvent[];
}
