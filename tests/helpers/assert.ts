/**
 * Assertions for every test (JSR's @std/assert is not reachable here): thin wrappers over
 * `node:assert/strict`, with the names Deno users know.
 */
import nodeAssert from "node:assert/strict";

/** Deep, strict equality (Uint8Array contents included); `actual` narrows to `expected`'s type. */
export function assertEquals<T>(
  actual: unknown,
  expected: T,
  message?: string,
): asserts actual is T {
  if (message === undefined) nodeAssert.deepStrictEqual(actual, expected);
  else nodeAssert.deepStrictEqual(actual, expected, new Error(message));
}

/** The value is truthy. */
export function assert(value: unknown, message?: string): asserts value {
  nodeAssert.ok(value, message === undefined ? undefined : new Error(message));
}

/** The same as `assert`, for files where `assert` names something else. */
export const assert_: typeof assert = assert;

// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = abstract new (...args: any[]) => E;

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/** `fn` throws (an instance of `type`, when given); returns the error. */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  type?: ErrorClass<E>,
  message?: string,
): E {
  try {
    fn();
  } catch (err) {
    if (type === undefined || err instanceof type) return err as E;
    throw new Error(`${message ?? "assertThrows"}: expected ${type.name}, got ${describe(err)}`);
  }
  throw new Error(`${message ?? "assertThrows"}: nothing was thrown`);
}

/**
 * The promise (or the promise `fn` returns) rejects, with an instance of `type` when given;
 * returns the error.
 */
export async function assertRejects<E extends Error = Error>(
  p: Promise<unknown> | (() => Promise<unknown>),
  type?: ErrorClass<E>,
  message?: string,
): Promise<E> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    if (type === undefined || err instanceof type) return err as E;
    throw new Error(`${message ?? "assertRejects"}: expected ${type.name}, got ${describe(err)}`);
  }
  throw new Error(`${message ?? "assertRejects"}: it resolved`);
}
