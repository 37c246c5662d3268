/**
 * Gossip membership (SWIM, as HashiCorp memberlist/Serf run it): the pure core, its wire codec,
 * the keyring and the UDP host.
 */
export type {
  Ack,
  Addr,
  AliveUpdate,
  DeadUpdate,
  Gossip,
  Member,
  MemberEvent,
  MemberState,
  Message,
  Outbound,
  Ping,
  PingReq,
  PushPull,
  Ready,
  SuspectUpdate,
  Tags,
  Update,
} from "./types.ts";
export {
  INCARNATION_WINDOW,
  isNewerIncarnation,
  MAX_PENDING_FORWARDS,
  MAX_PENDING_HELLOS,
  MAX_PROVEN_SOURCES,
  Swim,
  type SwimOptions,
  type SwimStats,
} from "./swim.ts";
export { DEFAULT_SWIM_CONFIG, type SwimConfig, swimConfig } from "./config.ts";
export {
  decodeMessage,
  encodedSizeBytes,
  encodeMessage,
  ENCRYPTION_OVERHEAD_BYTES,
  MAX_DATAGRAM_BYTES,
  MAX_MEMBER_BYTES,
  WIRE_VERSION,
} from "./codec.ts";
export {
  formatGossipKey,
  generateGossipKey,
  KEY_BYTES,
  Keyring,
  MAX_REPLAY_CACHE_ENTRIES,
  parseGossipKey,
  REPLAY_WINDOW_MS,
} from "./keyring.ts";
export {
  GossipAuthError,
  GossipDecodeError,
  GossipReplayError,
  MemberTooLargeError,
} from "./errors.ts";
export { formatHostPort, type HostPort, parseHostPort } from "./addr.ts";
export {
  GossipHost,
  type GossipHostOptions,
  type GossipStats,
  type MemberInfo,
} from "./udp_host.ts";
