import type { DescMessage, MessageInitShape } from '@bufbuild/protobuf';

/** Options of one call of the client. */
export interface RpcOptions {
  /** Deadline for this call, in milliseconds from now (replaces the default; Infinity for none). */
  readonly timeoutMs?: number;
  /** Aborting cancels the call (the promise rejects with CANCELLED; a stream just ends). */
  readonly signal?: AbortSignal;
  /**
   * Wait (within the deadline) for the channel to connect instead of failing at once with
   * UNAVAILABLE while the daemon is unreachable. Default false.
   */
  readonly waitForReady?: boolean;
}

/** A stream's options: also told when the server's headers arrive, i.e. the stream is up. */
export interface StreamOptions extends RpcOptions {
  readonly onHeaders?: () => void;
}

/** A request as a message or a plain object, e.g. `{ sandboxId: 'sb-1' }`. */
export type Init<Desc extends DescMessage> = MessageInitShape<Desc>;
