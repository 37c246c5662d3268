/**
 * Hands memory that the C allocator holds free back to the operating system, on a timer.
 *
 * Deno's ArrayBuffers, TLS and HTTP/2 buffers and Deno KV's pages live in glibc's malloc
 * heaps. A node that ingested a few hundred MB of traffic keeps tens of MB of freed chunks in
 * those heaps, counted in its RSS, long after the traffic stopped: after a 300,000-key
 * ingest, `malloc_trim(0)` on each node took 34-86 MiB off an RSS of 380-451 MiB. So the node
 * calls it every `intervalMs`. Where there is no glibc (macOS, a musl image) or no FFI
 * permission, this does nothing.
 */

/** What {@link startMallocTrim} returns: how it went so far, and how to stop it. */
export interface MallocTrimmer {
  /** False when malloc_trim is not available here (nothing runs). */
  readonly available: boolean;
  /** Calls made, and the seconds they took in all. */
  stats(): { calls: number; seconds: number };
  stop(): void;
}

type TrimLibrary = Deno.DynamicLibrary<{
  malloc_trim: { parameters: ["usize"]; result: "i32" };
}>;

function openLibc(): TrimLibrary | undefined {
  if (Deno.build.os !== "linux") return undefined;
  try {
    return Deno.dlopen(
      "libc.so.6",
      {
        malloc_trim: { parameters: ["usize"], result: "i32" },
      } as const,
    );
  } catch {
    // No glibc (musl), or no --allow-ffi: keep going without.
    return undefined;
  }
}

/** Calls glibc's `malloc_trim(0)` every `intervalMs` (0: never). */
export function startMallocTrim(intervalMs: number): MallocTrimmer {
  const lib = intervalMs > 0 ? openLibc() : undefined;
  let calls = 0;
  let seconds = 0;
  const timer = lib === undefined ? undefined : setInterval(() => {
    const t0 = performance.now();
    lib.symbols.malloc_trim(0n);
    seconds += (performance.now() - t0) / 1000;
    calls++;
  }, intervalMs);
  if (timer !== undefined) Deno.unrefTimer(timer);
  return {
    available: lib !== undefined,
    stats: () => ({ calls, seconds }),
    stop() {
      if (timer !== undefined) clearInterval(timer);
      lib?.close();
    },
  };
}
