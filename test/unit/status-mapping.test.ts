import { describe, expect, it } from '@jest/globals';
import { Metadata, status } from '@grpc/grpc-js';
import { asVmprocError, type ErrorCode, isVmprocError, VmprocError } from '../../src/errors.js';
import { toGrpcStatus } from '../../src/rpc/status-mapping.js';

/** `satisfies` makes the compiler fail this test file when an ErrorCode is added without a row here. */
const EXPECTED = {
  'invalid-argument': status.INVALID_ARGUMENT,
  'not-found': status.NOT_FOUND,
  'permission-denied': status.PERMISSION_DENIED,
  'already-exists': status.ALREADY_EXISTS,
  'failed-precondition': status.FAILED_PRECONDITION,
  'deadline-exceeded': status.DEADLINE_EXCEEDED,
  cancelled: status.CANCELLED,
  aborted: status.ABORTED,
  'out-of-range': status.OUT_OF_RANGE,
  'resource-exhausted': status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  internal: status.INTERNAL,
} satisfies Record<ErrorCode, status>;

describe('toGrpcStatus', () => {
  it.each(Object.entries(EXPECTED) as Array<[ErrorCode, status]>)('maps %s to gRPC status %i with the message as details', (code, grpcCode) => {
    const result = toGrpcStatus(new VmprocError(code, `something ${code}`));
    expect(result.code).toBe(grpcCode);
    expect(result.details).toBe(`something ${code}`);
    expect(result.metadata).toBeInstanceOf(Metadata);
  });

  it('maps distinct codes to distinct statuses', () => {
    const codes = Object.keys(EXPECTED) as ErrorCode[];
    expect(new Set(codes.map((code) => toGrpcStatus(new VmprocError(code, 'x')).code)).size).toBe(codes.length);
  });

  it('maps a plain Error to INTERNAL, keeping its message', () => {
    expect(toGrpcStatus(new Error('boom'))).toMatchObject({ code: status.INTERNAL, details: 'internal error: boom' });
    expect(toGrpcStatus(new TypeError('bad type'))).toMatchObject({ code: status.INTERNAL, details: 'internal error: bad type' });
  });

  it('maps non-Error throwables to INTERNAL, never UNKNOWN', () => {
    expect(toGrpcStatus('just a string')).toMatchObject({ code: status.INTERNAL, details: 'internal error: just a string' });
    expect(toGrpcStatus(undefined).code).toBe(status.INTERNAL);
    expect(toGrpcStatus({ code: 'not-found' }).code).toBe(status.INTERNAL);
  });

  it('does not trust an error that merely looks like a VmprocError', () => {
    const lookalike = Object.assign(new Error('x'), { code: 'not-found', name: 'VmprocError' });
    expect(toGrpcStatus(lookalike).code).toBe(status.INTERNAL);
  });
});

describe('errors', () => {
  it('asVmprocError keeps a VmprocError and wraps anything else as internal with its cause', () => {
    const domain = new VmprocError('not-found', 'nope');
    expect(asVmprocError(domain, 'ctx')).toBe(domain);
    const cause = new Error('disk on fire');
    const wrapped = asVmprocError(cause, 'reading records');
    expect(wrapped).toBeInstanceOf(VmprocError);
    expect(wrapped.code).toBe('internal');
    expect(wrapped.message).toBe('reading records: disk on fire');
    expect(wrapped.cause).toBe(cause);
    expect(asVmprocError(42, 'ctx').message).toBe('ctx: 42');
    expect(toGrpcStatus(wrapped).code).toBe(status.INTERNAL);
  });

  it('isVmprocError checks the class and, optionally, the code', () => {
    const error = new VmprocError('aborted', 'x');
    expect(error.name).toBe('VmprocError');
    expect(isVmprocError(error)).toBe(true);
    expect(isVmprocError(error, 'aborted')).toBe(true);
    expect(isVmprocError(error, 'internal')).toBe(false);
    expect(isVmprocError(new Error('x'))).toBe(false);
  });
});
