/** `mokv snapshot save FILE` (a consistent backup) and `mokv snapshot restore FILE` (offline seeding). */
import { seedFromBackup } from "../node/restore.ts";
import type { Command } from "./command.ts";
import { ExitCode, UsageError } from "./exit_codes.ts";
import { addrsOf, stringFlag } from "./flags.ts";
import { json } from "./format.ts";

const save: Command = {
  words: ["snapshot", "save"],
  synopsis: "FILE",
  summary: "write a consistent backup of the whole data set to FILE",
  details: "The file is written beside FILE and renamed into place, so FILE is never partial.",
  flags: {},
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    const file = ctx.args[0];
    const image = await (await ctx.client()).snapshot();
    const tmp = `${file}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    try {
      await Deno.writeFile(tmp, image, { mode: 0o600 });
      await Deno.rename(tmp, file);
    } catch (error) {
      await Deno.remove(tmp).catch(() => {});
      throw error;
    }
    ctx.io.out(
      ctx.json ? json({ file, bytes: image.length }) : `saved ${image.length} bytes to ${file}\n`,
    );
    return ExitCode.OK;
  },
};

const restore: Command = {
  words: ["snapshot", "restore"],
  synopsis: "FILE --data-dir DIR --node-name NAME --rpc-addr HOST:PORT",
  summary: "seed a new one-voter cluster's data dir from a backup (offline)",
  details: "Start the node with that data dir and name afterwards (without bootstrap); it " +
    "leads a one-node cluster holding the backup, and other nodes join it. Refuses a data " +
    "dir that already holds Raft state. Talks to no server.",
  flags: {
    "data-dir": { type: "string", arg: "DIR", doc: "the new node's data directory" },
    "node-name": { type: "string", arg: "NAME", doc: "the new node's name" },
    "rpc-addr": { type: "string", arg: "HOST:PORT", doc: "the new node's RPC address" },
  },
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    const need = (name: string) => {
      const v = stringFlag(ctx.flags, name);
      if (!v) throw new UsageError(`snapshot restore needs --${name}`);
      return v;
    };
    const dataDir = need("data-dir");
    const nodeName = need("node-name");
    const rpcAddr = need("rpc-addr");
    addrsOf({ addr: [rpcAddr] }); // validates host:port
    let backup: Uint8Array;
    try {
      backup = await Deno.readFile(ctx.args[0]);
    } catch (error) {
      throw new UsageError(
        `cannot read ${ctx.args[0]}: ${error instanceof Error ? error.message : error}`,
      );
    }
    await seedFromBackup({ dataDir, nodeName, rpcAddr, backup });
    ctx.io.out(
      ctx.json
        ? json({ data_dir: dataDir, node_name: nodeName, rpc_addr: rpcAddr, bytes: backup.length })
        : `seeded ${dataDir} for ${nodeName} (${rpcAddr}) from ${backup.length} bytes\n`,
    );
    return ExitCode.OK;
  },
};

/** The snapshot commands. */
export const SNAPSHOT_COMMANDS: readonly Command[] = [save, restore];
