/**
 * Test certificates: runs `certs/gencert.sh` once per test process into a fresh temporary
 * directory, and makes a second, unrelated CA beside it so tests can prove that certificates
 * from another authority are refused.
 */

/** A certificate and its private key, as absolute paths to PEM files. */
export interface CertPair {
  readonly cert: string;
  readonly key: string;
}

/** Absolute paths of every file a test needs for TLS and authorization. */
export interface TestCerts {
  /** The directory gencert.sh wrote into (MOKV_CONFIG_DIR). */
  readonly dir: string;
  /** The mokv CA certificate that signed `server`, `rootClient` and `nobodyClient`. */
  readonly ca: string;
  /** Server certificate (CN "mokv-server", also valid for client auth, so usable by peers). */
  readonly server: CertPair;
  /** Client certificate with CN "root" (allowed everything by the default policy). */
  readonly rootClient: CertPair;
  /** Client certificate with CN "nobody" (allowed nothing by the default policy). */
  readonly nobodyClient: CertPair;
  /** A second CA, unrelated to `ca`, with its own client (CN "root") and server certificates. */
  readonly otherCa: {
    readonly ca: string;
    readonly client: CertPair;
    readonly server: CertPair;
  };
  /** The Casbin model copied from certs/model.conf. */
  readonly model: string;
  /** The Casbin policy copied from certs/policy.csv. */
  readonly policy: string;
}

const GENCERT = new URL("../../certs/gencert.sh", import.meta.url).pathname;

let cached: Promise<TestCerts> | undefined;

/**
 * Returns the test certificates, making them on the first call of the process (later calls
 * share the same promise and files). The temporary directory is removed when the process
 * unloads (best effort). Fails with the script's output when cfssl is missing.
 */
export function makeTestCerts(): Promise<TestCerts> {
  cached ??= generate();
  return cached;
}

async function generate(): Promise<TestCerts> {
  const dir = await Deno.makeTempDir({ prefix: "mokv-certs-" });
  globalThis.addEventListener("unload", () => {
    for (const d of [dir, `${dir}-ca`, `${dir}/other-ca-ca`]) {
      try {
        Deno.removeSync(d, { recursive: true });
      } catch {
        // best effort: the directory may already be gone
      }
    }
  });
  const otherDir = `${dir}/other-ca`;
  await runGencert(dir);
  await runGencert(otherDir);
  const pair = (base: string, name: string): CertPair => ({
    cert: `${base}/${name}.pem`,
    key: `${base}/${name}-key.pem`,
  });
  return {
    dir,
    ca: `${dir}/ca.pem`,
    server: pair(dir, "server"),
    rootClient: pair(dir, "root-client"),
    nobodyClient: pair(dir, "nobody-client"),
    otherCa: {
      ca: `${otherDir}/ca.pem`,
      client: pair(otherDir, "root-client"),
      server: pair(otherDir, "server"),
    },
    model: `${dir}/model.conf`,
    policy: `${dir}/policy.csv`,
  };
}

async function runGencert(outDir: string): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: [GENCERT],
    env: { MOKV_CONFIG_DIR: outDir },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    throw new Error(`gencert.sh failed (exit ${out.code}): ${text.trim()}`);
  }
}
