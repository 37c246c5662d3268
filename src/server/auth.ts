/**
 * Authorization: a Casbin enforcer over the model and policy files, deciding whether the
 * subject (a client certificate's Common Name) may perform an action on an object (a key).
 */
import { type Enforcer, newEnforcer, StringAdapter } from "casbin";
import { ConfigError, PermissionDeniedError } from "../errors.ts";

/** What a request does: `produce` writes, `consume` reads, `admin` changes the cluster. */
export type Action = "produce" | "consume" | "admin";

/**
 * Decides `(subject, object, action)` with Casbin. Policies are checked when loaded: every
 * line must name a policy type of the model and carry exactly the model's fields, so a typo
 * fails loudly instead of silently denying (Casbin itself skips such lines). `reload()` swaps
 * in a new policy atomically and keeps the old one when the new one fails to load.
 */
export class Authorizer {
  #enforcer: Enforcer;
  /** The same policy as plain tables when the model is mokv's own; else undefined. */
  #compiled: CompiledPolicy | undefined;
  #reloading: Promise<void> = Promise.resolve();

  private constructor(
    /** Absolute or relative path of the Casbin model (CONF). */
    readonly modelFile: string,
    /** Path of the Casbin policy (CSV); re-read by `reload()`. */
    readonly policyFile: string,
    enforcer: Enforcer,
  ) {
    this.#enforcer = enforcer;
    this.#compiled = CompiledPolicy.of(enforcer);
  }

  /**
   * Loads and checks the model and policy. Throws `ConfigError` naming `acl-model-file` or
   * `acl-policy-file` when either cannot be read or is invalid.
   */
  static async load(modelFile: string, policyFile: string): Promise<Authorizer> {
    return new Authorizer(modelFile, policyFile, await loadEnforcer(modelFile, policyFile));
  }

  /**
   * True when the policy allows `subject` to perform `action` on `object`. Synchronous and
   * side-effect free, so it can sit on the per-request path (and on List's per-key check).
   * With mokv's own model (certs/model.conf) it is decided from plain tables of the same
   * rules, with keyMatch's exact semantics, in well under a microsecond (Casbin's generic
   * matcher takes about 3 µs); any other model goes to Casbin.
   */
  enforce(subject: string, object: string, action: Action): boolean {
    const compiled = this.#compiled;
    if (compiled) return compiled.allows(subject, object, action);
    return this.#enforcer.enforceSync(subject, object, action);
  }

  /** Like `enforce`, but throws `PermissionDeniedError` when the action is not allowed. */
  authorize(subject: string, object: string, action: Action): void {
    if (!this.enforce(subject, object, action)) {
      throw new PermissionDeniedError(subject, action, object);
    }
  }

  /**
   * Re-reads the model and policy files and switches to them at once. When they fail to load,
   * the policy in force stays unchanged and the returned promise rejects with the
   * `ConfigError`. Concurrent calls run one after another.
   */
  reload(): Promise<void> {
    const next = this.#reloading.catch(() => {}).then(async () => {
      const enforcer = await loadEnforcer(this.modelFile, this.policyFile);
      this.#compiled = CompiledPolicy.of(enforcer);
      this.#enforcer = enforcer;
    });
    this.#reloading = next;
    return next;
  }
}

/** mokv's model (certs/model.conf) as Casbin stores it, whitespace removed. */
const MOKV_MODEL = {
  r: "sub,obj,act",
  p: "sub,obj,act",
  e: "some(where(p_eft==allow))",
  m: "r_sub==p_sub&&keyMatch(r_obj,p_obj)&&r_act==p_act",
} as const;

/** The rules of one (subject, action): exact keys and keyMatch prefixes. */
interface Grants {
  readonly exact: Set<string>;
  readonly prefixes: string[];
}

/**
 * The policy of mokv's own model as tables: allow-only rules, subject and action compared for
 * equality, the object by Casbin's keyMatch (a pattern's text before its first `*` is a
 * prefix; policies are checked to end a pattern with its only `*`). Built only when the model
 * is exactly that one, so every decision equals Casbin's.
 */
export class CompiledPolicy {
  readonly #grants = new Map<string, Grants>();

  private constructor() {}

  /** The tables of `enforcer`'s policy, or undefined when its model is not mokv's. */
  static of(enforcer: Enforcer): CompiledPolicy | undefined {
    const model = enforcer.getModel().model;
    const text = (sec: string, key: string) =>
      model.get(sec)?.get(key)?.value.replace(/\s+/g, "") ?? "";
    if (
      [...model.keys()].sort().join(",") !== "e,m,p,r" ||
      model.get("r")?.size !== 1 || model.get("p")?.size !== 1 ||
      model.get("e")?.size !== 1 || model.get("m")?.size !== 1 ||
      text("r", "r") !== MOKV_MODEL.r || text("p", "p") !== MOKV_MODEL.p ||
      text("e", "e") !== MOKV_MODEL.e || text("m", "m") !== MOKV_MODEL.m
    ) {
      return undefined;
    }
    const compiled = new CompiledPolicy();
    for (const rule of model.get("p")!.get("p")!.policy) {
      if (rule.length !== 3) return undefined;
      const [sub, obj, act] = rule;
      const id = `${sub}\u0000${act}`;
      let grants = compiled.#grants.get(id);
      if (!grants) compiled.#grants.set(id, grants = { exact: new Set(), prefixes: [] });
      const star = obj.indexOf("*");
      if (star < 0) grants.exact.add(obj);
      else grants.prefixes.push(obj.slice(0, star));
    }
    return compiled;
  }

  /** Casbin's decision for (subject, object, action) under mokv's model. */
  allows(subject: string, object: string, action: string): boolean {
    const grants = this.#grants.get(`${subject}\u0000${action}`);
    if (!grants) return false;
    if (grants.exact.has(object)) return true;
    for (const prefix of grants.prefixes) {
      // keyMatch(object, prefix + "*"): the object starts with the pattern's prefix.
      if (object.startsWith(prefix)) return true;
    }
    return false;
  }
}

async function loadEnforcer(modelFile: string, policyFile: string): Promise<Enforcer> {
  let policyText: string;
  try {
    await Deno.stat(modelFile);
  } catch (err) {
    throw new ConfigError("acl-model-file", `cannot read ${modelFile}: ${firstLine(err)}`);
  }
  try {
    policyText = await Deno.readTextFile(policyFile);
  } catch (err) {
    throw new ConfigError("acl-policy-file", `cannot read ${policyFile}: ${firstLine(err)}`);
  }
  let enforcer: Enforcer;
  try {
    // The model alone first, so a bad model is reported as such.
    enforcer = await newEnforcer(modelFile);
  } catch (err) {
    throw new ConfigError(
      "acl-model-file",
      `${modelFile} is not a Casbin model: ${firstLine(err)}`,
    );
  }
  checkPolicyLines(policyFile, policyText, enforcer.getModel().model);
  try {
    // Load exactly the text checked above, not a second read of a file that may be changing.
    enforcer = await newEnforcer(modelFile, new StringAdapter(policyText));
  } catch (err) {
    throw new ConfigError(
      "acl-policy-file",
      `${policyFile} is not a valid policy: ${firstLine(err)}`,
    );
  }
  checkFieldCounts(policyFile, enforcer.getModel().model);
  checkObjectPatterns(policyFile, enforcer.getModel().model);
  return enforcer;
}

type Sections = Map<string, Map<string, { tokens: string[]; policy: string[][] }>>;

function isPolicyLine(line: string): boolean {
  const trimmed = line.trim();
  return trimmed !== "" && !trimmed.startsWith("#");
}

/**
 * Every policy line must start with a policy type the model defines (`p`, `g`, ...) and close
 * its quotes; Casbin would silently skip the first and fail obscurely on the second.
 */
function checkPolicyLines(policyFile: string, text: string, sections: Sections): void {
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    if (!isPolicyLine(lines[i])) continue;
    const where = `${policyFile} line ${i + 1}`;
    if (lines[i].split('"').length % 2 === 0) {
      throw new ConfigError("acl-policy-file", `${where}: unclosed quote`);
    }
    const ptype = lines[i].split(",")[0].trim().replace(/^"(.*)"$/, "$1");
    const sec = ptype.slice(0, 1);
    if ((sec !== "p" && sec !== "g") || !(sections.get(sec)?.has(ptype) ?? false)) {
      throw new ConfigError(
        "acl-policy-file",
        `${where}: unknown policy type ${JSON.stringify(ptype)}`,
      );
    }
  }
}

/** Every loaded rule must have exactly the fields its policy definition declares. */
function checkFieldCounts(policyFile: string, sections: Sections): void {
  for (const sec of ["p", "g"]) {
    for (const [ptype, assertion] of sections.get(sec) ?? []) {
      for (const rule of assertion.policy) {
        if (rule.length !== assertion.tokens.length || rule.some((field) => field === "")) {
          throw new ConfigError(
            "acl-policy-file",
            `${policyFile}: rule "${ptype}, ${
              rule.join(", ")
            }" needs ${assertion.tokens.length} non-empty fields`,
          );
        }
      }
    }
  }
}

/**
 * A policy object is a key or a prefix pattern ending in one `*` (`users/*`). Casbin's
 * `keyMatch` ignores whatever follows the first `*`, so `foo*bar` would grant every key
 * starting with `foo`: such a pattern is refused rather than silently widened.
 */
function checkObjectPatterns(policyFile: string, sections: Sections): void {
  for (const [ptype, assertion] of sections.get("p") ?? []) {
    const at = assertion.tokens.indexOf(`${ptype}_obj`);
    if (at < 0) continue;
    for (const rule of assertion.policy) {
      const object = rule[at];
      const star = object.indexOf("*");
      if (star >= 0 && star !== object.length - 1) {
        throw new ConfigError(
          "acl-policy-file",
          `${policyFile}: rule "${ptype}, ${
            rule.join(", ")
          }": "*" may only end an object pattern (keyMatch ignores what follows it)`,
        );
      }
    }
  }
}

function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n")[0].trim();
}
