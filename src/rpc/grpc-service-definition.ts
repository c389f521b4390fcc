import { create, fromBinary, toBinary, type DescMessage, type DescService, type MessageShape } from '@bufbuild/protobuf';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';

/**
 * Turns a protobuf-es service descriptor into the definition grpc-js serves and calls.
 * protobuf-es generates schemas, not grpc-js stubs; this is the whole bridge: a path and a
 * binary codec per method. Keys are the methods' local names (`startProcess`).
 */
export function grpcServiceDefinition(service: DescService): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    const streamsRequests = method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming';
    const streamsResponses = method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming';
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: streamsRequests,
      responseStream: streamsResponses,
      requestSerialize: serializer(method.input),
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
      originalName: method.name,
    } as MethodDefinition<unknown, unknown>;
  }
  return definition;
}

/**
 * Encodes a message, or a plain init object (`create` returns a message as is and makes one of an
 * init object). Bytes pass through untouched: a handler may answer with an encoding it made and
 * cached already (src/rpc/wire-cache.ts).
 */
function serializer<Desc extends DescMessage>(schema: Desc) {
  return (value: unknown): Buffer => {
    if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    return Buffer.from(toBinary(schema, create(schema, value as MessageShape<Desc>)));
  };
}

function deserializer<Desc extends DescMessage>(schema: Desc) {
  return (bytes: Buffer): MessageShape<Desc> => fromBinary(schema, bytes);
}
