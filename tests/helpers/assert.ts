/**
 * Assertions for tests (JSR's @std/assert is not reachable here): thin wrappers over
 * `node:assert/strict`, with the names Deno users know.
 */
import assert from "node:assert/strict";

/** Deep, strict equality. */
export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  if (message === undefined) assert.deepStrictEqual(actual, expected);
  else assert.deepStrictEqual(actual, expected, new Error(message));
}

/** The value is truthy. */
export function assert_(value: unknown, message?: string): asserts value {
  assert.ok(value, message === undefined ? undefined : new Error(message));
}

/** The promise rejects (optionally with an error of class `ErrorClass`); returns the error. */
export async function assertRejects<E extends Error = Error>(
  fn: () => Promise<unknown>,
  ErrorClass?: new (...args: never[]) => E,
): Promise<E> {
  try {
    await fn();
  } catch (err) {
    if (ErrorClass && !(err instanceof ErrorClass)) {
      throw new Error(`expected ${ErrorClass.name}, got ${err}`);
    }
    return err as E;
  }
  throw new Error("expected a rejection");
}
