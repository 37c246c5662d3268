/**
 * The `mokv` client commands (kv, servers, members, member, leader, snapshot, health, leave,
 * bench): {@link runCli} runs one and returns its exit code; {@link CLI_COMMANDS} lists the
 * first words it handles, so main.ts can route everything else to the node.
 */
export { CLI_COMMANDS, cliHelp, COMMANDS, runCli } from "./run_cli.ts";
export { ExitCode, exitCodeOf, type ExitCodeValue, UsageError } from "./exit_codes.ts";
export { type CapturedIo, captureIo, type CliIo, processIo } from "./io.ts";
export {
  benchKey,
  type BenchOptions,
  type BenchReport,
  formatBenchReport,
  type LatencySummary,
  runBench,
  type Workload,
} from "./bench.ts";
export type { Command, CommandContext } from "./command.ts";
