import { Authorizer } from "../../src/server/auth.ts";
import { ConfigError, PermissionDeniedError } from "../../src/errors.ts";
import { makeTestCerts } from "../helpers/certs.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

async function rejects(fn: () => Promise<unknown>): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof Error) return err;
    throw new Error(`rejected with a non-Error: ${err}`);
  }
  throw new Error("expected a rejection");
}

/** A temp dir holding the repository's model.conf and the given policy text. */
async function withPolicy(
  policy: string,
  fn: (files: { model: string; policy: string }) => Promise<void>,
): Promise<void> {
  const certs = await makeTestCerts();
  const dir = await Deno.makeTempDir({ prefix: "mokv-auth-" });
  try {
    const files = { model: `${dir}/model.conf`, policy: `${dir}/policy.csv` };
    await Deno.copyFile(certs.model, files.model);
    await Deno.writeTextFile(files.policy, policy);
    await fn(files);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("mökv's policy: root may produce, consume and admin; nobody may not", async () => {
  const certs = await makeTestCerts();
  const auth = await Authorizer.load(certs.model, certs.policy);
  for (const action of ["produce", "consume", "admin"] as const) {
    assert(auth.enforce("root", "any/key", action), `root must ${action}`);
    assert(auth.enforce("root", "", action), `root must ${action} on the empty object`);
    assert(!auth.enforce("nobody", "any/key", action), `nobody must not ${action}`);
  }
  auth.authorize("root", "k", "produce");
  let denied: unknown;
  try {
    auth.authorize("nobody", "k", "consume");
  } catch (err) {
    denied = err;
  }
  assert(denied instanceof PermissionDeniedError, "authorize must throw PermissionDeniedError");
  assert(denied.subject === "nobody" && denied.action === "consume", "error carries the request");
});

Deno.test("keyMatch patterns allow and deny as written", async () => {
  await withPolicy(
    [
      "# readers and writers by prefix",
      "p, alice, users/*, consume",
      "p, alice, users/alice/*, produce",
      "p, bob, exact-key, produce",
      "",
    ].join("\n"),
    async (files) => {
      const auth = await Authorizer.load(files.model, files.policy);
      const cases: [string, string, "produce" | "consume" | "admin", boolean][] = [
        ["alice", "users/1", "consume", true],
        ["alice", "users/deep/path", "consume", true],
        ["alice", "users/", "consume", true],
        ["alice", "users", "consume", false],
        ["alice", "groups/1", "consume", false],
        ["alice", "users/1", "produce", false],
        ["alice", "users/alice/x", "produce", true],
        ["alice", "users/alice/x", "admin", false],
        ["bob", "exact-key", "produce", true],
        ["bob", "exact-key-2", "produce", false],
        ["bob", "exact-key", "consume", false],
        ["root", "users/1", "consume", false],
        ["Alice", "users/1", "consume", false],
      ];
      for (const [sub, obj, act, want] of cases) {
        assert(auth.enforce(sub, obj, act) === want, `${sub} ${act} ${obj} must be ${want}`);
      }
    },
  );
});

Deno.test("reload picks up a changed policy", async () => {
  await withPolicy("p, alice, users/*, consume\n", async (files) => {
    const auth = await Authorizer.load(files.model, files.policy);
    assert(auth.enforce("alice", "users/1", "consume"), "alice reads before the change");
    assert(!auth.enforce("carol", "users/1", "consume"), "carol may not read yet");
    await Deno.writeTextFile(files.policy, "p, carol, users/*, consume\n");
    await auth.reload();
    assert(!auth.enforce("alice", "users/1", "consume"), "alice lost access");
    assert(auth.enforce("carol", "users/1", "consume"), "carol gained access");
  });
});

Deno.test("a broken policy on reload keeps the old one", async (t) => {
  const broken: [string, string][] = [
    ["too few fields", "p, alice, users/*\n"],
    ["too many fields", "p, alice, users/*, consume, extra\n"],
    ["empty field", "p, alice, , consume\n"],
    ["unknown policy type", "q, alice, users/*, consume\n"],
    ["unclosed quote", 'p, alice, "users/*, consume\n'],
  ];
  await withPolicy("p, alice, users/*, consume\n", async (files) => {
    const auth = await Authorizer.load(files.model, files.policy);
    for (const [name, text] of broken) {
      await t.step(name, async () => {
        await Deno.writeTextFile(files.policy, `p, carol, users/*, consume\n${text}`);
        const err = await rejects(() => auth.reload());
        assert(err instanceof ConfigError, `must be a ConfigError, got ${err}`);
        assert(err.key === "acl-policy-file", `must name acl-policy-file: ${err.message}`);
        assert(auth.enforce("alice", "users/1", "consume"), "the old policy stays in force");
        assert(!auth.enforce("carol", "users/1", "consume"), "nothing of the new one applies");
      });
    }
    await t.step("missing file", async () => {
      await Deno.remove(files.policy);
      const err = await rejects(() => auth.reload());
      assert(err instanceof ConfigError && err.key === "acl-policy-file", `got ${err}`);
      assert(auth.enforce("alice", "users/1", "consume"), "the old policy stays in force");
    });
    await t.step("a good policy after failures is taken", async () => {
      await Deno.writeTextFile(files.policy, "p, carol, users/*, consume\n");
      await auth.reload();
      assert(auth.enforce("carol", "users/1", "consume"), "carol gained access");
    });
  });
});

Deno.test("load fails with ConfigError naming the bad file", async () => {
  await withPolicy("p, alice, users/*\n", async (files) => {
    const bad = await rejects(() => Authorizer.load(files.model, files.policy));
    assert(bad instanceof ConfigError && bad.key === "acl-policy-file", `got ${bad}`);
    const missing = await rejects(() => Authorizer.load(`${files.model}.nope`, files.policy));
    assert(missing instanceof ConfigError && missing.key === "acl-model-file", `got ${missing}`);
    await Deno.writeTextFile(files.model, "[request_definition]\nr = sub\n");
    await Deno.writeTextFile(files.policy, "p, alice, users/*, consume\n");
    const model = await rejects(() => Authorizer.load(files.model, files.policy));
    assert(model instanceof ConfigError && model.key === "acl-model-file", `got ${model}`);
  });
});

Deno.test("enforce is cheap enough for the request path", async () => {
  const certs = await makeTestCerts();
  const auth = await Authorizer.load(certs.model, certs.policy);
  const n = 20_000;
  const start = performance.now();
  let allowed = 0;
  for (let i = 0; i < n; i++) if (auth.enforce("root", `key-${i}`, "consume")) allowed++;
  const perCallUs = (performance.now() - start) * 1000 / n;
  assert(allowed === n, "every call must allow");
  console.log(`enforce: ${perCallUs.toFixed(1)} µs per call`);
  assert(perCallUs < 500, `enforce too slow: ${perCallUs} µs`);
});
