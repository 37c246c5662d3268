import { X509Certificate } from "node:crypto";
import * as tls from "node:tls";
import { makeTestCerts, type TestCerts } from "../helpers/certs.ts";

const GENCERT = new URL("../../certs/gencert.sh", import.meta.url).pathname;

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

/** Decodes the first PEM block of a file into DER bytes. */
function pemToDer(pem: string): Uint8Array {
  const body = pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}

/** Reads one DER tag-length header at `offset`; returns the tag and where the content starts. */
function derHeader(der: Uint8Array, offset: number): { tag: number; start: number; len: number } {
  const tag = der[offset];
  let len = der[offset + 1];
  let start = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = (len << 8) | der[start + i];
    start += n;
  }
  return { tag, start, len };
}

/** X.509 version number (1, 2 or 3) read from the certificate's DER encoding. */
function x509Version(pem: string): number {
  const der = pemToDer(pem);
  const cert = derHeader(der, 0); // Certificate ::= SEQUENCE
  const tbs = derHeader(der, cert.start); // TBSCertificate ::= SEQUENCE
  const first = derHeader(der, tbs.start);
  if (first.tag !== 0xa0) return 1; // version [0] absent means v1
  const int = derHeader(der, first.start); // INTEGER
  return der[int.start] + 1;
}

function allFiles(c: TestCerts): string[] {
  return [
    c.ca,
    c.server.cert,
    c.server.key,
    c.rootClient.cert,
    c.rootClient.key,
    c.nobodyClient.cert,
    c.nobodyClient.key,
    c.otherCa.ca,
    c.otherCa.client.cert,
    c.otherCa.client.key,
    c.otherCa.server.cert,
    c.otherCa.server.key,
    c.model,
    c.policy,
  ];
}

Deno.test("makeTestCerts writes every file, once per process", async () => {
  const certs = await makeTestCerts();
  for (const file of allFiles(certs)) {
    assert(file.startsWith("/"), `${file} must be absolute`);
    const info = await Deno.stat(file);
    assert(info.isFile && info.size > 0, `${file} must be a non-empty file`);
  }
  assert((await makeTestCerts()) === certs, "the second call must share the first result");
});

Deno.test("certificates are X.509 v3 with the expected subjects and issuers", async () => {
  const certs = await makeTestCerts();
  const read = (path: string) => Deno.readTextFileSync(path);
  for (
    const path of [certs.ca, certs.server.cert, certs.rootClient.cert, certs.nobodyClient.cert]
  ) {
    assert(x509Version(read(path)) === 3, `${path} must be X.509 v3`);
  }
  const ca = new X509Certificate(read(certs.ca));
  const otherCa = new X509Certificate(read(certs.otherCa.ca));
  const server = new X509Certificate(read(certs.server.cert));
  const root = new X509Certificate(read(certs.rootClient.cert));
  const nobody = new X509Certificate(read(certs.nobodyClient.cert));
  const foreign = new X509Certificate(read(certs.otherCa.client.cert));
  assert(ca.ca, "the CA certificate must be a CA");
  assert(server.subject.includes("CN=mokv-server"), `server subject: ${server.subject}`);
  assert(root.subject.includes("CN=root"), `root subject: ${root.subject}`);
  assert(nobody.subject.includes("CN=nobody"), `nobody subject: ${nobody.subject}`);
  for (const san of ["DNS:localhost", "IP Address:127.0.0.1", "DNS:mokv-0", "DNS:*.mokv"]) {
    assert(server.subjectAltName?.includes(san), `server SAN lacks ${san}`);
  }
  for (const leaf of [server, root, nobody]) {
    assert(leaf.checkIssued(ca) && leaf.verify(ca.publicKey), "leaf must be signed by the CA");
    assert(!leaf.verify(otherCa.publicKey), "leaf must not verify under the other CA");
  }
  assert(foreign.verify(otherCa.publicKey), "other-CA client must be signed by the other CA");
  assert(!foreign.verify(ca.publicKey), "other-CA client must not verify under the mokv CA");
});

type HandshakeResult = { ok: true; serverSawCn: string; reply: string } | {
  ok: false;
  error: string;
};

/**
 * Starts a mutual-TLS node:tls server on 127.0.0.1 with `serverPair` and `serverCa`, connects
 * one client with `clientPair` trusting `clientCa`, and reports whether the client received the
 * server's greeting. Everything is closed before it returns; bounded by a 5 s timeout.
 */
async function handshake(opts: {
  serverPair: { cert: string; key: string };
  serverCa: string;
  clientPair: { cert: string; key: string };
  clientCa: string;
}): Promise<HandshakeResult> {
  const read = (path: string) => Deno.readTextFileSync(path);
  let serverSawCn = "";
  const server = tls.createServer({
    cert: read(opts.serverPair.cert),
    key: read(opts.serverPair.key),
    ca: read(opts.serverCa),
    requestCert: true,
    rejectUnauthorized: true,
  }, (socket) => {
    const peer = socket.getPeerCertificate();
    serverSawCn = typeof peer.subject?.CN === "string" ? peer.subject.CN : "";
    socket.end("hello");
  });
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  assert(address !== null && typeof address === "object", "server must listen on a port");
  let timer: ReturnType<typeof setTimeout> | undefined;
  let socket: tls.TLSSocket | undefined;
  try {
    return await new Promise<HandshakeResult>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, error: "timeout" }), 5000);
      let reply = "";
      socket = tls.connect({
        host: "127.0.0.1",
        port: address.port,
        servername: "localhost",
        cert: read(opts.clientPair.cert),
        key: read(opts.clientPair.key),
        ca: read(opts.clientCa),
      });
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => reply += chunk);
      socket.on("error", (err: Error) => resolve({ ok: false, error: err.message }));
      socket.on("close", () => {
        resolve(
          reply === "hello"
            ? { ok: true, serverSawCn, reply }
            : { ok: false, error: `closed after ${JSON.stringify(reply)}` },
        );
      });
    });
  } finally {
    clearTimeout(timer);
    socket?.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

Deno.test("mutual TLS succeeds with the root client certificate", async () => {
  const certs = await makeTestCerts();
  const result = await handshake({
    serverPair: certs.server,
    serverCa: certs.ca,
    clientPair: certs.rootClient,
    clientCa: certs.ca,
  });
  assert(result.ok, `handshake must succeed: ${JSON.stringify(result)}`);
  assert(result.serverSawCn === "root", `server must see CN root, saw ${result.serverSawCn}`);
});

Deno.test("mutual TLS fails with a client certificate from another CA", async () => {
  const certs = await makeTestCerts();
  const result = await handshake({
    serverPair: certs.server,
    serverCa: certs.ca,
    clientPair: certs.otherCa.client,
    clientCa: certs.ca,
  });
  assert(!result.ok, "a client from another CA must be refused");
});

Deno.test("mutual TLS fails when the server's certificate is from another CA", async () => {
  const certs = await makeTestCerts();
  const result = await handshake({
    serverPair: certs.otherCa.server,
    serverCa: certs.ca,
    clientPair: certs.rootClient,
    clientCa: certs.ca,
  });
  assert(!result.ok, "the client must refuse a server from another CA");
});

/** Absolute path of `bash`, so a test can run it with a PATH that lacks cfssl. */
function whichBash(): string {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/bash`).isFile) return `${dir}/bash`;
    } catch {
      // not in this directory
    }
  }
  throw new Error("bash not found on PATH");
}

async function gencert(dir: string, args: string[], path?: string) {
  const out = await new Deno.Command(whichBash(), {
    args: [GENCERT, ...args],
    env: path === undefined ? { MOKV_CONFIG_DIR: dir } : { MOKV_CONFIG_DIR: dir, PATH: path },
    cwd: "/",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

Deno.test("gencert.sh keeps existing certificates and remakes them with --force", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mokv-gencert-" });
  try {
    const first = await gencert(dir, []);
    assert(first.code === 0, `first run failed: ${first.text}`);
    const before = await Deno.readTextFile(`${dir}/server.pem`);
    const caBefore = await Deno.readTextFile(`${dir}/ca.pem`);
    const second = await gencert(dir, []);
    assert(second.code === 0, `second run failed: ${second.text}`);
    assert(await Deno.readTextFile(`${dir}/server.pem`) === before, "server.pem must be kept");
    assert(await Deno.readTextFile(`${dir}/ca.pem`) === caBefore, "ca.pem must be kept");
    await Deno.remove(`${dir}/nobody-client.pem`);
    const third = await gencert(dir, []);
    assert(third.code === 0, `third run failed: ${third.text}`);
    assert(
      (await Deno.stat(`${dir}/nobody-client.pem`)).size > 0,
      "a missing certificate must be made again",
    );
    assert(await Deno.readTextFile(`${dir}/ca.pem`) === caBefore, "the CA must still be kept");
    const forced = await gencert(dir, ["--force"]);
    assert(forced.code === 0, `--force run failed: ${forced.text}`);
    assert(await Deno.readTextFile(`${dir}/ca.pem`) !== caBefore, "--force must remake the CA");
    assert(await Deno.readTextFile(`${dir}/server.pem`) !== before, "--force must remake certs");
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(`${dir}-ca`, { recursive: true }).catch(() => undefined);
  }
});

Deno.test("gencert.sh keeps the CA key out of the config directory; one key per node; one year", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mokv-gencert-" });
  try {
    // An older layout: the CA key next to the certificates is moved out on the next run.
    const first = await gencert(dir, []);
    assert(first.code === 0, first.text);
    const exists = (p: string) => Deno.stat(p).then(() => true, () => false);
    assert(!(await exists(`${dir}/ca-key.pem`)), "no CA key where nodes and the CLI read");
    assert(await exists(`${dir}-ca/ca-key.pem`), "the CA key in the -ca directory");
    assert(((await Deno.stat(`${dir}-ca`)).mode! & 0o077) === 0, "the CA directory is private");
    await Deno.rename(`${dir}-ca/ca-key.pem`, `${dir}/ca-key.pem`);
    const again = await gencert(dir, []);
    assert(again.code === 0 && again.text.includes("moved the CA key"), again.text);
    assert(!(await exists(`${dir}/ca-key.pem`)), "moved out again");
    const keys = new Set<string>();
    for (const n of [1, 2, 3]) keys.add(await Deno.readTextFile(`${dir}/node-${n}-key.pem`));
    assert(keys.size === 3, "every node certificate has its own key");
    const out = await new Deno.Command("openssl", {
      args: [
        "x509",
        "-in",
        `${dir}/node-1.pem`,
        "-noout",
        "-enddate",
        "-subject",
        "-ext",
        "extendedKeyUsage",
      ],
      stdout: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const end = new Date(text.match(/notAfter=(.*)/)![1]);
    const days = (end.getTime() - Date.now()) / 86_400_000;
    assert(days > 360 && days < 367, `valid for about a year, not ten (${days.toFixed(0)} days)`);
    assert(text.includes("CN = mokv-server"), "the peers' allowed CN");
    assert(text.includes("TLS Web Server Authentication"), "server auth for the port");
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(`${dir}-ca`, { recursive: true }).catch(() => undefined);
  }
});

Deno.test("gencert.sh says how to install cfssl when it is missing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mokv-gencert-" });
  try {
    // A PATH holding only `dirname`, so bash runs the script but cannot find cfssl.
    const bin = `${dir}/bin`;
    await Deno.mkdir(bin);
    const dirname = ["/usr/bin/dirname", "/bin/dirname"].find((p) => {
      try {
        return Deno.statSync(p).isFile;
      } catch {
        return false;
      }
    });
    assert(dirname !== undefined, "dirname must exist on this machine");
    await Deno.symlink(dirname, `${bin}/dirname`);
    const result = await gencert(`${dir}/out`, [], bin);
    assert(result.code === 1, `must exit 1, got ${result.code}: ${result.text}`);
    const lines = result.text.trim().split("\n");
    assert(lines.length === 1, `must print one line, got: ${result.text}`);
    assert(lines[0].includes("apt-get install golang-cfssl"), `unclear message: ${lines[0]}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
