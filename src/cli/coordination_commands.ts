/**
 * `mokv watch`, `mokv lease grant|keep-alive|revoke|ttl` and `mokv lock`: etcd's watches,
 * leases and locks for mokv's CLI (through MokvClient's watch, lease and lock calls).
 */
import { LeaseExpiredError, LeaseNotFoundError } from "../client/mod.ts";
import type { Command, CommandContext } from "./command.ts";
import { ExitCode, UsageError } from "./exit_codes.ts";
import { boolFlag, intFlag } from "./flags.ts";
import { json, jsonValue } from "./format.ts";

const td = new TextDecoder();
const STOP_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM"];

/** Calls `handler` on SIGINT or SIGTERM until the returned function is called. */
function onStopSignal(handler: (signal: Deno.Signal) => void): () => void {
  const listeners = STOP_SIGNALS.map((s) => [s, () => handler(s)] as const);
  for (const [s, l] of listeners) Deno.addSignalListener(s, l);
  return () => {
    for (const [s, l] of listeners) Deno.removeSignalListener(s, l);
  };
}

/** A lease id as etcdctl prints it (hex). */
function leaseIdOf(text: string): number {
  const id = /^[0-9a-f]{1,13}$/i.test(text) ? parseInt(text, 16) : NaN;
  if (!Number.isSafeInteger(id) || id <= 0) {
    throw new UsageError(`a lease id is a hex number, got "${text}"`);
  }
  return id;
}

const watch: Command = {
  words: ["watch"],
  synopsis: "KEY [--prefix] [--rev N] [--prev-kv]",
  summary: "print changes to KEY (or under it) until interrupted",
  details: `Prints one event per change, in revision order: "PUT KEY VALUE (revision R)" or
"DELETE KEY (revision R)"; with --json one JSON object per line. Resumes on another node
after a node failure with no gap and no repeat. --rev N starts at revision N (older events
replay from the server's history; exit 1 when N has been compacted).`,
  flags: {
    prefix: { type: "boolean", doc: "watch every key starting with KEY" },
    rev: { type: "string", arg: "N", doc: "first revision to print (default: now)" },
    "prev-kv": { type: "boolean", doc: "include the value before each event" },
  },
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    const client = await ctx.client();
    const stop = new AbortController();
    const unlisten = onStopSignal(() => stop.abort());
    try {
      const rev = intFlag(ctx.flags, "rev", 0, 0);
      for await (
        const e of client.watch(ctx.args[0], {
          prefix: boolFlag(ctx.flags, "prefix"),
          prevValue: boolFlag(ctx.flags, "prev-kv"),
          signal: stop.signal,
          ...(rev > 0 ? { startRevision: rev } : {}),
        })
      ) {
        if (ctx.json) {
          ctx.io.out(json({
            type: e.type,
            key: e.key,
            ...jsonValue(e.value),
            revision: e.revision,
            create_revision: e.createRevision,
            version: e.version,
            ...(e.prevValue ? { prev: jsonValue(e.prevValue) } : {}),
          }));
        } else if (e.type === "put") {
          ctx.io.out(`PUT ${e.key} ${td.decode(e.value)} (revision ${e.revision})\n`);
        } else {
          ctx.io.out(`DELETE ${e.key} (revision ${e.revision})\n`);
        }
      }
      return ExitCode.OK;
    } finally {
      unlisten();
    }
  },
};

const grant: Command = {
  words: ["lease", "grant"],
  synopsis: "TTL",
  summary: "grant a lease of TTL seconds; prints its id (hex)",
  details: 'Prints "lease ID granted with TTL(Ns)", as etcdctl does.',
  flags: {},
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    const ttl = Number(ctx.args[0]);
    if (!Number.isInteger(ttl) || ttl <= 0) throw new UsageError("TTL is a number of seconds");
    const lease = await (await ctx.client()).leaseGrant(ttl);
    const id = lease.id.toString(16);
    ctx.io.out(
      ctx.json
        ? json({ id, ttl: lease.ttlSeconds })
        : `lease ${id} granted with TTL(${lease.ttlSeconds}s)\n`,
    );
    return ExitCode.OK;
  },
};

const keepAlive: Command = {
  words: ["lease", "keep-alive"],
  synopsis: "ID [--once]",
  summary: "renew lease ID every third of its TTL until interrupted",
  details: `Prints the TTL after each renewal. All renewals go over one LeaseKeepAlive stream,
replaced (on another node if need be) when it breaks. Exit 3 when the lease expired or was
revoked, or when its TTL passed with no renewal answered.`,
  flags: { once: { type: "boolean", doc: "renew once and exit" } },
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    const id = leaseIdOf(ctx.args[0]);
    const hex = id.toString(16);
    const client = await ctx.client();
    const print = (ttl: number) =>
      ctx.io.out(ctx.json ? json({ id: hex, ttl }) : `lease ${hex} keepalived with TTL(${ttl})\n`);
    if (boolFlag(ctx.flags, "once")) {
      print(await client.leaseKeepAlive(id));
      return ExitCode.OK;
    }
    const stop = new AbortController();
    const unlisten = onStopSignal(() => stop.abort());
    try {
      await client.keepAlive(id, stop.signal, { onRenew: print });
      return ExitCode.OK;
    } finally {
      unlisten();
    }
  },
};

const revoke: Command = {
  words: ["lease", "revoke"],
  synopsis: "ID",
  summary: "revoke lease ID (its keys are deleted)",
  flags: {},
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    const id = leaseIdOf(ctx.args[0]);
    await (await ctx.client()).leaseRevoke(id);
    ctx.io.out(ctx.json ? json({ ok: true }) : `lease ${id.toString(16)} revoked\n`);
    return ExitCode.OK;
  },
};

const ttl: Command = {
  words: ["lease", "ttl"],
  synopsis: "ID [--keys]",
  summary: "print the remaining TTL of lease ID (and its keys)",
  details: "Exit 3 when the lease expired or was revoked.",
  flags: { keys: { type: "boolean", doc: "list the keys attached to the lease" } },
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    const id = leaseIdOf(ctx.args[0]);
    const keys = boolFlag(ctx.flags, "keys");
    const info = await (await ctx.client()).leaseTimeToLive(id, { keys });
    const hex = id.toString(16);
    if (ctx.json) {
      ctx.io.out(json({
        id: hex,
        ttl: info.ttlSeconds,
        granted_ttl: info.grantedTtlSeconds,
        ...(keys ? { keys: info.keys } : {}),
      }));
    } else {
      const attached = keys ? `, attached keys(${info.keys.join(", ")})` : "";
      ctx.io.out(
        `lease ${hex} granted with TTL(${info.grantedTtlSeconds}s), remaining(${info.ttlSeconds}s)${attached}\n`,
      );
    }
    return ExitCode.OK;
  },
};

/** Default of `mokv lock --grace`: seconds between SIGTERM and SIGKILL of a lost lock's command. */
const DEFAULT_GRACE_SECONDS = 10;

const lock: Command = {
  words: ["lock"],
  synopsis: "NAME [--ttl S] [--grace S] -- COMMAND...",
  summary: "run COMMAND while holding the distributed lock NAME",
  details: `Waits for the lock (waiters are served in arrival order), prints "mokv lock: NAME held,
revision R" to stderr, runs COMMAND, releases the lock and exits with COMMAND's status.
R is a fencing token (MOKV_LOCK_REVISION in COMMAND's environment): every later holder gets a
larger one. If this process dies, the lock is released when its lease expires (--ttl S), so
a resource should refuse writes carrying an older revision than it has seen.
If the lock is lost while COMMAND runs (its lease was revoked or expired, or its TTL passed
with no renewal answered), another process may hold it: COMMAND gets SIGTERM, then SIGKILL
--grace S seconds later if still running, "mokv lock: lock NAME lost: ..." goes to stderr,
and the exit status is ${ExitCode.LOCK_LOST}.`,
  flags: {
    ttl: { type: "string", arg: "S", doc: "TTL of the lock's lease (default 60)" },
    grace: {
      type: "string",
      arg: "S",
      doc:
        `seconds from SIGTERM to SIGKILL of COMMAND once the lock is lost (default ${DEFAULT_GRACE_SECONDS})`,
    },
  },
  minArgs: 2,
  maxArgs: Number.MAX_SAFE_INTEGER,
  async run(ctx: CommandContext) {
    const [name, program, ...args] = ctx.args;
    const ttlSeconds = intFlag(ctx.flags, "ttl", 60, 1, 86_400);
    const graceSeconds = intFlag(ctx.flags, "grace", DEFAULT_GRACE_SECONDS, 0, 86_400);
    const client = await ctx.client();
    const held = await client.lock(name, { ttlSeconds });
    try {
      ctx.io.err(`mokv lock: ${name} held, revision ${held.revision}\n`);
      const child = new Deno.Command(program, {
        args,
        stdin: "inherit",
        stdout: "inherit",
        stderr: "inherit",
        env: { MOKV_LOCK_REVISION: String(held.revision), MOKV_LOCK_KEY: held.key },
      }).spawn();
      const signal = (s: Deno.Signal) => {
        try {
          child.kill(s);
        } catch { /* already exited */ }
      };
      const unlisten = onStopSignal(signal);
      let killTimer: ReturnType<typeof setTimeout> | undefined;
      const onLost = () => {
        ctx.io.err(`mokv lock: ${lostMessage(name, held.leaseId, held.lost.reason)}\n`);
        signal("SIGTERM");
        killTimer = setTimeout(() => signal("SIGKILL"), graceSeconds * 1000);
      };
      if (held.lost.aborted) onLost();
      else held.lost.addEventListener("abort", onLost, { once: true });
      try {
        const status = await child.status;
        if (held.lost.aborted) return ExitCode.LOCK_LOST;
        return status.signal ? 128 + (SIGNAL_NUMBERS[status.signal] ?? 0) : status.code;
      } finally {
        clearTimeout(killTimer);
        held.lost.removeEventListener("abort", onLost);
        unlisten();
      }
    } finally {
      await held.release().catch(() => {});
    }
  },
};

/** "lock NAME lost: lease ID expired (...)", from the reason `HeldLock.lost` aborted with. */
export function lostMessage(name: string, leaseId: number, reason: unknown): string {
  const hex = leaseId.toString(16);
  if (reason instanceof LeaseExpiredError) {
    return `lock ${name} lost: lease ${hex} expired (no renewal answered within its TTL)`;
  }
  if (reason instanceof LeaseNotFoundError) {
    return `lock ${name} lost: lease ${hex} expired (revoked or expired on the server)`;
  }
  const why = reason instanceof Error ? reason.message : String(reason);
  return `lock ${name} lost: lease ${hex} could not be kept alive: ${why}`;
}

const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGKILL: 9,
  SIGTERM: 15,
};

/** The watch, lease and lock commands. */
export const COORDINATION_COMMANDS: readonly Command[] = [
  watch,
  grant,
  keepAlive,
  revoke,
  ttl,
  lock,
];
