import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import descriptor from "protobufjs/ext/descriptor/index.js";
import {
  EMPTY_PROTO,
  HEALTH_PROTO,
  HealthClient,
  KV_PROTO,
  PROTO_LOADER_OPTIONS,
} from "../../src/api/mod.ts";
import { call, callError, startHarness, waitFor } from "./_helpers.ts";

Deno.test("the embedded proto texts equal the files in proto/", async () => {
  const dir = new URL("../../proto/", import.meta.url);
  assertEquals(KV_PROTO, await Deno.readTextFile(new URL("kv.proto", dir)));
  assertEquals(HEALTH_PROTO, await Deno.readTextFile(new URL("health.proto", dir)));
  assertEquals(EMPTY_PROTO, await Deno.readTextFile(new URL("empty.proto", dir)));
});

Deno.test("health Check and Watch follow backend.isHealthy()", async () => {
  const h = await startHarness({ watchIntervalMs: 20 });
  const health = new HealthClient(h.address, grpc.credentials.createInsecure());
  try {
    assertEquals(await call(health, health.Check, { service: "" }), { status: "SERVING" });
    assertEquals(await call(health, health.Check, { service: "api.KV" }), { status: "SERVING" });
    const unknown = await callError(health, health.Check, { service: "nope" });
    assertEquals(unknown.code, grpc.status.NOT_FOUND);

    const seen: string[] = [];
    const watch = health.Watch({ service: "api.KV" });
    watch.on("data", (r: { status: string }) => seen.push(r.status));
    watch.on("error", () => {});
    await waitFor(() => seen.length === 1);
    h.backend.setHealthy(false);
    assertEquals(await call(health, health.Check, { service: "" }), { status: "NOT_SERVING" });
    await waitFor(() => seen.length === 2);
    h.backend.setHealthy(true);
    await waitFor(() => seen.length === 3);
    assertEquals(seen, ["SERVING", "NOT_SERVING", "SERVING"]);
    watch.cancel();
  } finally {
    health.close();
    await h.close();
  }
});

/** The parts of grpc.reflection.v1 this test uses. */
const REFLECTION_PROTO = `
syntax = "proto3";
package grpc.reflection.v1;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    string list_services = 7;
  }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
`;

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Uint8Array[] };
}

Deno.test("server reflection lists api.KV and serves kv.proto with its import", async () => {
  const h = await startHarness();
  const root = new protobuf.Root();
  protobuf.parse(REFLECTION_PROTO, root, { keepCase: true });
  const def = protoLoader.fromJSON(root.toJSON(), PROTO_LOADER_OPTIONS);
  const Reflection = grpc.makeGenericClientConstructor(
    def["grpc.reflection.v1.ServerReflection"] as grpc.ServiceDefinition,
    "ServerReflection",
  );
  const client = new Reflection(h.address, grpc.credentials.createInsecure());
  try {
    const ask = (request: object) =>
      new Promise<ReflectionResponse>((resolve, reject) => {
        // deno-lint-ignore no-explicit-any -- a generic client's methods are untyped
        const stream = (client as any).ServerReflectionInfo() as grpc.ClientDuplexStream<
          object,
          ReflectionResponse
        >;
        stream.on("data", (r) => {
          resolve(r);
          stream.end();
        });
        stream.on("error", reject);
        stream.write(request);
      });
    const listed = await ask({ list_services: "*" });
    const names = listed.list_services_response!.service.map((s) => s.name);
    for (const name of ["api.KV", "api.Admin", "grpc.health.v1.Health"]) {
      assert(names.includes(name), `${name} missing from ${names}`);
    }
    const files = await ask({ file_containing_symbol: "api.KV" });
    const decoded = files.file_descriptor_response!.file_descriptor_proto.map((b) =>
      descriptor.FileDescriptorProto.decode(b) as unknown as {
        name: string;
        dependency: string[];
        service: { name: string }[];
      }
    );
    assertEquals(decoded[0].name, "kv.proto");
    assertEquals(decoded[0].dependency, ["google/protobuf/empty.proto"]);
    assertEquals(decoded[0].service.map((s) => s.name), ["KV", "Admin"]);
    assert(decoded.some((f) => f.name === "google/protobuf/empty.proto"));
  } finally {
    client.close();
    await h.close();
  }
});
