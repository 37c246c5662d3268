/**
 * Which server a call goes to, as mökv's picker decides it: writes to the leader, reads
 * round-robin over the followers (the leader when there are none), never a node that failed
 * within the last `downMs` while another one is usable. Pure: time is passed in.
 */

/** One server as the client knows it. */
export interface KnownServer {
  readonly id: string;
  readonly addr: string;
  readonly isLeader: boolean;
  readonly isVoter: boolean;
}

/** What a call needs: the leader (writes, admin) or any follower (reads). */
export type Route = "leader" | "follower";

/** The routing table: the servers, the leader, and nodes to avoid for a while. */
export class Picker {
  #servers: KnownServer[] = [];
  #leaderAddr: string | undefined;
  #downUntilMs = new Map<string, number>();
  #next = 0;

  constructor(
    /** Addresses to use before anything is known. */
    readonly seeds: readonly string[],
    /** How long a failed node is avoided. */
    readonly downMs: number,
  ) {}

  /** Replaces the server list (from GetServers); the leader is the one flagged, if any. */
  setServers(servers: readonly KnownServer[]): void {
    if (servers.length === 0) return;
    this.#servers = [...servers];
    const leader = servers.find((s) => s.isLeader);
    this.#leaderAddr = leader?.addr;
  }

  /** The servers last learned (empty before the first GetServers answer). */
  get servers(): readonly KnownServer[] {
    return this.#servers;
  }

  /** The leader's address, if known. */
  get leaderAddr(): string | undefined {
    return this.#leaderAddr;
  }

  /** Follows a leader hint (UNAVAILABLE trailers). */
  setLeader(addr: string): void {
    this.#leaderAddr = addr;
  }

  /** Whether `addr` failed within `downMs` before `nowMs`. */
  isDown(addr: string, nowMs: number): boolean {
    return (this.#downUntilMs.get(addr) ?? 0) > nowMs;
  }

  /** Records that `addr` failed at `nowMs`: it is avoided until `nowMs + downMs`. */
  markDown(addr: string, nowMs: number): void {
    this.#downUntilMs.set(addr, nowMs + this.downMs);
    if (this.#leaderAddr === addr) this.#leaderAddr = undefined;
  }

  /** Every address worth trying: the learned servers, else the seeds. */
  addrs(): string[] {
    return this.#servers.length > 0 ? this.#servers.map((s) => s.addr) : [...this.seeds];
  }

  /** Addresses that are not avoided at `nowMs` (all of them when every one is avoided). */
  usable(nowMs: number): string[] {
    const all = this.addrs();
    const up = all.filter((a) => !this.isDown(a, nowMs));
    return up.length > 0 ? up : all;
  }

  /**
   * The address for the next call of kind `route` at `nowMs`. Leader calls go to the known
   * leader unless it is avoided, else round-robin over usable nodes (any node forwards or
   * answers with a leader hint). Follower calls go round-robin over usable non-leader voters,
   * then over usable nodes.
   */
  pick(route: Route, nowMs: number): string {
    const isUp = (a: string) => !this.isDown(a, nowMs);
    switch (route) {
      case "leader": {
        if (this.#leaderAddr !== undefined && isUp(this.#leaderAddr)) return this.#leaderAddr;
        return this.#roundRobin(this.usable(nowMs));
      }
      case "follower": {
        const followers = this.#servers.filter((s) =>
          !s.isLeader && s.isVoter && s.addr !== this.#leaderAddr && isUp(s.addr)
        );
        if (followers.length > 0) return this.#roundRobin(followers.map((s) => s.addr));
        if (this.#leaderAddr !== undefined && isUp(this.#leaderAddr)) return this.#leaderAddr;
        return this.#roundRobin(this.usable(nowMs));
      }
      default: {
        const never: never = route;
        throw new Error(`unknown route ${never}`);
      }
    }
  }

  #roundRobin(addrs: readonly string[]): string {
    const addr = addrs[this.#next % addrs.length];
    this.#next = (this.#next + 1) % 1_000_000_007;
    return addr;
  }
}
