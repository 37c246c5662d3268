/**
 * Client sessions for exactly-once writes. The state machine allows one write in flight per
 * session id and wants its seq to increase, so concurrent writes each borrow an id from a
 * pool: ids are made on demand (`<clientId>/<n>`) up to `maxSessions`, after which writers
 * wait in FIFO order for one to be released. A write keeps the same (id, seq) across all its
 * retries, so the state machine applies it once and answers retries from its cache.
 */

/** One borrowed session: the id and the seq this write uses on every attempt. */
export interface SessionLease {
  readonly clientId: string;
  readonly seq: number;
}

interface Session {
  readonly clientId: string;
  lastSeq: number;
}

/** A bounded pool of session ids, each carrying at most one write at a time. */
export class SessionPool {
  #idle: Session[] = [];
  #leased = new Map<string, Session>();
  #waiters: ((session: Session) => void)[] = [];
  #made = 0;

  constructor(readonly clientId: string, readonly maxSessions: number) {}

  /** Number of session ids made so far (never more than `maxSessions`). */
  get size(): number {
    return this.#made;
  }

  /** Borrows a session and advances its seq; resolves at once unless all are busy. */
  async acquire(): Promise<SessionLease> {
    const session = this.#idle.pop() ?? this.#make() ?? await this.#wait();
    session.lastSeq += 1;
    this.#leased.set(session.clientId, session);
    return { clientId: session.clientId, seq: session.lastSeq };
  }

  /** Gives the session back; the next write on it uses the next seq. */
  release(lease: SessionLease): void {
    const session = this.#leased.get(lease.clientId);
    if (!session) return;
    this.#leased.delete(lease.clientId);
    const waiter = this.#waiters.shift();
    if (waiter) waiter(session);
    else this.#idle.push(session);
  }

  #make(): Session | undefined {
    if (this.#made >= this.maxSessions) return undefined;
    this.#made += 1;
    return { clientId: `${this.clientId}/${this.#made}`, lastSeq: 0 };
  }

  #wait(): Promise<Session> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}
