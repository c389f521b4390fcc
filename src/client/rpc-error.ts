import type { Metadata, ServiceError } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';

/** A gRPC failure as the client sees it: `code` is a grpc-js `status`, `details` the server's message. */
export type RpcError = ServiceError;

/** gRPC status codes (grpc-js's `status` enum), so callers need not import grpc-js for them. */
export { status as Status };

/**
 * Whether `error` is a gRPC failure, optionally with status `code`. Also true for this client's own
 * typed errors that stand for one (ExitHistoryGapError is OUT_OF_RANGE).
 */
export function isRpcError(error: unknown, code?: status): error is RpcError {
  if (!(error instanceof Error)) return false;
  const candidate = error as Partial<ServiceError>;
  // Duck-typed, not instanceof: an application may load two copies of grpc-js. A numeric `code`
  // also tells it apart from Node's system errors, whose codes are strings.
  if (typeof candidate.code !== 'number' || typeof candidate.details !== 'string' || typeof candidate.metadata !== 'object') return false;
  return code === undefined || candidate.code === code;
}

/** `NOT_FOUND` for status.NOT_FOUND; the number itself for a code grpc-js does not know. */
export function statusName(code: number): string {
  return status[code] ?? String(code);
}

/** A watch answered OUT_OF_RANGE at `cursor`: what it would have received next is no longer retained. */
abstract class HistoryGapError extends Error implements RpcError {
  readonly code = status.OUT_OF_RANGE;
  readonly details: string;
  readonly metadata: Metadata;

  constructor(
    what: string,
    /** The last sequence the watcher received (the `after_sequence` the daemon refused). */
    readonly cursor: bigint,
    cause: RpcError,
  ) {
    super(`${what} history gap after sequence ${cursor}: ${cause.details}; resync with ListProcesses`, { cause });
    this.details = cause.details;
    this.metadata = cause.metadata;
  }
}

/**
 * WatchExits answered OUT_OF_RANGE: the daemon no longer retains exits right after `cursor` (or never
 * had that many, e.g. its state was wiped). Exits may have been missed, so a watcher cannot simply
 * resume: take a fresh snapshot with ListProcesses and watch again after its `exitSequence`.
 */
export class ExitHistoryGapError extends HistoryGapError {
  override readonly name = 'ExitHistoryGapError';

  constructor(cursor: bigint, cause: RpcError) {
    super('exit', cursor, cause);
  }
}

/**
 * WatchEvents answered OUT_OF_RANGE: an event this watcher would have received after `cursor` (the
 * last sequence it received, event or progress marker) is no longer retained. Take a fresh
 * snapshot with ListProcesses and watch again after its `eventSequence`.
 */
export class EventHistoryGapError extends HistoryGapError {
  override readonly name = 'EventHistoryGapError';

  constructor(cursor: bigint, cause: RpcError) {
    super('event', cursor, cause);
  }
}
