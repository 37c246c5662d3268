/**
 * Event-loop lag, measured the way a timer sees it: a timer due every `intervalMs` notes how
 * late it fired. Every request, Raft tick and heartbeat on this node waited at least that long
 * behind whatever held the loop (a snapshot encode, a restore, a long GC).
 */

/** A running lag probe. */
export interface EventLoopLagProbe {
  /** Largest lag seen since the last call, in seconds (0 when none), and starts over. */
  takeMaxSeconds(): number;
  /** Stops the probe's timer. */
  stop(): void;
}

/**
 * Starts a probe that fires every `intervalMs` (default 100) and passes each lag, in seconds,
 * to `observe`. The timer does not keep the process alive.
 */
export function startEventLoopLagProbe(
  observe: (lagSeconds: number) => void,
  intervalMs = 100,
): EventLoopLagProbe {
  let maxSeconds = 0;
  let timer: ReturnType<typeof setTimeout>;
  let due = performance.now() + intervalMs;
  const fire = () => {
    const now = performance.now();
    const lagSeconds = Math.max(0, now - due) / 1000;
    if (lagSeconds > maxSeconds) maxSeconds = lagSeconds;
    observe(lagSeconds);
    due = now + intervalMs;
    schedule();
  };
  const schedule = () => {
    timer = setTimeout(fire, intervalMs);
    Deno.unrefTimer(timer as unknown as number);
  };
  schedule();
  return {
    takeMaxSeconds() {
      const m = maxSeconds;
      maxSeconds = 0;
      return m;
    },
    stop() {
      clearTimeout(timer);
    },
  };
}
