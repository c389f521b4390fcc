import { status } from '@grpc/grpc-js';
import { Backoff, type BackoffOptions, sleep } from './backoff.js';
import { isRpcError, type RpcError } from './rpc-error.js';
import type { StreamOptions } from './call-options.js';

export interface ReconnectEvent {
  /** What ended the previous attempt: an RpcError, or undefined when the stream just ended. */
  readonly error: unknown;
  /** Consecutive failed attempts, this one included. */
  readonly attempt: number;
  readonly delayMs: number;
  /** The sequence the next attempt resumes after. */
  readonly cursor: bigint | undefined;
}

/** What every reconnecting watcher takes. */
export interface ReconnectingOptions {
  /** Ends the iteration (quietly) and cancels the call or the wait between attempts. */
  readonly signal?: AbortSignal;
  readonly backoff?: BackoffOptions;
  /** Called before each wait to reconnect, e.g. to log it. */
  readonly onReconnect?: (event: ReconnectEvent) => void;
}

/**
 * Statuses after which resuming from the cursor is safe: the daemon went away or restarted
 * (UNAVAILABLE, also a dropped connection), or this watcher lagged too far behind
 * (RESOURCE_EXHAUSTED). Anything else (OUT_OF_RANGE above all) needs the caller.
 */
const RESUMABLE = new Set<number>([status.UNAVAILABLE, status.RESOURCE_EXHAUSTED]);

/** How one kind of watch is called and resumed. */
export interface WatchProtocol<Item> {
  /** What the watch is called in errors ('WatchExits'). */
  readonly name: string;
  /** The latest sequence now: where a watch with no cursor starts. */
  latest(options: { signal: AbortSignal; waitForReady: boolean }): Promise<bigint>;
  /** One call, resuming after `cursor`. */
  open(cursor: bigint, options: StreamOptions): AsyncIterable<Item>;
  sequenceOf(item: Item): bigint;
  /** Whether the consumer sees `item` (its sequence advances the cursor either way). */
  delivers(item: Item): boolean;
  /** The error for OUT_OF_RANGE at `cursor`: the history no longer reaches back. */
  gap(cursor: bigint, error: RpcError): Error;
}

/**
 * A watch that survives connection loss and daemon restarts: it tracks the sequence of the last
 * item it received (`cursor`) and calls again with `after_sequence = cursor` after bounded jittered
 * backoff, so the consumer sees every item exactly once across reconnects. A new call waits for
 * the channel to reconnect (`waitForReady`), so a long outage costs one onReconnect, not one per
 * attempt; `maxAttempts` counts calls that failed. Leaving the loop cancels the call. Iterating
 * again continues after the cursor.
 */
export class ReconnectingWatch<Item> implements AsyncIterable<Item> {
  readonly #protocol: WatchProtocol<Item>;
  readonly #options: ReconnectingOptions;
  #cursor: bigint | undefined;
  #iterating = false;

  constructor(protocol: WatchProtocol<Item>, options: ReconnectingOptions, startAfter: bigint | undefined) {
    this.#protocol = protocol;
    this.#options = options;
    this.#cursor = startAfter;
  }

  /** The sequence of the last item received (or the starting point before the first). Save it to resume later. */
  get cursor(): bigint | undefined {
    return this.#cursor;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Item, void, undefined> {
    if (this.#iterating) throw new Error(`reconnecting ${this.#protocol.name}: already being iterated`);
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
          this.#cursor ??= await this.#protocol.latest(callOptions);
          const streamOptions = { ...callOptions, onHeaders: () => (establishedAt = Date.now()) };
          for await (const item of this.#protocol.open(this.#cursor, streamOptions)) {
            const sequence = this.#protocol.sequenceOf(item);
            if (sequence <= this.#cursor) continue; // never twice, whatever a server replays
            this.#cursor = sequence;
            backoff.reset();
            if (this.#protocol.delivers(item)) yield item;
          }
        } catch (error) {
          if (outer?.aborted) return;
          if (isRpcError(error, status.OUT_OF_RANGE)) throw this.#protocol.gap(this.#cursor ?? 0n, error);
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
        if (delayMs === undefined) throw failure ?? new Error(`${this.#protocol.name} kept ending`);
        this.#options.onReconnect?.({ error: failure, attempt: backoff.attempts, delayMs, cursor: this.#cursor });
        if (!(await sleep(delayMs, outer))) return;
      }
    } finally {
      this.#iterating = false;
    }
  }
}
