/**
 * mokv entry point: `mokv [agent flags]` runs a node, `mokv <command>` runs a client command.
 * The command table grows as the node, client and CLI land.
 */
export const VERSION = "0.1.0";

/** Runs the command line and returns the process exit code. */
export function main(args: readonly string[]): number {
  if (args.includes("--version")) {
    console.log(`mokv ${VERSION}`);
    return 0;
  }
  console.log(`mokv ${VERSION}: a replicated in-memory key-value store\n\nusage: mokv --help`);
  return 0;
}

if (import.meta.main) {
  Deno.exit(main(Deno.args));
}
