/**
 * The chart's preStop hook against a fake Kubernetes API on 127.0.0.1: a pod leaves the
 * cluster only when the StatefulSet's desired replicas no longer include its ordinal; every
 * other stop (rolling update, scale to zero, API trouble) keeps it a member.
 */
import { assert_, assertEquals } from "../helpers/assert.ts";
import { repoPath, runScript, type ScriptResult } from "./_scripts.ts";

const SCRIPT = repoPath("deploy/mokv/files/prestop.sh");
const TOKEN = "test-token-123";

/** A fake API server answering the Scale subresource of statefulset "mokv" in "testns". */
interface FakeApi {
  readonly url: string;
  /** The Scale body to answer with (undefined: 404). */
  body: string | undefined;
  /** Authorization headers received. */
  readonly authorizations: string[];
  close(): Promise<void>;
}

function scaleBody(replicas: number, pretty: boolean): string {
  const scale = {
    kind: "Scale",
    apiVersion: "autoscaling/v1",
    metadata: { name: "mokv", namespace: "testns" },
    spec: replicas > 0 ? { replicas } : {}, // the API omits replicas: 0
    status: { replicas: 3, selector: "app.kubernetes.io/name=mokv" },
  };
  return JSON.stringify(scale, null, pretty ? 2 : undefined);
}

function startFakeApi(): Promise<FakeApi> {
  const { promise, resolve } = Promise.withResolvers<FakeApi>();
  const api: { body: string | undefined; authorizations: string[] } = {
    body: undefined,
    authorizations: [],
  };
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) =>
      resolve({
        url: `http://127.0.0.1:${port}`,
        get body() {
          return api.body;
        },
        set body(b: string | undefined) {
          api.body = b;
        },
        authorizations: api.authorizations,
        close: () => server.shutdown(),
      }),
  }, (request) => {
    api.authorizations.push(request.headers.get("authorization") ?? "");
    const path = new URL(request.url).pathname;
    if (path !== "/apis/apps/v1/namespaces/testns/statefulsets/mokv/scale" || !api.body) {
      return new Response('{"kind":"Status","code":404}', { status: 404 });
    }
    return new Response(api.body, { headers: { "content-type": "application/json" } });
  });
  return promise;
}

/** Runs the hook for `pod` against `apiUrl` in dry-run mode (or with `extra` overrides). */
async function prestop(
  dir: string,
  apiUrl: string,
  pod: string,
  extra: Record<string, string> = {},
): Promise<ScriptResult> {
  const result = await runScript(SCRIPT, {
    HOSTNAME: pod,
    MOKV_NAMESPACE: "testns",
    MOKV_RPC_PORT: "8400",
    MOKV_TLS_DIR: "/etc/mokv/tls",
    MOKV_K8S_API: apiUrl,
    MOKV_K8S_TOKEN_FILE: `${dir}/token`,
    MOKV_K8S_CA_FILE: `${dir}/no-such-ca.crt`,
    MOKV_DRY_RUN: "1",
    ...extra,
  });
  assertEquals(result.code, 0, `the hook always exits 0 (stderr: ${result.stderr})`);
  return result;
}

const LEAVE = [
  "mokv",
  "leave",
  "--addr",
  "127.0.0.1:8400",
  "--ca",
  "/etc/mokv/tls/ca.pem",
  "--cert",
  "/etc/mokv/tls/root-client.pem",
  "--key",
  "/etc/mokv/tls/root-client-key.pem",
];

async function withApi(fn: (api: FakeApi, dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mokv_prestop_" });
  const api = await startFakeApi();
  try {
    await Deno.writeTextFile(`${dir}/token`, TOKEN);
    await fn(api, dir);
  } finally {
    await api.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a pod above the desired replicas leaves; the others restart as members", async () => {
  await withApi(async (api, dir) => {
    for (const pretty of [false, true]) {
      api.body = scaleBody(3, pretty);
      for (const pod of ["mokv-0", "mokv-1", "mokv-2"]) {
        const result = await prestop(dir, api.url, pod);
        assertEquals(result.lines, [], `${pod} must not leave`);
        assert_(/no leave/.test(result.stderr), result.stderr);
      }
      for (const pod of ["mokv-3", "mokv-4"]) {
        const result = await prestop(dir, api.url, pod);
        assertEquals(result.lines, LEAVE, `${pod} leaves`);
        assert_(/scaled away/.test(result.stderr), result.stderr);
      }
    }
    assert_(api.authorizations.length > 0, "the API was asked");
    for (const a of api.authorizations) assertEquals(a, `Bearer ${TOKEN}`);
  });
});

Deno.test("scaling to zero, an unknown StatefulSet or an unreachable API never leaves", async () => {
  await withApi(async (api, dir) => {
    api.body = scaleBody(0, false);
    assertEquals((await prestop(dir, api.url, "mokv-0")).lines, [], "replicas 0");
    api.body = undefined;
    const notFound = await prestop(dir, api.url, "mokv-3");
    assertEquals(notFound.lines, [], "404");
    assert_(/cannot read/.test(notFound.stderr), notFound.stderr);
    const unreachable = await prestop(dir, "http://127.0.0.1:1", "mokv-3");
    assertEquals(unreachable.lines, [], "unreachable");
    const noName = await prestop(dir, api.url, "mokv");
    assertEquals(noName.lines, [], "not a StatefulSet pod");
  });
});

Deno.test("an insecure cluster leaves with --insecure; a failing leave still exits 0", async () => {
  await withApi(async (api, dir) => {
    api.body = scaleBody(1, false);
    const log = `${dir}/node-stderr`;
    await Deno.writeTextFile(log, "");
    const insecure = await prestop(dir, api.url, "mokv-1", {
      MOKV_TLS_DIR: "",
      MOKV_PRESTOP_LOG: log,
    });
    assertEquals(insecure.lines, ["mokv", "leave", "--addr", "127.0.0.1:8400", "--insecure"]);
    assertEquals(insecure.stderr, "", "messages go to MOKV_PRESTOP_LOG");
    assert_(/prestop: mokv-1 is scaled away/.test(await Deno.readTextFile(log)), "logged");

    const fake = `${dir}/fake-mokv`;
    await Deno.writeTextFile(
      fake,
      `#!/usr/bin/env bash\nprintf '%s\\n' "$@" > "${dir}/args"\nexit 3\n`,
    );
    await Deno.chmod(fake, 0o755);
    const failed = await prestop(dir, api.url, "mokv-2", { MOKV_BIN: fake, MOKV_DRY_RUN: "0" });
    assert_(/mokv leave failed \(exit 3\)/.test(failed.stderr), failed.stderr);
    const args = (await Deno.readTextFile(`${dir}/args`)).split("\n").slice(0, -1);
    assertEquals(args, LEAVE.slice(1), "the executable got the leave command");
  });
});
