/**
 * The leader's view of one follower's replication (etcd-io/raft's tracker/progress.go):
 * probe (one append at a time until the match point is found), replicate (pipelined, up to
 * `maxInflight` unacknowledged appends), snapshot (waiting for a snapshot transfer to finish).
 */

/** Replication state of a follower. */
export type ProgressState = "probe" | "replicate" | "snapshot";

/** Tracks one follower on the leader. */
export class Progress {
  /** Highest index known replicated on the follower. */
  match = 0;
  /** Next index to send. */
  next: number;
  state: ProgressState = "probe";
  /** In probe state: an append is out and we wait for its answer (or a heartbeat answer). */
  probeSent = false;
  /** Heartbeat answers since `match` last moved (replicate state): lost appends show here. */
  stalledHeartbeats = 0;
  /** Heard from the follower since the last check-quorum round. */
  recentActive = false;
  /** Last index of each in-flight append, oldest first; bounded by maxInflight. */
  private inflights: number[] = [];
  /** Snapshot transfer: index being sent, bytes acknowledged, ticks since the last ack. */
  snapshotIndex = 0;
  snapshotOffset = 0;
  snapshotIdleTicks = 0;

  constructor(next: number, private readonly maxInflight: number) {
    this.next = next;
  }

  /** Should the leader hold further appends back? */
  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.length >= this.maxInflight;
      case "snapshot":
        return true;
      default: {
        const never: never = this.state;
        return never;
      }
    }
  }

  becomeProbe(): void {
    if (this.state === "snapshot") {
      this.next = Math.max(this.match + 1, this.snapshotIndex + 1);
    } else {
      this.next = this.match + 1;
    }
    this.reset("probe");
  }

  becomeReplicate(): void {
    this.next = this.match + 1;
    this.reset("replicate");
  }

  becomeSnapshot(index: number): void {
    this.reset("snapshot");
    this.snapshotIndex = index;
    this.snapshotOffset = 0;
    this.snapshotIdleTicks = 0;
  }

  private reset(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.stalledHeartbeats = 0;
    this.inflights = [];
    this.snapshotIndex = 0;
  }

  /** Records that entries up to `lastIndex` were sent. */
  sentEntries(lastIndex: number, count: number): void {
    if (this.state === "replicate") {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.push(lastIndex);
      }
    } else if (this.state === "probe") {
      this.probeSent = true;
    }
  }

  /** An acknowledgement up to `index`; returns whether it moved the match point. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (index > this.match) {
      this.match = index;
      this.stalledHeartbeats = 0;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    let freed = 0;
    while (freed < this.inflights.length && this.inflights[freed] <= index) freed++;
    if (freed > 0) this.inflights.splice(0, freed);
    return updated;
  }

  /**
   * A rejection of the append whose prev was `rejected`; moves `next` back to `hint`.
   * Returns false when the rejection is stale (answers an append already superseded).
   */
  maybeDecrTo(rejected: number, hint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = Math.max(this.match + 1, Math.min(rejected, hint + 1));
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(1, this.match + 1, Math.min(rejected, hint + 1));
    this.probeSent = false;
    return true;
  }

  inflightCount(): number {
    return this.inflights.length;
  }
}
