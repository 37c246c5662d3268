/**
 * mokv entry point. `mokv [flags]` runs a node (see `mokv --help`); `mokv <command> ...`
 * runs a client command (kv, servers, members, member, leader, snapshot, health, leave, bench).
 * Nothing here reads files of the repository at run time, so `deno compile` output runs anywhere.
 */
import { configHelp } from "./src/config/mod.ts";
import { runAgent } from "./src/node/agent.ts";

/** The version `mokv --version` prints. */
export const VERSION = "0.1.0";

const USAGE = `mokv ${VERSION}: a replicated in-memory key-value store

usage:
  mokv [--config-file FILE] [flags]   run a node
  mokv <command> [flags]              run a client command (mokv <command> --help)
  mokv --version

`;

/** Runs the command line and resolves with the process exit code. */
export async function main(args: readonly string[]): Promise<number> {
  if (args.includes("--version")) {
    console.log(`mokv ${VERSION}`);
    return 0;
  }
  const first = args[0];
  if (first !== undefined && !first.startsWith("-")) {
    const cli = await import("./src/cli/mod.ts").catch(() => undefined);
    if (cli && cli.CLI_COMMANDS.includes(first)) return await cli.runCli([...args]);
    console.error(`mokv: unknown command ${JSON.stringify(first)}; see mokv --help`);
    return 2;
  }
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE + configHelp());
    return 0;
  }
  return await runAgent(args);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
