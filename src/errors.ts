/**
 * The daemon's closed set of domain errors. Every failure that leaves the supervisor is a
 * VmprocError with one of these codes; the RPC edge maps them to gRPC status in one place
 * (src/rpc/status-mapping.ts). Unknown failures are wrapped as `internal` with their cause kept.
 */
export type ErrorCode =
  | 'invalid-argument'
  | 'permission-denied'
  | 'not-found'
  | 'already-exists'
  | 'failed-precondition'
  | 'deadline-exceeded'
  | 'cancelled'
  | 'aborted'
  | 'out-of-range'
  | 'resource-exhausted'
  | 'unavailable'
  | 'internal';

export class VmprocError extends Error {
  override readonly name = 'VmprocError';

  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isVmprocError(error: unknown, code?: ErrorCode): error is VmprocError {
  return error instanceof VmprocError && (code === undefined || error.code === code);
}

/** Keeps a VmprocError as it is; wraps anything else as `internal`, keeping it as the cause. */
export function asVmprocError(error: unknown, context: string): VmprocError {
  if (error instanceof VmprocError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new VmprocError('internal', `${context}: ${detail}`, { cause: error });
}
