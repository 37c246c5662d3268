/**
 * Certificates no one should be able to use, from a CA of their own (made with cfssl in a fresh
 * temporary directory, once per test process): an expired client certificate (valid in
 * January 2020 only) and a client certificate without a Common Name, beside a server and a
 * valid "root" client certificate of the same CA. X.509 v3 with key usages, as rustls needs.
 */
import type { CertPair } from "../helpers/certs.ts";

/** Absolute paths of the PEM files. */
export interface BadCerts {
  readonly ca: string;
  /** CN "mokv-server", hosts localhost and 127.0.0.1, server and client auth. */
  readonly server: CertPair;
  /** CN "root", valid now. */
  readonly root: CertPair;
  /** CN "root", expired on 2020-02-01. */
  readonly expired: CertPair;
  /** Subject O=mokv-test, OU=no cn: no Common Name at all. */
  readonly noCn: CertPair;
}

const CA_CSR = { CN: "mokv bad-cert test CA", key: { algo: "ecdsa", size: 256 } };
const SIGNING = {
  signing: {
    default: { expiry: "24h" },
    profiles: {
      server: {
        usages: ["signing", "key encipherment", "server auth", "client auth"],
        expiry: "24h",
      },
      client: { usages: ["signing", "key encipherment", "client auth"], expiry: "24h" },
      expired: {
        usages: ["signing", "key encipherment", "client auth"],
        expiry: "744h",
        not_before: "2020-01-01T00:00:00Z",
        not_after: "2020-02-01T00:00:00Z",
      },
    },
  },
};

let cached: Promise<BadCerts> | undefined;

/** Makes the certificates on the first call of the process; later calls share them. */
export function makeBadCerts(): Promise<BadCerts> {
  cached ??= generate();
  return cached;
}

async function generate(): Promise<BadCerts> {
  const dir = await Deno.makeTempDir({ prefix: "mokv-bad-certs-" });
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // best effort
    }
  });
  const write = (name: string, value: unknown) =>
    Deno.writeTextFile(`${dir}/${name}`, JSON.stringify(value));
  await write("ca-csr.json", CA_CSR);
  await write("config.json", SIGNING);
  await cfssl(dir, "ca", ["gencert", "-initca", `${dir}/ca-csr.json`]);
  const sign = async (name: string, profile: string, csr: unknown) => {
    await write(`${name}-csr.json`, { key: { algo: "ecdsa", size: 256 }, ...(csr as object) });
    await cfssl(dir, name, [
      "gencert",
      `-ca=${dir}/ca.pem`,
      `-ca-key=${dir}/ca-key.pem`,
      `-config=${dir}/config.json`,
      `-profile=${profile}`,
      `${dir}/${name}-csr.json`,
    ]);
    return { cert: `${dir}/${name}.pem`, key: `${dir}/${name}-key.pem` };
  };
  return {
    ca: `${dir}/ca.pem`,
    server: await sign("server", "server", {
      CN: "mokv-server",
      hosts: ["localhost", "127.0.0.1"],
    }),
    root: await sign("root", "client", { CN: "root" }),
    expired: await sign("expired", "expired", { CN: "root" }),
    noCn: await sign("no-cn", "client", { names: [{ O: "mokv-test", OU: "no cn" }] }),
  };
}

/** Runs `cfssl args | cfssljson -bare dir/name`. */
async function cfssl(dir: string, name: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("cfssl", {
    args: [args[0], "-loglevel=3", ...args.slice(1)],
  }).output();
  if (!out.success) {
    throw new Error(`cfssl ${args[0]} ${name}: ${new TextDecoder().decode(out.stderr)}`);
  }
  const json = new Deno.Command("cfssljson", {
    args: ["-bare", `${dir}/${name}`],
    stdin: "piped",
    stderr: "piped",
  }).spawn();
  const writer = json.stdin.getWriter();
  await writer.write(out.stdout);
  await writer.close();
  const done = await json.output();
  if (!done.success) {
    throw new Error(`cfssljson ${name}: ${new TextDecoder().decode(done.stderr)}`);
  }
}
