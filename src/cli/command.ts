/** What a `mokv` client command is: its words, usage, flags and body; and its --help text. */
import type { MokvClient } from "../client/mod.ts";
import { type FlagSpecs, type FlagValues, GLOBAL_FLAGS } from "./flags.ts";
import type { CliIo } from "./io.ts";

/** What a command's body gets. */
export interface CommandContext {
  /** Positional arguments after the command words. */
  readonly args: readonly string[];
  readonly flags: FlagValues;
  readonly io: CliIo;
  /** --json given. */
  readonly json: boolean;
  /** Connects (once) as the global flags say; closed by the runner afterwards. */
  client(): Promise<MokvClient>;
}

/** One command, e.g. `kv get`. */
export interface Command {
  /** The words that select it, e.g. ["kv", "get"]. */
  readonly words: readonly string[];
  /** Arguments after the words, e.g. "KEY [--stale]". */
  readonly synopsis: string;
  /** One line saying what it does. */
  readonly summary: string;
  /** Longer help: output format and exit codes specific to the command. */
  readonly details?: string;
  readonly flags: FlagSpecs;
  readonly minArgs: number;
  readonly maxArgs: number;
  /** False: talk only to the given addresses, without GetServers (default true). */
  readonly discover?: boolean;
  /** Returns the exit code; throws typed errors (mapped by exit_codes.ts). */
  run(ctx: CommandContext): Promise<number>;
}

function flagLines(specs: FlagSpecs): string[] {
  return Object.entries(specs).map(([name, spec]) => {
    const left = `  ${spec.short ? `-${spec.short}, ` : ""}--${name}${
      spec.arg ? ` ${spec.arg}` : ""
    }`;
    return `${left.padEnd(30)} ${spec.doc}`;
  });
}

/** The --help text of one command. */
export function commandHelp(cmd: Command): string {
  const lines = [
    `usage: mokv ${cmd.words.join(" ")}${cmd.synopsis ? ` ${cmd.synopsis}` : ""}`,
    "",
    cmd.summary,
  ];
  if (cmd.details) lines.push("", cmd.details);
  if (Object.keys(cmd.flags).length > 0) lines.push("", "flags:", ...flagLines(cmd.flags));
  lines.push("", "global flags:", ...flagLines(GLOBAL_FLAGS), "", EXIT_CODES_HELP);
  return lines.join("\n") + "\n";
}

/** The exit code table, as --help shows it. */
export const EXIT_CODES_HELP = `exit codes: 0 ok, 1 error, 2 usage or invalid argument, 3 not found,
  4 permission denied, 5 unavailable (or not SERVING), 6 compare failed (kv cas), 7 lock lost`;

/** The --help text listing several commands (for `mokv kv --help` and the like). */
export function groupHelp(title: string, commands: readonly Command[]): string {
  const lines = [title, "", "commands:"];
  for (const c of commands) {
    const left = `  mokv ${c.words.join(" ")}${c.synopsis ? ` ${c.synopsis}` : ""}`;
    lines.push(
      left.length < 44
        ? `${left.padEnd(44)} ${c.summary}`
        : `${left}\n${" ".repeat(45)}${c.summary}`,
    );
  }
  lines.push("", "Run a command with --help for its flags.", "", EXIT_CODES_HELP);
  return lines.join("\n") + "\n";
}
