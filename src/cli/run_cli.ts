/**
 * The `mokv` client commands in the manner of etcdctl: {@link runCli} picks the command from
 * the first words, parses its flags, runs it and turns any error into one line on stderr and
 * a documented exit code (exit_codes.ts).
 */
import type { MokvClient } from "../client/mod.ts";
import { BENCH_COMMAND } from "./bench_command.ts";
import { CLUSTER_COMMANDS } from "./cluster_commands.ts";
import { COORDINATION_COMMANDS } from "./coordination_commands.ts";
import { type Command, commandHelp, groupHelp } from "./command.ts";
import { ExitCode, exitCodeOf, UsageError } from "./exit_codes.ts";
import { boolFlag, connectFromFlags, parseFlags } from "./flags.ts";
import { HEALTH_COMMAND } from "./health_command.ts";
import { type CliIo, processIo } from "./io.ts";
import { json } from "./format.ts";
import { KV_COMMANDS } from "./kv_commands.ts";
import { SNAPSHOT_COMMANDS } from "./snapshot_commands.ts";

/** Every client command. */
export const COMMANDS: readonly Command[] = [
  ...KV_COMMANDS,
  ...CLUSTER_COMMANDS,
  ...SNAPSHOT_COMMANDS,
  ...COORDINATION_COMMANDS,
  HEALTH_COMMAND,
  BENCH_COMMAND,
];

/** The first words runCli handles; main.ts runs the node for anything else. */
export const CLI_COMMANDS: readonly string[] = [...new Set(COMMANDS.map((c) => c.words[0]))];

/** The overview `mokv <command> --help` shows for a group or an unknown subcommand. */
export function cliHelp(group?: string): string {
  const commands = group ? COMMANDS.filter((c) => c.words[0] === group) : COMMANDS;
  return groupHelp(
    group ? `mokv ${group}: subcommands` : "mokv client commands",
    commands.length > 0 ? commands : COMMANDS,
  );
}

/** --help or -h before any `--` (after it they belong to `mokv lock`'s COMMAND). */
function wantsHelp(args: readonly string[]): boolean {
  const end = args.indexOf("--");
  const own = end < 0 ? args : args.slice(0, end);
  return own.includes("--help") || own.includes("-h");
}

/**
 * Runs one client command and returns its exit code; never throws and never exits the
 * process. Output goes to `io` (the process's stdout/stderr by default). `--help` on any
 * command (or group) prints its help and exits 0.
 */
export async function runCli(args: string[], io: CliIo = processIo()): Promise<number> {
  const group = args[0];
  const candidates = COMMANDS.filter((c) => c.words[0] === group);
  if (candidates.length === 0) {
    io.err(`mokv: unknown command "${group ?? ""}"\n\n${cliHelp()}`);
    return ExitCode.USAGE;
  }
  const command = candidates.find((c) => c.words.every((w, i) => args[i] === w));
  if (!command) {
    if (wantsHelp(args)) {
      io.out(cliHelp(group));
      return ExitCode.OK;
    }
    const sub = args[1] === undefined ? "" : ` "${args[1]}"`;
    io.err(`mokv ${group}: unknown or missing subcommand${sub}\n\n${cliHelp(group)}`);
    return ExitCode.USAGE;
  }
  if (wantsHelp(args)) {
    io.out(commandHelp(command));
    return ExitCode.OK;
  }
  let client: MokvClient | undefined;
  let jsonOutput = args.includes("--json");
  try {
    const { values, positionals } = parseFlags(args.slice(command.words.length), command.flags);
    jsonOutput = boolFlag(values, "json");
    if (positionals.length < command.minArgs || positionals.length > command.maxArgs) {
      throw new UsageError(
        `mokv ${command.words.join(" ")} takes ${command.synopsis || "no arguments"}`,
      );
    }
    let connecting: Promise<MokvClient> | undefined;
    return await command.run({
      args: positionals,
      flags: values,
      io,
      json: jsonOutput,
      client: () => {
        connecting ??= connectFromFlags(values, { discover: command.discover ?? true }).then(
          (c) => (client = c),
        );
        return connecting;
      },
    });
  } catch (error) {
    const code = exitCodeOf(error);
    const message = error instanceof Error ? error.message : String(error);
    if (jsonOutput) io.out(json({ error: message, exit_code: code }));
    io.err(`mokv ${command.words.join(" ")}: ${message}\n`);
    if (error instanceof UsageError) io.err(`usage: see mokv ${command.words.join(" ")} --help\n`);
    return code;
  } finally {
    client?.close();
  }
}
