import { status } from '@grpc/grpc-js';
import type {
  ListProcessesRequestSchema,
  ListProcessesResponse,
  ProcessExit,
  WatchExitsRequestSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { Backoff, type BackoffOptions, sleep } from './backoff.js';
import { ExitHistoryGapError, isRpcError } from './rpc-error.js';
import type { Init, RpcOptions, StreamOptions } from './call-options.js';

export interface ReconnectingWatchOptions {
  /** Only exits of these sandboxes (all when empty). */
  readonly sandboxIds?: readonly string[];
  /**
   * Deliver exits with a sequence greater than this one (e.g. a cursor saved earlier, or a
   * ListProcesses `exitSequence`). Default: the daemon's latest sequence when iteration starts,
   * taken with ListProcesses, so that even the first reconnect resumes without a gap.
   */
  readonly startAfter?: bigint;
  /** Ends the iteration (quietly) and cancels the call or the wait between attempts. */
  readonly signal?: AbortSignal;
  readonly backoff?: BackoffOptions;
  /** Called before each wait to reconnect, e.g. to log it. */
  readonly onReconnect?: (event: ReconnectEvent) => void;
}

export interface ReconnectEvent {
  /** What ended the previous attempt: an RpcError, or undefined when the stream just ended. */
  readonly error: unknown;
  /** Consecutive failed attempts, this one included. */
  readonly attempt: number;
  readonly delayMs: number;
  /** The sequence the next attempt resumes after. */
  readonly cursor: bigint | undefined;
}

/** What the watcher needs from a client (VmProcessClient has it). */
export interface ExitWatchSource {
  watchExits(request: Init<typeof WatchExitsRequestSchema>, options: StreamOptions): AsyncIterable<ProcessExit>;
  /** One ListProcesses call (one page). */
  listProcessesPage(request: Init<typeof ListProcessesRequestSchema>, options?: RpcOptions): Promise<ListProcessesResponse>;
}

/**
 * Statuses after which resuming from the cursor is safe: the daemon went away or restarted
 * (UNAVAILABLE, also a dropped connection), or this watcher lagged too far behind
 * (RESOURCE_EXHAUSTED). Anything else (OUT_OF_RANGE above all) needs the caller.
 */
const RESUMABLE = new Set<number>([status.UNAVAILABLE, status.RESOURCE_EXHAUSTED]);

/**
 * WatchExits that survives connection loss and daemon restarts: it tracks the sequence of the last
 * exit it delivered (`cursor`) and calls again with `after_sequence = cursor` after bounded jittered
 * backoff, so the consumer sees every exit exactly once across reconnects. A new call waits for
 * the channel to reconnect (`waitForReady`), so a long outage costs one onReconnect, not one per
 * attempt; `maxAttempts` counts calls that failed. When the daemon no
 * longer retains exits after the cursor, iteration throws ExitHistoryGapError: resync with
 * ListProcesses. Leaving the loop cancels the call. Iterating again continues after the cursor.
 */
export class ReconnectingExitWatch implements AsyncIterable<ProcessExit> {
  readonly #source: ExitWatchSource;
  readonly #options: ReconnectingWatchOptions;
  #cursor: bigint | undefined;
  #iterating = false;

  constructor(source: ExitWatchSource, options: ReconnectingWatchOptions = {}) {
    this.#source = source;
    this.#options = options;
    this.#cursor = options.startAfter;
  }

  /** The sequence of the last exit delivered (or the starting point before the first). Save it to resume later. */
  get cursor(): bigint | undefined {
    return this.#cursor;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<ProcessExit, void, undefined> {
    if (this.#iterating) throw new Error('ReconnectingExitWatch: already being iterated');
    this.#iterating = true;
    const outer = this.#options.signal;
    const backoff = new Backoff(this.#options.backoff);
    const resetAfterMs = this.#options.backoff?.maxDelayMs ?? 5_000;
    try {
      while (!outer?.aborted) {
        const attempt = new AbortController();
        const onAbort = () => attempt.abort();
        outer?.addEventListener('abort', onAbort, { once: true });
        // When the daemon's headers came (it sends them as soon as the subscription exists): the
        // time a failing attempt spends connecting does not make it look like a stream that was up.
        let establishedAt: number | undefined;
        let failure: unknown;
        try {
          // waitForReady: while the daemon is away, an attempt waits for the channel to reconnect
          // (grpc-js retries the connection with its own backoff) instead of failing at once.
          const callOptions = { signal: attempt.signal, waitForReady: true };
          // The latest sequence: one page of one process carries it.
          this.#cursor ??= (await this.#source.listProcessesPage({ pageSize: 1 }, callOptions)).exitSequence;
          const request = { sandboxIds: [...(this.#options.sandboxIds ?? [])], afterSequence: this.#cursor };
          const streamOptions = { ...callOptions, onHeaders: () => (establishedAt = Date.now()) };
          for await (const exit of this.#source.watchExits(request, streamOptions)) {
            if (exit.sequence <= this.#cursor) continue; // never twice, whatever a server replays
            this.#cursor = exit.sequence;
            backoff.reset();
            yield exit;
          }
        } catch (error) {
          if (outer?.aborted) return;
          if (isRpcError(error, status.OUT_OF_RANGE)) throw new ExitHistoryGapError(this.#cursor ?? 0n, error);
          if (!isRpcError(error) || !RESUMABLE.has(error.code)) throw error;
          failure = error;
        } finally {
          outer?.removeEventListener('abort', onAbort);
          attempt.abort();
        }
        if (outer?.aborted) return;
        // A stream that stayed up a while was a success: the next failure starts a fresh backoff.
        if (establishedAt !== undefined && Date.now() - establishedAt >= resetAfterMs) backoff.reset();
        const delayMs = backoff.next();
        if (delayMs === undefined) throw failure ?? new Error('WatchExits kept ending');
        this.#options.onReconnect?.({ error: failure, attempt: backoff.attempts, delayMs, cursor: this.#cursor });
        if (!(await sleep(delayMs, outer))) return;
      }
    } finally {
      this.#iterating = false;
    }
  }
}
