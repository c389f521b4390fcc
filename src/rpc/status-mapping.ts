import { Metadata, status, type StatusObject } from '@grpc/grpc-js';
import { type ErrorCode, VmprocError } from '../errors.js';

/** The one mapping from domain errors to gRPC status codes. */
const GRPC_CODE: Readonly<Record<ErrorCode, status>> = {
  'invalid-argument': status.INVALID_ARGUMENT,
  'permission-denied': status.PERMISSION_DENIED,
  'not-found': status.NOT_FOUND,
  'already-exists': status.ALREADY_EXISTS,
  'failed-precondition': status.FAILED_PRECONDITION,
  'deadline-exceeded': status.DEADLINE_EXCEEDED,
  cancelled: status.CANCELLED,
  aborted: status.ABORTED,
  'out-of-range': status.OUT_OF_RANGE,
  'resource-exhausted': status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  internal: status.INTERNAL,
};

/** A gRPC status for any failure: domain errors keep their code; anything else is INTERNAL. */
export function toGrpcStatus(error: unknown): StatusObject {
  if (error instanceof VmprocError) {
    return { code: GRPC_CODE[error.code], details: error.message, metadata: new Metadata() };
  }
  const detail = error instanceof Error ? error.message : String(error);
  return { code: status.INTERNAL, details: `internal error: ${detail}`, metadata: new Metadata() };
}
