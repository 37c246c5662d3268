/**
 * Tunables of the SWIM core, all in ticks (one tick is `tickMs` of the host, 100 ms by
 * default). Defaults follow HashiCorp memberlist's LAN profile and Serf's reconnect logic.
 */
import { ConfigError } from "../errors.ts";
import { ENCRYPTION_OVERHEAD_BYTES, MAX_DATAGRAM_BYTES } from "./codec.ts";

/** Every tunable of the SWIM core. */
export interface SwimConfig {
  /** Ticks between two probes of this node (memberlist ProbeInterval, 1 s). */
  readonly probePeriodTicks: number;
  /** Ticks to wait for a direct ack before asking others (ProbeTimeout, 500 ms). */
  readonly probeTimeoutTicks: number;
  /** Members asked to probe indirectly after a direct probe timed out (IndirectChecks). */
  readonly indirectChecks: number;
  /**
   * Suspicion lasts `suspicionMult * max(1, log10(n)) * probePeriodTicks` ticks (n: members
   * not failed or left) before the suspect is declared failed; big clusters wait longer
   * because refutations take longer to spread.
   */
  readonly suspicionMult: number;
  /** An update is sent at most `retransmitMult * ceil(log2(n + 1))` times. */
  readonly retransmitMult: number;
  /** Ticks between gossip rounds that push pending updates to a few members. */
  readonly gossipIntervalTicks: number;
  /** Members each gossip round sends to. */
  readonly gossipNodes: number;
  /** Failed members still receive gossip this long, so a healed partition hears refutations. */
  readonly gossipToTheDeadTicks: number;
  /** Ticks between full-state push/pull exchanges with a random member (anti-entropy). */
  readonly pushPullIntervalTicks: number;
  /** Ticks between attempts to reach a random failed member again (Serf reconnect). */
  readonly reconnectIntervalTicks: number;
  /** First wait before a join attempt is retried; doubles up to `maxJoinRetryTicks`. */
  readonly joinRetryTicks: number;
  /** Longest wait between two join attempts. */
  readonly maxJoinRetryTicks: number;
  /** Failed and left members are forgotten this many ticks after their last change. */
  readonly reapTicks: number;
  /** Largest plaintext datagram the core produces; the host adds encryption on top. */
  readonly maxPayloadBytes: number;
  /** Members a leave is sent to directly, beyond the usual gossip. */
  readonly leaveFanout: number;
  /**
   * Most members (this node included) the table holds (`gossip-max-members`). A new member
   * beyond it takes the place of the failed or left member that changed longest ago, or is
   * ignored and counted when there is none: a flood of made-up members cannot grow memory.
   */
  readonly maxMembers: number;
}

/** Defaults, in ticks of 100 ms. */
export const DEFAULT_SWIM_CONFIG: SwimConfig = Object.freeze({
  probePeriodTicks: 10,
  probeTimeoutTicks: 5,
  indirectChecks: 3,
  suspicionMult: 4,
  retransmitMult: 4,
  gossipIntervalTicks: 2,
  gossipNodes: 3,
  gossipToTheDeadTicks: 300,
  pushPullIntervalTicks: 300,
  reconnectIntervalTicks: 300,
  joinRetryTicks: 10,
  maxJoinRetryTicks: 300,
  reapTicks: 864_000,
  maxPayloadBytes: MAX_DATAGRAM_BYTES - ENCRYPTION_OVERHEAD_BYTES - 21,
  leaveFanout: 16,
  maxMembers: 1024,
});

/**
 * Merges `overrides` (undefined fields keep their default) onto the defaults and validates the result; throws {@link ConfigError}
 * naming the first bad field.
 */
export function swimConfig(overrides: Partial<SwimConfig> = {}): SwimConfig {
  const set = Object.entries(overrides).filter(([, v]) => v !== undefined);
  const c: SwimConfig = { ...DEFAULT_SWIM_CONFIG, ...Object.fromEntries(set) };
  const positive: (keyof SwimConfig)[] = [
    "probePeriodTicks",
    "probeTimeoutTicks",
    "suspicionMult",
    "retransmitMult",
    "gossipIntervalTicks",
    "pushPullIntervalTicks",
    "reconnectIntervalTicks",
    "joinRetryTicks",
    "maxJoinRetryTicks",
    "reapTicks",
    "maxMembers",
  ];
  for (const k of positive) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) {
      throw new ConfigError(k, `must be a positive integer, got ${c[k]}`);
    }
  }
  for (
    const k of ["indirectChecks", "gossipNodes", "gossipToTheDeadTicks", "leaveFanout"] as const
  ) {
    if (!Number.isInteger(c[k]) || c[k] < 0) {
      throw new ConfigError(k, `must be a non-negative integer, got ${c[k]}`);
    }
  }
  if (c.probeTimeoutTicks >= c.probePeriodTicks) {
    throw new ConfigError("probeTimeoutTicks", "must be shorter than probePeriodTicks");
  }
  if (c.maxJoinRetryTicks < c.joinRetryTicks) {
    throw new ConfigError("maxJoinRetryTicks", "must be at least joinRetryTicks");
  }
  if (
    !Number.isInteger(c.maxPayloadBytes) || c.maxPayloadBytes < 1100 ||
    c.maxPayloadBytes > MAX_DATAGRAM_BYTES - ENCRYPTION_OVERHEAD_BYTES
  ) {
    throw new ConfigError(
      "maxPayloadBytes",
      `must be in [1100, ${MAX_DATAGRAM_BYTES - ENCRYPTION_OVERHEAD_BYTES}]`,
    );
  }
  return c;
}
