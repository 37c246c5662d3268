/**
 * etcd's own clients for the tests of mokv's etcd API: etcdctl (Debian's etcd-client) and a
 * small Go program on clientv3 (tests/etcd/clientv3/main.go, built in GOPATH mode against
 * Debian's golang-etcd-server-dev, no module proxy). Every run is bounded in time.
 */
import type { TestCluster } from "../helpers/cluster.ts";

const td = new TextDecoder();
const SOURCE = new URL("./clientv3/main.go", import.meta.url).pathname;

/** What a finished command printed. */
export interface Run {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** etcdctl's flags for mutual TLS with the root client certificate. */
export function etcdctlFlags(c: TestCluster, endpoints: readonly string[]): string[] {
  return [
    `--endpoints=${endpoints.join(",")}`,
    `--cacert=${c.certs.ca}`,
    `--cert=${c.certs.rootClient.cert}`,
    `--key=${c.certs.rootClient.key}`,
    "--command-timeout=10s",
    "--dial-timeout=5s",
  ];
}

/** Runs etcdctl (at most 30 s). */
export async function etcdctl(
  c: TestCluster,
  args: readonly string[],
  opt: { endpoints?: readonly string[]; stdin?: string } = {},
): Promise<Run> {
  const cmd = new Deno.Command("etcdctl", {
    args: [...etcdctlFlags(c, opt.endpoints ?? c.addrs), ...args],
    env: { ETCDCTL_API: "3" },
    stdin: opt.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  if (opt.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opt.stdin));
    await w.close();
  }
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const res = await child.output();
  clearTimeout(timer);
  return { code: res.code, out: td.decode(res.stdout), err: td.decode(res.stderr) };
}

/** Runs etcdctl and returns its output; throws on a non-zero exit. */
export async function ok(c: TestCluster, args: readonly string[], opt = {}): Promise<string> {
  const r = await etcdctl(c, args, opt);
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(" ")} exited ${r.code}: ${r.err}`);
  return r.out;
}

/** Is etcdctl installed? */
export async function hasEtcdctl(): Promise<boolean> {
  try {
    const r = await new Deno.Command("etcdctl", {
      args: ["version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return r.success;
  } catch {
    return false;
  }
}

/**
 * Builds the Go program (the Go build cache under /tmp/mokv-clientv3 makes later builds
 * quick). Each build has its own package directory and binary, so test files building it at
 * the same time (`deno test --parallel`) never read or run a half-written file.
 */
export async function buildClientv3(): Promise<string> {
  const root = "/tmp/mokv-clientv3";
  const name = `clientv3check-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const pkg = `${root}/src/${name}`;
  await Deno.mkdir(pkg, { recursive: true });
  await Deno.copyFile(SOURCE, `${pkg}/main.go`);
  const out = `${root}/bin/${name}`;
  globalThis.addEventListener("unload", () => {
    for (const path of [pkg, out]) {
      try {
        Deno.removeSync(path, { recursive: true });
      } catch {
        // best effort
      }
    }
  });
  const r = await new Deno.Command("go", {
    args: ["build", "-o", out, name],
    env: {
      GO111MODULE: "off",
      GOPATH: `${root}:/usr/share/gocode`,
      GOCACHE: `${root}/cache`,
      GOFLAGS: "",
      GOPROXY: "off",
      CGO_ENABLED: "0",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) {
    throw new Error(
      `go build of clientv3check failed (is golang-etcd-server-dev installed?): ${
        td.decode(r.stderr)
      }`,
    );
  }
  return out;
}

/** The Go program's flags for mutual TLS with the root client certificate. */
export function tlsArgs(c: TestCluster): string[] {
  return [
    `-cacert=${c.certs.ca}`,
    `-cert=${c.certs.rootClient.cert}`,
    `-key=${c.certs.rootClient.key}`,
  ];
}

/** Runs the Go program (at most 90 s) and returns its output; throws on failure. */
export async function run(bin: string, args: string[]): Promise<string> {
  const child = new Deno.Command(bin, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
  const r = await child.output();
  clearTimeout(timer);
  if (!r.success) throw new Error(`clientv3check ${args[0]} failed: ${td.decode(r.stderr)}`);
  return td.decode(r.stdout);
}
