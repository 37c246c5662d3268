/**
 * Calls api.KV handlers in-process, as any certificate subject, without TLS or sockets: a
 * fake grpc-js call object carries the subject in its auth context. For tests of
 * authorization and per-subject behaviour that need many subjects and many calls.
 */
import { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import type { KvServiceHandlers } from "../../src/server/mod.ts";

/** A finished call: OK with its response, or a status code and details. */
export interface HandlerOutcome<Res = unknown> {
  readonly code: grpc.status;
  readonly details: string;
  readonly response?: Res;
}

/** proto3 defaults of every request field of api.KV and api.Admin, as grpc-js decodes them. */
const DEFAULTS: Readonly<Record<string, unknown>> = {
  key: "",
  value: new Uint8Array(0),
  client_id: "",
  seq: 0,
  expect_value: new Uint8Array(0),
  has_expect_value: false,
  expect_version: 0,
  prefix: "",
  start: "",
  limit: 0,
  id: "",
};

type UnaryHandler = (
  call: unknown,
  callback: (error: { code?: number; details?: string } | null, response?: unknown) => void,
) => void;
type StreamHandler = (call: unknown) => void;

/** The part of grpc-js's auth context that `subjectOf` reads. */
interface FakeAuthContext {
  readonly sslPeerCertificate?: { readonly subject: { readonly CN: string } };
}

function authContext(subject: string): FakeAuthContext {
  return subject === "" ? {} : { sslPeerCertificate: { subject: { CN: subject } } };
}

/**
 * Calls unary method `method` as `subject` ("" = no certificate): an api.KV method by name
 * ("Append"), an api.Admin one as "Admin/Members".
 */
export function unaryAs<Res = Record<string, unknown>>(
  handlers: KvServiceHandlers,
  method: string,
  subject: string,
  request: Record<string, unknown>,
): Promise<HandlerOutcome<Res>> {
  const handler =
    (method.startsWith("Admin/")
      ? handlers.admin[method.slice("Admin/".length)]
      : handlers.kv[method]) as unknown as UnaryHandler;
  const call = {
    request: { ...DEFAULTS, ...request },
    getAuthContext: () => authContext(subject),
    getPeer: () => "127.0.0.1:1",
  };
  return new Promise((resolve) => {
    handler(call, (error, response) => {
      if (error) {
        resolve({ code: error.code ?? grpc.status.UNKNOWN, details: error.details ?? "" });
      } else resolve({ code: grpc.status.OK, details: "", response: response as Res });
    });
  });
}

/** A fake server-streaming call; emit "cancelled" on it to play a client that went away. */
export type FakeStream = EventEmitter;

/**
 * Runs a server stream (api.KV List by default, or "Admin/Snapshot") as `subject`; resolves
 * with the items written and the final status. `onStart` receives the call object.
 */
export function streamAs(
  handlers: KvServiceHandlers,
  subject: string,
  request: Record<string, unknown>,
  method = "List",
  onStart?: (call: FakeStream) => void,
): Promise<HandlerOutcome<{ key: string }[]>> {
  const handler =
    (method.startsWith("Admin/")
      ? handlers.admin[method.slice("Admin/".length)]
      : handlers.kv[method]) as unknown as StreamHandler;
  const items: { key: string }[] = [];
  return new Promise((resolve) => {
    const call = Object.assign(new EventEmitter(), {
      request: { ...DEFAULTS, ...request },
      getAuthContext: () => authContext(subject),
      getPeer: () => "127.0.0.1:1",
      write(item: { key: string }) {
        items.push(item);
        return true;
      },
      end() {
        resolve({ code: grpc.status.OK, details: "", response: items });
      },
    });
    call.on("error", (e: { code?: number; details?: string }) => {
      resolve({ code: e.code ?? grpc.status.UNKNOWN, details: e.details ?? "" });
    });
    call.on("cancelled", () => {
      resolve({ code: grpc.status.CANCELLED, details: "cancelled", response: items });
    });
    handler(call);
    onStart?.(call);
  });
}
