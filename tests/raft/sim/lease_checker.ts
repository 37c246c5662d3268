/**
 * The lease-expiry checker of the host simulator: a lease is never expired early. Expiry is
 * decided on the leader's clock (issue 18), so every bound is measured on the clock of the
 * node that proposed the expiry:
 *
 * 1. an expiry proposed on a leader of term T was proposed a full TTL or more after the node
 *    became leader of T (a new leader gives every lease its full TTL again);
 * 2. it was proposed a full TTL or more after the invocation of any grant or keep-alive of the
 *    lease acknowledged before the proposal;
 * 3. a grant or keep-alive acknowledged after an expiry was proposed, but applied before that
 *    expiry, was answered for a lease that then ended less than a TTL after it (a race of the
 *    two in the log); counted, and a failure when `strict`;
 * 4. an expiry is carried by an entry of the term its lessor decided it in: one that another
 *    leader appended later (a proposal the host retried and forwarded after its node stepped
 *    down) expires a lease on a deposed leader's decision, ignoring the new leader's full
 *    TTL; counted, and a failure when `strict`.
 *
 * That the keys of a revoked or expired lease all go at the revoke's revision, on every
 * replica, and that a put to an ended lease fails, is the KV model's part (kv_model.ts).
 */
import { InvariantViolation } from "./checker.ts";

/** A node's clock as the checker measures it: virtual time scaled by its rate. */
export interface ClockRate {
  /** Clock milliseconds per virtual millisecond. */
  readonly rate: number;
}

/** One proposal of an expiry by a node's lessor. */
export interface ExpiryProposal {
  readonly leaseId: number;
  readonly node: string;
  readonly term: number;
  /** Virtual time of the proposal. */
  readonly atMs: number;
  readonly rate: number;
}

interface Renewal {
  readonly index: number;
  /** Virtual times of the client's call and of its answer. */
  readonly invokedMs: number;
  readonly ackedMs: number;
  readonly what: string;
}

/** See the module comment. */
export class LeaseTimingChecker {
  readonly #strict: boolean;
  /** `${node}/${incarnation}/${term}` → virtual time it was first seen leading. */
  readonly #elected = new Map<string, number>();
  readonly #ttlMs = new Map<number, number>();
  readonly #renewals = new Map<number, Renewal[]>();
  /** Proposals by payload (hex), to find who proposed the expiry the log applied. */
  readonly #proposals = new Map<string, ExpiryProposal>();
  /** lease → the expiry the common sequence applied, and who proposed it. */
  readonly #expired = new Map<number, { index: number; proposal: ExpiryProposal }>();
  /** Renewals answered after the expiry that ended their lease was proposed (see 3). */
  races = 0;
  /** Expiries applied from an entry of another term than the one they were decided in (4). */
  forwarded = 0;
  proposals = 0;

  constructor(strict: boolean) {
    this.#strict = strict;
  }

  /** Lease `id` was granted with this TTL. */
  granted(id: number, ttlSeconds: number): void {
    this.#ttlMs.set(id, ttlSeconds * 1000);
  }

  /** `leader` (this incarnation) leads `term` from virtual time `atMs` on, at the latest. */
  leading(leader: string, term: number, atMs: number): void {
    const key = `${leader}/${term}`;
    if (!this.#elected.has(key)) this.#elected.set(key, atMs);
  }

  /**
   * A grant or keep-alive of lease `id`, invoked at `invokedMs`, was acknowledged at `ackedMs`
   * as applied at `index`.
   */
  renewed(id: number, index: number, invokedMs: number, ackedMs: number, what: string): void {
    const r: Renewal = { index, invokedMs, ackedMs, what };
    let list = this.#renewals.get(id);
    if (!list) this.#renewals.set(id, list = []);
    list.push(r);
    const expiry = this.#expired.get(id);
    if (expiry && expiry.index > index) this.#checkRace(expiry.proposal, r);
  }

  /**
   * A lessor proposes the expiry `p` (payload `key`). It is judged once applied: a deposed
   * leader that still believes it leads may propose what never commits.
   */
  proposed(key: string, p: ExpiryProposal): void {
    this.proposals++;
    this.#proposals.set(key, p);
  }

  /** Bounds 1 and 2 for the expiry `p` that the common sequence applied. */
  #checkDecision(p: ExpiryProposal): void {
    const ttl = this.#ttlMs.get(p.leaseId);
    if (ttl === undefined) return; // a lease of no acknowledged grant
    const elected = this.#elected.get(`${p.node}/${p.term}`);
    if (elected === undefined) {
      throw new InvariantViolation(
        "lease expiry",
        `${p.node} proposed the expiry of lease ${p.leaseId} in term ${p.term}, which it was never seen leading`,
      );
    }
    const sinceElection = (p.atMs - elected) * p.rate;
    if (sinceElection < ttl - 1e-6) {
      throw new InvariantViolation(
        "lease expiry",
        `${p.node} proposed the expiry of lease ${p.leaseId} (TTL ${ttl} ms) ${
          sinceElection.toFixed(1)
        } ms on its clock after it became leader of term ${p.term}, and it applied: a new leader must give every lease its full TTL first`,
      );
    }
    for (const r of this.#renewals.get(p.leaseId) ?? []) {
      if (r.ackedMs > p.atMs) continue;
      const since = (p.atMs - r.invokedMs) * p.rate;
      if (since < ttl - 1e-6) {
        throw new InvariantViolation(
          "lease expiry",
          `${p.node} proposed the expiry of lease ${p.leaseId} (TTL ${ttl} ms) at ${
            p.atMs.toFixed(1)
          }, ${since.toFixed(1)} ms on its clock after the ${r.what} acknowledged at ${
            r.ackedMs.toFixed(1)
          } (applied at ${r.index}) was sent, and it applied`,
        );
      }
    }
  }

  /**
   * The common sequence applied the expiry of lease `id` at `index`, in an entry of `term`
   * (payload `key`).
   */
  expiryApplied(id: number, index: number, term: number, key: string): void {
    const proposal = this.#proposals.get(key);
    if (!proposal) {
      throw new InvariantViolation(
        "lease expiry",
        `the expiry of lease ${id} applied at ${index} was proposed by no node's lessor`,
      );
    }
    if (proposal.term !== term) {
      this.forwarded++;
      if (this.#strict) {
        throw new InvariantViolation(
          "lease expiry",
          `the expiry of lease ${id} that ${proposal.node} decided as leader of term ${proposal.term} at ${
            proposal.atMs.toFixed(1)
          } was appended in term ${term} (applied at ${index}): another leader carried out a deposed leader's decision`,
        );
      }
    }
    this.#checkDecision(proposal);
    this.#expired.set(id, { index, proposal });
    for (const r of this.#renewals.get(id) ?? []) {
      if (r.index < index) this.#checkRace(proposal, r);
    }
  }

  /** Bound 3, for a renewal applied before the expiry `p` that ended its lease. */
  #checkRace(p: ExpiryProposal, r: Renewal): void {
    const ttl = this.#ttlMs.get(p.leaseId);
    if (ttl === undefined || r.ackedMs <= p.atMs) return; // bound 2's case
    const since = (p.atMs - r.invokedMs) * p.rate;
    if (since >= ttl - 1e-6) return;
    this.races++;
    if (!this.#strict) return;
    throw new InvariantViolation(
      "lease expiry",
      `lease ${p.leaseId}: the ${r.what} sent at ${
        r.invokedMs.toFixed(1)
      } and applied at ${r.index} was acknowledged at ${
        r.ackedMs.toFixed(1)
      }, but ${p.node} had proposed the lease's expiry at ${p.atMs.toFixed(1)}, ${
        since.toFixed(1)
      } ms after it was sent on its clock (TTL ${ttl} ms), and that expiry applied after it`,
    );
  }
}
