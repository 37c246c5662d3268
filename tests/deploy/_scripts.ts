/**
 * Test helpers of tests/deploy: the repository's paths and a runner for the chart's bash
 * scripts with a clean, explicit environment.
 */

/** Absolute path of the repository root (this file is tests/deploy/_scripts.ts). */
export const REPO_ROOT: string = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/** Absolute path of a file given relative to the repository root. */
export function repoPath(relative: string): string {
  return `${REPO_ROOT}/${relative}`;
}

/** What a finished script printed and how it exited. */
export interface ScriptResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout split into lines, without the trailing empty one. */
  readonly lines: readonly string[];
}

/**
 * Runs `bash <script>` with exactly `env` (plus PATH), killing it after `timeoutMs`. The
 * script never inherits the test's environment, so a variable the test did not set is unset.
 */
export async function runScript(
  script: string,
  env: Readonly<Record<string, string>>,
  timeoutMs = 20_000,
): Promise<ScriptResult> {
  const child = new Deno.Command("bash", {
    args: [script],
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
  }, timeoutMs);
  try {
    const out = await child.output();
    const stdout = new TextDecoder().decode(out.stdout);
    const lines = stdout.split("\n");
    if (lines.at(-1) === "") lines.pop();
    return { code: out.code, stdout, stderr: new TextDecoder().decode(out.stderr), lines };
  } finally {
    clearTimeout(timer);
  }
}

/** The value following `--name` in an argument list, or undefined when the flag is absent. */
export function flagValue(args: readonly string[], name: string): string | undefined {
  const at = args.indexOf(`--${name}`);
  return at < 0 ? undefined : args[at + 1];
}
