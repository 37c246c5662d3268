import {
  ENCRYPTION_OVERHEAD_BYTES,
  generateGossipKey,
  GossipAuthError,
  Keyring,
} from "../../src/membership/mod.ts";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

async function rejected(p: Promise<unknown>, what: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert(e instanceof GossipAuthError, `${what}: threw ${e}`);
    return;
  }
  throw new Error(`${what}: was accepted`);
}

Deno.test("keyring: seal/open round-trips with a fresh nonce and a fixed overhead", async () => {
  const ring = await Keyring.create([generateGossipKey()]);
  const msg = new TextEncoder().encode("hello gossip");
  const a = await ring.seal(msg);
  const b = await ring.seal(msg);
  assert(a.length === msg.length + ENCRYPTION_OVERHEAD_BYTES, "overhead");
  assert(a.some((x, i) => x !== b[i]), "two seals of one message differ (random nonce)");
  assert(new TextDecoder().decode(await ring.open(a)) === "hello gossip", "round trip");
});

Deno.test("keyring: tampering, truncation and foreign keys fail authentication", async () => {
  const ring = await Keyring.create([generateGossipKey()]);
  const other = await Keyring.create([generateGossipKey()]);
  const sealed = await ring.seal(new Uint8Array(100));
  for (const i of [0, 1, 12, 13, 60, sealed.length - 1]) {
    const t = sealed.slice();
    t[i] ^= 1;
    await rejected(ring.open(t), `bit flipped at ${i}`);
  }
  await rejected(ring.open(sealed.subarray(0, sealed.length - 1)), "truncated");
  await rejected(ring.open(sealed.subarray(0, 10)), "too short");
  await rejected(other.open(sealed), "another key");
});

Deno.test("keyring: the primary encrypts, every key decrypts; rotation step by step", async () => {
  const k1 = generateGossipKey();
  const k2 = generateGossipKey();
  const old = await Keyring.create([k1]);
  const ring = await Keyring.create([k1]);
  await ring.install(k2);
  assert((await ring.open(await old.seal(Uint8Array.of(1)))).length === 1, "still reads k1");
  ring.use(k2);
  await rejected(old.open(await ring.seal(Uint8Array.of(2))), "k1-only cannot read k2");
  let threw = false;
  try {
    ring.remove(k2);
  } catch (e) {
    threw = e instanceof RangeError;
  }
  assert(threw, "the primary cannot be removed");
  ring.remove(k1);
  await rejected(ring.open(await old.seal(Uint8Array.of(3))), "k1 removed");
  assert(ring.keys().length === 1 && ring.keys()[0].every((b, i) => b === k2[i]), "only k2 left");
});
