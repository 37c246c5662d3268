/**
 * Seeding a new cluster from a backup (`mokv snapshot restore`): writes the backup as the
 * Raft snapshot of a fresh data directory whose configuration has this one node as its only
 * voter. Started, that node leads a one-node cluster holding the backup's data, and the
 * others join it as usual. Refuses a data directory that already has Raft state.
 */
import { InvalidArgumentError } from "../errors.ts";
import { KvStateMachine } from "../kv/mod.ts";
import { RaftStorage } from "../replication/storage.ts";

/** What `seedFromBackup` needs. */
export interface SeedOptions {
  readonly dataDir: string;
  readonly nodeName: string;
  /** The node's RPC address as peers reach it, "host:port". */
  readonly rpcAddr: string;
  /** Bytes of `mokv snapshot save` (a state machine snapshot). */
  readonly backup: Uint8Array;
}

/** Writes `backup` into a new data directory as a one-voter cluster's snapshot. */
export async function seedFromBackup(opts: SeedOptions): Promise<void> {
  const fsm = new KvStateMachine();
  try {
    fsm.restore(opts.backup);
  } catch (err) {
    throw new InvalidArgumentError(
      `not a mokv backup: ${err instanceof Error ? err.message : err}`,
    );
  }
  await Deno.mkdir(opts.dataDir, { recursive: true });
  const storage = await RaftStorage.open(`${opts.dataDir}/raft.kv`);
  try {
    const existing = await storage.load();
    if (existing.hardState.term > 0 || existing.entries.length > 0 || existing.snapshot) {
      throw new InvalidArgumentError(`${opts.dataDir} already holds Raft state`);
    }
    // The snapshot sits at the backup's applied index (at least 1) in term 1; the node
    // starts from it exactly as after a restart.
    const index = Math.max(1, fsm.appliedIndex);
    const config = {
      voters: [opts.nodeName],
      learners: [],
      addresses: { [opts.nodeName]: opts.rpcAddr },
    };
    await storage.save({
      hardState: { term: 1, vote: "", commit: index },
      entries: [],
      snapshot: { meta: { index, term: 1, config }, data: opts.backup },
    });
  } finally {
    storage.close();
  }
}
