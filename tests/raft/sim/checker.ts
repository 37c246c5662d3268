/**
 * Safety checkers for a Raft history, fed incrementally by the simulator (or by hand in unit
 * tests) and throwing {@link InvariantViolation} the moment a property breaks:
 *
 * 1. election safety: at most one leader per term, over the whole run;
 * 2. log matching (same index and term ⇒ same entry and same prefix) and leader completeness
 *    (an entry known committed is in the log of every leader of a later term);
 * 3. state machine safety: the applied sequences of all nodes are prefixes of one sequence,
 *    and a restored snapshot equals the state of that sequence's prefix;
 * 4. durability of acknowledged writes;
 * 5. linearizable reads;
 * 6. durable terms: a node never forgets a term it has spoken in.
 *
 * What entries mean is pluggable ({@link EntryModel}): by default they carry the scenario
 * harness's JSON writes; the host simulator plugs in a model of the real KV commands.
 */
import type { Entry, NodeId } from "../../../src/raft/types.ts";
import type { LogView } from "./disk.ts";
import { fingerprint, type KvOp, opOf } from "./kv_state_machine.ts";

/** A safety property was violated; the message names the property and the evidence. */
export class InvariantViolation extends Error {
  constructor(readonly property: string, detail: string) {
    super(`${property}: ${detail}`);
    this.name = "InvariantViolation";
  }
}

/** What the payload of normal entries means, for the state checks. */
export interface EntryModel {
  /** A lossless text of a normal entry's payload (part of its fingerprint). */
  describe(entry: Entry): string;
  /** The common applied sequence grew by `entry`. */
  applied(entry: Entry): void;
  /** The value of `key` after the common sequence up to `index` (undefined: absent). */
  valueAt(key: string, index: number): string | undefined;
  /** Every key ever written. */
  keys(): Iterable<string>;
}

interface LogSlot {
  readonly fingerprint: string;
  readonly prevTerm: number;
  readonly node: NodeId;
}

interface CommonSlot {
  readonly fingerprint: string;
  readonly term: number;
  readonly op: KvOp | undefined;
}

interface ActiveLeader {
  readonly term: number;
  readonly log: LogView;
}

/** A completed read as the client saw it. */
export interface ServedRead {
  readonly readId: number;
  readonly node: NodeId;
  /** The ReadState's index: the state the read had to wait for. */
  readonly readIndex: number;
  /** The node's applied index when the read was served (>= readIndex). */
  readonly appliedIndex: number;
  readonly key: string;
  readonly value: string | undefined;
}

/** Incremental checker of Raft's safety properties over one run. */
export class SafetyChecker {
  /** term → the leader of that term. */
  readonly leaders = new Map<number, NodeId>();
  /** `${index}/${term}` → the entry any node ever stored there. */
  #slots = new Map<string, LogSlot>();
  /** index → the entry known committed there. */
  #committed = new Map<number, string>();
  /**
   * index → the lowest term of a node seen applying it. A node learns that an entry is
   * committed from a leader of its own term (or as that leader), so this is never below the
   * term in which the entry was committed; and the committing leader applies in the same
   * step that commits, so the first observation is that term exactly.
   */
  #commitTerm = new Map<number, number>();
  #active = new Map<NodeId, ActiveLeader>();
  /** The common applied sequence, index 1 at position 0. */
  #common: CommonSlot[] = [];
  /** key → writes in applied order, as (index, value). */
  #writesByKey = new Map<string, { index: number; value: string }[]>();
  #lastApplied = new Map<NodeId, number>();
  #acked = new Map<number, number>();
  #ackFrontier = 0;
  #readFrontier = 0;
  #invokedFrontier = new Map<number, number>();
  /** node → the highest term it put on the wire (pre-votes excepted). */
  #spokenTerm = new Map<NodeId, number>();
  readonly #model: EntryModel | undefined;

  constructor(model?: EntryModel) {
    this.#model = model;
  }

  #fingerprint(entry: Entry): string {
    if (this.#model === undefined || entry.type !== "normal") return fingerprint(entry);
    return `n|${entry.term}|${entry.index}|${this.#model.describe(entry)}`;
  }

  /** Length of the common applied sequence. */
  get commonLength(): number {
    return this.#common.length;
  }

  /** Number of acknowledged writes. */
  get acknowledged(): number {
    return this.#acked.size;
  }

  // ---- 1. election safety and leader completeness -------------------------------------

  /**
   * Records that `node` is in `role` at `term`, with `log` its (live) durable log. A leader
   * must be the only one of its term and must hold every entry known committed.
   */
  roleObserved(node: NodeId, term: number, isLeader: boolean, log: LogView): void {
    if (!isLeader) {
      this.#active.delete(node);
      return;
    }
    const other = this.leaders.get(term);
    if (other !== undefined && other !== node) {
      throw new InvariantViolation(
        "election safety",
        `two leaders in term ${term}: ${other} and ${node}`,
      );
    }
    this.leaders.set(term, node);
    this.#active.set(node, { term, log });
    for (const [index, fp] of this.#committed) {
      // Leader completeness (Raft §5.4.3) binds the leaders of terms after the one in which
      // an entry was committed, which may be later than the entry's own term (a term-2 entry
      // committed by the leader of term 4 binds nothing on the leader of term 3). A leader
      // observed late (its Ready taken after a later term committed) owes nothing of it.
      const committedIn = Math.max(
        this.#committedTerm(index, fp),
        this.#commitTerm.get(index) ?? 0,
      );
      if (committedIn > term) continue;
      this.#checkLeaderHas(node, term, log, index, fp);
    }
  }

  /** A crashed node leads nothing any more. */
  nodeCrashed(node: NodeId): void {
    this.#active.delete(node);
  }

  #checkLeaderHas(node: NodeId, term: number, log: LogView, index: number, fp: string): void {
    if (index < log.snapshotIndex) return;
    if (index === log.snapshotIndex) {
      const committedTerm = this.#committedTerm(index, fp);
      if (committedTerm !== log.snapshotTerm) {
        throw new InvariantViolation(
          "leader completeness",
          `leader ${node} (term ${term}) has snapshot ${index}/${log.snapshotTerm} but the entry committed at ${index} is ${fp}`,
        );
      }
      return;
    }
    const entry = log.entryAt(index);
    const have = entry ? this.#fingerprint(entry) : "nothing";
    if (have !== fp) {
      throw new InvariantViolation(
        "leader completeness",
        `leader ${node} of term ${term} has ${have} at ${index}, but ${fp} was committed there`,
      );
    }
  }

  #committedTerm(_index: number, fp: string): number {
    return Number(fp.split("|")[1]);
  }

  // ---- 2. log matching ---------------------------------------------------------------

  /**
   * Records that `node` durably stores `entries` (contiguous), the entry before the first
   * having term `prevTerm` (0 before index 1; -1 when unknown). Equal index and term must
   * mean an equal entry with an equal predecessor, which by induction makes the prefixes equal.
   */
  entriesStored(node: NodeId, prevTerm: number, entries: readonly Entry[]): void {
    let prev = prevTerm;
    for (const entry of entries) {
      const key = `${entry.index}/${entry.term}`;
      const fp = this.#fingerprint(entry);
      const slot = this.#slots.get(key);
      if (slot === undefined) {
        this.#slots.set(key, { fingerprint: fp, prevTerm: prev, node });
      } else {
        if (slot.fingerprint !== fp) {
          throw new InvariantViolation(
            "log matching",
            `${slot.node} and ${node} store different entries at index ${entry.index} term ${entry.term}: ${slot.fingerprint} vs ${fp}`,
          );
        }
        if (prev >= 0 && slot.prevTerm >= 0 && slot.prevTerm !== prev) {
          throw new InvariantViolation(
            "log matching",
            `${slot.node} and ${node} agree at ${entry.index}/${entry.term} but differ before it: term ${slot.prevTerm} vs ${prev} at ${
              entry.index - 1
            }`,
          );
        }
        if (slot.prevTerm < 0 && prev >= 0) {
          this.#slots.set(key, { fingerprint: fp, prevTerm: prev, node });
        }
      }
      if (prev >= 0 && entry.term < prev) {
        throw new InvariantViolation(
          "log matching",
          `${node} stores term ${entry.term} at ${entry.index} after term ${prev}: terms must not decrease`,
        );
      }
      prev = entry.term;
    }
  }

  /**
   * Records that `node`, at `term`, knows `entries` are committed. Two different entries can
   * never be committed at one index, and every leader of a later term must hold them.
   */
  committedObserved(node: NodeId, term: number, entries: readonly Entry[]): void {
    for (const entry of entries) {
      const fp = this.#fingerprint(entry);
      const known = this.#committed.get(entry.index);
      const seenIn = this.#commitTerm.get(entry.index);
      if (seenIn === undefined || term < seenIn) this.#commitTerm.set(entry.index, term);
      if (known === undefined) {
        this.#committed.set(entry.index, fp);
      } else if (known !== fp) {
        throw new InvariantViolation(
          "state machine safety",
          `${node} considers ${fp} committed at ${entry.index}, but ${known} was committed there`,
        );
      }
      const common = this.#common[entry.index - 1];
      if (common !== undefined && common.fingerprint !== fp) {
        throw new InvariantViolation(
          "state machine safety",
          `${node} commits ${fp} at ${entry.index}, but ${common.fingerprint} was applied there`,
        );
      }
      for (const [leader, { term: leaderTerm, log }] of this.#active) {
        if (leaderTerm > term) this.#checkLeaderHas(leader, leaderTerm, log, entry.index, fp);
      }
    }
  }

  // ---- 3. applied sequences ----------------------------------------------------------

  /**
   * `node` restarted or restored a snapshot: its state machine is now `state` as of
   * `appliedIndex`, which must equal the common sequence's prefix up to there.
   */
  stateRestored(node: NodeId, appliedIndex: number, state: ReadonlyMap<string, string>): void {
    if (appliedIndex > this.#common.length) {
      throw new InvariantViolation(
        "state machine safety",
        `${node} restored state at ${appliedIndex}, beyond anything applied anywhere (${this.#common.length})`,
      );
    }
    this.#checkState(node, appliedIndex, state, "restored");
    this.#lastApplied.set(node, appliedIndex);
  }

  /**
   * `node`'s state machine is `state` right after applying up to `appliedIndex` (which the
   * common sequence must already hold): it must equal the common sequence's prefix there, so
   * replicas at equal applied indexes hold identical states.
   */
  stateObserved(node: NodeId, appliedIndex: number, state: ReadonlyMap<string, string>): void {
    if (appliedIndex > this.#common.length) {
      throw new InvariantViolation(
        "state machine safety",
        `${node} holds state at ${appliedIndex}, beyond the common sequence's end ${this.#common.length}`,
      );
    }
    this.#checkState(node, appliedIndex, state, "applied");
  }

  /** `node` applied `entry`; it must extend the node's sequence by one and match the common one. */
  entryApplied(node: NodeId, entry: Entry): void {
    const last = this.#lastApplied.get(node) ?? 0;
    if (entry.index !== last + 1) {
      throw new InvariantViolation(
        "state machine safety",
        `${node} applied index ${entry.index} after ${last}`,
      );
    }
    this.#lastApplied.set(node, entry.index);
    const fp = this.#fingerprint(entry);
    const common = this.#common[entry.index - 1];
    if (common !== undefined) {
      if (common.fingerprint !== fp) {
        throw new InvariantViolation(
          "state machine safety",
          `${node} applied ${fp} at ${entry.index}, but ${common.fingerprint} was applied there before`,
        );
      }
      return;
    }
    if (entry.index !== this.#common.length + 1) {
      throw new InvariantViolation(
        "state machine safety",
        `${node} applied ${entry.index} past the common sequence's end ${this.#common.length}`,
      );
    }
    const known = this.#committed.get(entry.index);
    if (known !== undefined && known !== fp) {
      throw new InvariantViolation(
        "state machine safety",
        `${node} applied ${fp} at ${entry.index}, but ${known} was committed there`,
      );
    }
    if (this.#model) {
      this.#common.push({ fingerprint: fp, term: entry.term, op: undefined });
      this.#model.applied(entry);
      return;
    }
    const op = opOf(entry);
    this.#common.push({ fingerprint: fp, term: entry.term, op });
    if (op) {
      let writes = this.#writesByKey.get(op.key);
      if (!writes) this.#writesByKey.set(op.key, writes = []);
      writes.push({ index: entry.index, value: op.value });
    }
  }

  /** The value of `key` after the common sequence's prefix up to `index`. */
  valueAt(key: string, index: number): string | undefined {
    if (this.#model) return this.#model.valueAt(key, index);
    const writes = this.#writesByKey.get(key);
    if (!writes) return undefined;
    let lo = 0;
    let hi = writes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (writes[mid].index <= index) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? undefined : writes[lo - 1].value;
  }

  #checkState(
    node: NodeId,
    index: number,
    state: ReadonlyMap<string, string>,
    what: string,
  ): void {
    const keys = new Set([...state.keys(), ...(this.#model?.keys() ?? this.#writesByKey.keys())]);
    for (const key of keys) {
      const want = this.valueAt(key, index);
      const have = state.get(key);
      if (want !== have) {
        throw new InvariantViolation(
          "state machine safety",
          `${node} ${what} state at ${index} has ${key}=${have}, but the common sequence gives ${want}`,
        );
      }
    }
  }

  // ---- 4. acknowledged writes --------------------------------------------------------

  /** The proposer applied write `opId` at `index` in `term`: it is acknowledged to the client. */
  writeAcknowledged(opId: number, index: number, term: number): void {
    const common = this.#common[index - 1];
    if (common === undefined || common.term !== term || common.op?.opId !== opId) {
      throw new InvariantViolation(
        "durability",
        `write ${opId} acknowledged at ${index}/${term}, but the common sequence has ${
          common?.fingerprint ?? "nothing"
        } there`,
      );
    }
    this.#acked.set(opId, index);
    this.#ackFrontier = Math.max(this.#ackFrontier, index);
  }

  // ---- 5. linearizable reads ---------------------------------------------------------

  /** A client invoked read `readId`: it must observe everything completed before now. */
  readInvoked(readId: number): void {
    this.#invokedFrontier.set(readId, Math.max(this.#ackFrontier, this.#readFrontier));
  }

  /** A read completed; it must see exactly the common prefix at its applied index. */
  readServed(read: ServedRead): void {
    const frontier = this.#invokedFrontier.get(read.readId);
    if (frontier === undefined) {
      throw new InvariantViolation(
        "linearizability",
        `read ${read.readId} served but never invoked`,
      );
    }
    this.#invokedFrontier.delete(read.readId);
    if (read.appliedIndex < read.readIndex) {
      throw new InvariantViolation(
        "linearizability",
        `read ${read.readId} on ${read.node} served at applied ${read.appliedIndex} below its read index ${read.readIndex}`,
      );
    }
    if (read.readIndex < frontier) {
      throw new InvariantViolation(
        "linearizability",
        `read ${read.readId} on ${read.node} got read index ${read.readIndex} (served at ${read.appliedIndex}), but index ${frontier} was acknowledged or read before it was invoked`,
      );
    }
    if (read.appliedIndex > this.#common.length) {
      throw new InvariantViolation(
        "linearizability",
        `read ${read.readId} served at ${read.appliedIndex}, beyond the common sequence ${this.#common.length}`,
      );
    }
    const want = this.valueAt(read.key, read.appliedIndex);
    if (want !== read.value) {
      throw new InvariantViolation(
        "linearizability",
        `read ${read.readId} of ${read.key} on ${read.node} at ${read.appliedIndex} saw ${read.value}, but the common sequence gives ${want}`,
      );
    }
    this.#readFrontier = Math.max(this.#readFrontier, read.appliedIndex);
  }

  /** A read failed or was abandoned; it constrains nothing. */
  readAbandoned(readId: number): void {
    this.#invokedFrontier.delete(readId);
  }

  // ---- 6. durable terms --------------------------------------------------------------

  /**
   * `node` sent a message of `type` in `term`. Pre-votes (and their answers) carry the term
   * a node would campaign in, not one it is in, and promise nothing (Raft thesis §9.6).
   */
  messageSent(node: NodeId, type: string, term: number): void {
    if (type === "preVote" || type === "preVoteResponse") return;
    if (term > (this.#spokenTerm.get(node) ?? 0)) this.#spokenTerm.set(node, term);
  }

  /**
   * `node` restarted with `term` from its disk. Raft keeps the current term on stable
   * storage before a node acts in it (Figure 2): a node that comes back in an older term
   * than one it already sent messages in can win that term a second time, and its two
   * incarnations may then hand out different entries at one (index, term).
   */
  termLoaded(node: NodeId, term: number): void {
    const spoken = this.#spokenTerm.get(node) ?? 0;
    if (term < spoken) {
      throw new InvariantViolation(
        "durable term",
        `${node} restarted in term ${term} from its disk, but it already sent messages in term ${spoken}`,
      );
    }
  }

  // ---- end of run --------------------------------------------------------------------

  /**
   * Final check of one live member: its state equals the common prefix at its applied index,
   * and it has applied every acknowledged write.
   */
  finalMember(node: NodeId, appliedIndex: number, state: ReadonlyMap<string, string>): void {
    this.#checkState(node, appliedIndex, state, "final");
    for (const [opId, index] of this.#acked) {
      if (index > appliedIndex) {
        throw new InvariantViolation(
          "durability",
          `${node} ends at applied ${appliedIndex} without acknowledged write ${opId} at ${index}`,
        );
      }
    }
  }
}
