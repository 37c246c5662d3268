/**
 * A simulated Deno KV file under the real `RaftStorage`: reads answer at once, every atomic
 * commit becomes durable only when the scheduler says so (its latency is the disk's), and a
 * crash keeps exactly the commits that completed (the one in flight sometimes too, as an
 * fsync that finished before the process died). Since `RaftStorage` cuts a batch into
 * several commits, a crash in the middle leaves a torn batch, as on a real disk.
 */
import type { KvAtomic, KvFile } from "../../../src/replication/storage.ts";
import type { Scheduler } from "./scheduler.ts";

interface Stored {
  readonly key: Deno.KvKey;
  readonly value: Uint8Array;
}

/** What survives a crash: the data of completed commits. Lost with the whole disk. */
export class SimDisk {
  readonly data = new Map<string, Stored>();
  commits = 0;
}

/** How one incarnation's disk behaves; consulted per commit. */
export interface DiskBehavior {
  /** Virtual milliseconds the next commit takes. */
  commitMs(): number;
  /** Does the next commit fail (an I/O error)? */
  failCommit(): boolean;
}

/** One process's open handle on a {@link SimDisk}. */
export class SimKvFile implements KvFile {
  readonly #disk: SimDisk;
  readonly #sched: Scheduler;
  readonly #behavior: DiskBehavior;
  #dead = false;
  #inFlight: { readonly apply: () => void } | undefined;
  /** Did a commit of this handle fail on purpose (an injected I/O error)? */
  failed = false;

  constructor(disk: SimDisk, sched: Scheduler, behavior: DiskBehavior) {
    this.#disk = disk;
    this.#sched = sched;
    this.#behavior = behavior;
  }

  /** Is a commit being written now? */
  get writing(): boolean {
    return this.#inFlight !== undefined;
  }

  /** The process died: nothing more completes; the commit in flight lands if `landInFlight`. */
  crash(landInFlight: boolean): void {
    if (this.#dead) return;
    this.#dead = true;
    if (landInFlight) this.#inFlight?.apply();
    this.#inFlight = undefined;
  }

  get(key: Deno.KvKey): Promise<{ readonly value: unknown }> {
    return Promise.resolve({ value: this.#disk.data.get(keyId(key))?.value ?? null });
  }

  async *list(
    selector: { readonly prefix: Deno.KvKey },
  ): AsyncIterable<{ readonly key: Deno.KvKey; readonly value: unknown }> {
    const prefix = selector.prefix;
    const found = [...this.#disk.data.values()].filter((s) =>
      s.key.length > prefix.length && prefix.every((p, i) => s.key[i] === p)
    );
    found.sort((a, b) => compareKeys(a.key, b.key));
    for (const s of found) yield { key: s.key, value: s.value };
  }

  atomic(): KvAtomic {
    const mutations: { key: Deno.KvKey; value?: Uint8Array }[] = [];
    const atomic: KvAtomic = {
      set: (key, value) => mutations.push({ key, value: value.slice() }),
      delete: (key) => mutations.push({ key }),
      commit: () => this.#commit(mutations),
    };
    return atomic;
  }

  close(): void {}

  #commit(mutations: readonly { key: Deno.KvKey; value?: Uint8Array }[]): Promise<{ ok: boolean }> {
    if (this.#dead) return new Promise(() => {});
    const fail = this.#behavior.failCommit();
    return new Promise((resolve, reject) => {
      const apply = () => {
        for (const m of mutations) {
          if (m.value) this.#disk.data.set(keyId(m.key), { key: m.key, value: m.value });
          else this.#disk.data.delete(keyId(m.key));
        }
        this.#disk.commits++;
      };
      this.#inFlight = { apply };
      this.#sched.after(this.#behavior.commitMs(), () => {
        if (this.#dead || this.#inFlight?.apply !== apply) return;
        this.#inFlight = undefined;
        if (fail) {
          this.failed = true;
          reject(new Error("simulated I/O error"));
          return;
        }
        apply();
        resolve({ ok: true });
      });
    });
  }
}

function keyId(key: Deno.KvKey): string {
  return JSON.stringify(key);
}

/** Deno KV's order for the key parts used here: numbers and strings, each in natural order. */
function compareKeys(a: Deno.KvKey, b: Deno.KvKey): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    if (typeof x !== typeof y) return typeof x < typeof y ? -1 : 1;
    return (x as number | string) < (y as number | string) ? -1 : 1;
  }
  return a.length - b.length;
}
