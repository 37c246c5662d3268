/** Small assertion helpers on top of node:assert for the replication tests. */
import assert from "node:assert/strict";

/** Deep equality (Uint8Array contents included). */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  if (msg === undefined) assert.deepStrictEqual(actual, expected);
  else assert.deepStrictEqual(actual, expected, new Error(msg));
}

/** `fn` throws an instance of `type`. */
export function assertThrows(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  type: abstract new (...args: any[]) => Error,
  msg?: string,
): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof type) return;
    throw new Error(`${msg ?? "expected throw"}: wrong error ${err}`);
  }
  throw new Error(`${msg ?? "expected throw"}: nothing thrown`);
}

/** `p` rejects with an instance of `type`; returns the error. */
export async function assertRejects<E extends Error>(
  p: Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  type: abstract new (...args: any[]) => E,
  msg?: string,
): Promise<E> {
  try {
    await p;
  } catch (err) {
    if (err instanceof type) return err;
    throw new Error(`${msg ?? "expected rejection"}: wrong error ${err}`);
  }
  throw new Error(`${msg ?? "expected rejection"}: resolved`);
}

/** `cond` holds. */
export function assertTrue(cond: boolean, msg?: string): asserts cond {
  if (!cond) throw new Error(msg ?? "assertion failed");
}
