/** Where a command writes: stdout and stderr, replaceable so tests can capture both. */

/** The output streams of one CLI run. */
export interface CliIo {
  /** Writes text to stdout as is (add "\n" yourself). */
  out(text: string): void;
  /** Writes bytes to stdout (a value that may not be UTF-8). */
  outBytes(bytes: Uint8Array): void;
  /** Writes text to stderr as is. */
  err(text: string): void;
  /** Whether stderr is a terminal (progress bars only then). */
  readonly stderrIsTerminal: boolean;
}

const encoder = new TextEncoder();

function writeAll(file: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.length) offset += file.writeSync(bytes.subarray(offset));
}

/** The process's own stdout and stderr. */
export function processIo(): CliIo {
  return {
    out: (text) => writeAll(Deno.stdout, encoder.encode(text)),
    outBytes: (bytes) => writeAll(Deno.stdout, bytes),
    err: (text) => writeAll(Deno.stderr, encoder.encode(text)),
    stderrIsTerminal: Deno.stderr.isTerminal(),
  };
}

/** An in-memory CliIo for tests: everything written, decoded. */
export interface CapturedIo extends CliIo {
  readonly stdout: () => string;
  readonly stderr: () => string;
}

/** Captures stdout and stderr in memory. */
export function captureIo(): CapturedIo {
  const out: Uint8Array[] = [];
  let err = "";
  return {
    out: (text) => out.push(encoder.encode(text)),
    outBytes: (bytes) => out.push(bytes.slice()),
    err: (text) => {
      err += text;
    },
    stderrIsTerminal: false,
    stdout: () => {
      const total = out.reduce((n, b) => n + b.length, 0);
      const all = new Uint8Array(total);
      let offset = 0;
      for (const b of out) {
        all.set(b, offset);
        offset += b.length;
      }
      return new TextDecoder().decode(all);
    },
    stderr: () => err,
  };
}
