/** Temporary directories for tests that use real files; always removed. */

/** Runs `fn` with a fresh temporary directory and removes it afterwards, even on failure. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "mokv-repl-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Counts the keys under `prefix` in the Deno KV file at `path` (which must be closed elsewhere). */
export async function countKeys(path: string, prefix: Deno.KvKey): Promise<number> {
  const kv = await Deno.openKv(path);
  try {
    let n = 0;
    for await (const _ of kv.list({ prefix })) n++;
    return n;
  } finally {
    kv.close();
  }
}
