/**
 * Assertions for the Raft tests, on top of `node:assert/strict` (JSR's @std/assert is not
 * reachable here). Each throws an `AssertionError` describing the mismatch.
 */
import { deepStrictEqual, ok } from "node:assert/strict";

/** Deep, strict equality (`actual` narrows to the type of `expected`). */
export function assertEquals<T>(
  actual: unknown,
  expected: T,
  message?: string,
): asserts actual is T {
  if (message === undefined) deepStrictEqual(actual, expected);
  else deepStrictEqual(actual, expected, new Error(message));
}

/** `condition` is truthy. */
export function assert(condition: unknown, message?: string): asserts condition {
  ok(condition, message === undefined ? undefined : new Error(message));
}

/** `fn` throws an instance of `type`; returns that error for further assertions. */
export function assertThrows<E extends Error>(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  type: new (...args: any[]) => E,
  message?: string,
): E {
  try {
    fn();
  } catch (err) {
    if (err instanceof type) return err;
    throw new Error(
      `${message ?? "assertThrows"}: expected ${type.name}, got ${
        err instanceof Error ? `${err.name}: ${err.message}` : String(err)
      }`,
    );
  }
  throw new Error(`${message ?? "assertThrows"}: expected ${type.name}, nothing was thrown`);
}
