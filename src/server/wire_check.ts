/**
 * A schema-free check of protobuf wire format, run on every request message before it is
 * decoded. protobufjs decodes leniently (a length-delimited field that runs past the end of the
 * message is cut short instead of refused), so a truncated or corrupted request could reach a
 * handler as a different, valid-looking request; with this check it gets INTERNAL ("Error
 * deserializing request"), as grpc-go answers. Linear in the message, no allocation.
 */
import type * as grpc from "@grpc/grpc-js";
import { InvalidArgumentError } from "../errors.ts";

/** Longest varint protobuf allows (a 64-bit value). */
const MAX_VARINT_BYTES = 10;

/** Thrown (inside grpc-js's deserializer) for a request that is not protobuf wire format. */
export class MalformedMessageError extends InvalidArgumentError {}

/**
 * Whether `bytes` is a well-formed sequence of protobuf fields: valid tags (field number ≥ 1,
 * wire types 0, 1, 2, 5; groups are refused, proto3 has none), varints of at most 10 bytes, and
 * every length or fixed-size value inside the message.
 */
export function isWellFormedProtobuf(bytes: Uint8Array): boolean {
  let at = 0;
  const varint = (): number | undefined => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < MAX_VARINT_BYTES; i++) {
      if (at >= bytes.length) return undefined;
      const b = bytes[at++];
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return value;
      scale *= 128;
    }
    return undefined;
  };
  while (at < bytes.length) {
    const tag = varint();
    if (tag === undefined || tag < 8) return false; // field number 0 or truncated
    switch (tag % 8) {
      case 0:
        if (varint() === undefined) return false;
        break;
      case 1:
        at += 8;
        break;
      case 2: {
        const length = varint();
        if (length === undefined) return false;
        at += length;
        break;
      }
      case 5:
        at += 4;
        break;
      default:
        return false;
    }
    if (at > bytes.length) return false;
  }
  return true;
}

/**
 * `service` with each method's request deserializer preceded by {@link isWellFormedProtobuf};
 * a malformed request throws {@link MalformedMessageError}, which grpc-js answers INTERNAL.
 */
export function withWireCheck(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const checked: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    const decode = method.requestDeserialize;
    checked[name] = {
      ...method,
      requestDeserialize: (bytes) => {
        if (!isWellFormedProtobuf(bytes)) {
          throw new MalformedMessageError("request is not well-formed protobuf");
        }
        return decode(bytes);
      },
    };
  }
  return checked;
}
