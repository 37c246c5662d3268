/** `mokv kv get|set|delete|append|cas|list`: the key-value commands. */
import type { ReadConsistency } from "../client/mod.ts";
import type { Command, CommandContext } from "./command.ts";
import { ExitCode, UsageError } from "./exit_codes.ts";
import { boolFlag, type FlagSpecs, intFlag, stringFlag } from "./flags.ts";
import { json, jsonValue } from "./format.ts";

const STALE: FlagSpecs = {
  stale: { type: "boolean", doc: "read local state at once instead of a linearizable read" },
};

function consistency(ctx: CommandContext): ReadConsistency {
  return boolFlag(ctx.flags, "stale") ? "stale" : "linearizable";
}

const get: Command = {
  words: ["kv", "get"],
  synopsis: "KEY",
  summary: "print the value of KEY",
  details: "Prints the value as stored and a newline. Exit 3 when KEY is absent.",
  flags: STALE,
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    const entry = await (await ctx.client()).get(ctx.args[0], { consistency: consistency(ctx) });
    if (ctx.json) {
      ctx.io.out(json({ key: entry.key, ...jsonValue(entry.value), version: entry.version }));
    } else {
      ctx.io.outBytes(entry.value);
      ctx.io.out("\n");
    }
    return ExitCode.OK;
  },
};

const set: Command = {
  words: ["kv", "set"],
  synopsis: "KEY VALUE",
  summary: "store VALUE under KEY",
  details: 'Prints "OK" and the new version.',
  flags: {},
  minArgs: 2,
  maxArgs: 2,
  async run(ctx) {
    const r = await (await ctx.client()).set(ctx.args[0], ctx.args[1]);
    ctx.io.out(ctx.json ? json({ ok: true, version: r.version }) : `OK (version ${r.version})\n`);
    return ExitCode.OK;
  },
};

const del: Command = {
  words: ["kv", "delete"],
  synopsis: "KEY",
  summary: "remove KEY",
  details: "Prints the number of keys removed (0 or 1), as etcdctl del does; exit 0 either way.",
  flags: {},
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    const r = await (await ctx.client()).delete(ctx.args[0]);
    ctx.io.out(
      ctx.json ? json({ existed: r.existed, version: r.version }) : `${r.existed ? 1 : 0}\n`,
    );
    return ExitCode.OK;
  },
};

const append: Command = {
  words: ["kv", "append"],
  synopsis: "KEY VALUE",
  summary: "append VALUE to the value of KEY (creating it)",
  flags: {},
  minArgs: 2,
  maxArgs: 2,
  async run(ctx) {
    const r = await (await ctx.client()).append(ctx.args[0], ctx.args[1]);
    ctx.io.out(
      ctx.json
        ? json({ ok: true, version: r.version, length: r.length })
        : `OK (length ${r.length}, version ${r.version})\n`,
    );
    return ExitCode.OK;
  },
};

const cas: Command = {
  words: ["kv", "cas"],
  synopsis: "KEY VALUE (--expect-value V | --expect-version N | --expect-absent)",
  summary: "store VALUE only if KEY's current value or version matches",
  details: 'Prints "OK" and the new version, or "FAILED" with the current version (exit 6).',
  flags: {
    "expect-value": { type: "string", arg: "V", doc: "the value KEY must hold" },
    "expect-version": { type: "string", arg: "N", doc: "the version KEY must have" },
    "expect-absent": { type: "boolean", doc: "KEY must not exist (same as --expect-version 0)" },
  },
  minArgs: 2,
  maxArgs: 2,
  async run(ctx) {
    const value = stringFlag(ctx.flags, "expect-value");
    const hasVersion = stringFlag(ctx.flags, "expect-version") !== undefined;
    const absent = boolFlag(ctx.flags, "expect-absent");
    if ([value !== undefined, hasVersion, absent].filter((x) => x).length !== 1) {
      throw new UsageError(
        "give exactly one of --expect-value, --expect-version, --expect-absent",
      );
    }
    const expect = value !== undefined
      ? { kind: "value" as const, value }
      : { kind: "version" as const, version: absent ? 0 : intFlag(ctx.flags, "expect-version", 0) };
    const r = await (await ctx.client()).compareAndSet(ctx.args[0], ctx.args[1], expect);
    if (ctx.json) {
      ctx.io.out(json({ ok: r.ok, version: r.version, current: jsonValue(r.currentValue) }));
    } else {
      ctx.io.out(
        r.ok ? `OK (version ${r.version})\n` : `FAILED (current version ${r.version})\n`,
      );
    }
    return r.ok ? ExitCode.OK : ExitCode.COMPARE_FAILED;
  },
};

/** Characters of `kv list` output gathered before one write to stdout. */
const OUTPUT_CHUNK_CHARS = 64 * 1024;

const list: Command = {
  words: ["kv", "list"],
  synopsis: "[PREFIX]",
  summary: "print keys and values in key order",
  details: 'Prints "KEY<TAB>VALUE" lines (or KEY lines with --keys-only); --json prints one ' +
    'object {"entries": [...], "count": N}. Reads page by page with the Range RPC (each page ' +
    "one consistent view); --stream uses the List stream instead (one read index for all).",
  flags: {
    ...STALE,
    start: { type: "string", arg: "KEY", doc: "first key (inclusive)" },
    limit: { type: "string", arg: "N", doc: "at most N entries (default all)" },
    "keys-only": { type: "boolean", doc: "print keys only" },
    stream: { type: "boolean", doc: "read with the List stream instead of Range pages" },
  },
  minArgs: 0,
  maxArgs: 1,
  async run(ctx) {
    const client = await ctx.client();
    const start = stringFlag(ctx.flags, "start");
    const read = boolFlag(ctx.flags, "stream") ? client.listStream : client.list;
    const entries = read.call(client, {
      prefix: ctx.args[0] ?? "",
      ...(start !== undefined ? { start } : {}),
      limit: intFlag(ctx.flags, "limit", 0, 0, 0xffff_ffff),
      consistency: consistency(ctx),
    });
    const keysOnly = boolFlag(ctx.flags, "keys-only");
    const out: unknown[] = [];
    const decoder = new TextDecoder();
    // Lines are gathered and written in chunks: one write per line costs a syscall each.
    let text = "";
    for await (const e of entries) {
      if (ctx.json) {
        out.push(
          keysOnly ? { key: e.key } : { key: e.key, ...jsonValue(e.value), version: e.version },
        );
      } else {
        text += keysOnly ? `${e.key}\n` : `${e.key}\t${decoder.decode(e.value)}\n`;
        if (text.length >= OUTPUT_CHUNK_CHARS) {
          ctx.io.out(text);
          text = "";
        }
      }
    }
    if (text !== "") ctx.io.out(text);
    if (ctx.json) ctx.io.out(json({ entries: out, count: out.length }));
    return ExitCode.OK;
  },
};

/** The kv commands. */
export const KV_COMMANDS: readonly Command[] = [get, set, del, append, cas, list];
