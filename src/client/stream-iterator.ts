import type { ClientReadableStream } from '@grpc/grpc-js';

/** How many received messages may wait for the consumer before the stream is paused. */
const ITERATOR_HIGH_WATER = 64;

/**
 * Turns a grpc-js server stream into an async iterator that keeps its error and honours
 * backpressure. Leaving the loop (return) or aborting `signal` cancels the call: grpc-js would
 * otherwise keep the stream open. The call's status error is thrown from next() once the messages
 * received before it were consumed, even when it arrived before the first next(); a consumer that
 * falls behind pauses the stream, so HTTP/2 flow control pushes back on the server instead of
 * buffering here.
 */
export class StreamIterator<T> implements AsyncIterator<T> {
  readonly #call: ClientReadableStream<T>;
  readonly #signal: AbortSignal | undefined;
  readonly #queue: T[] = [];
  #error: unknown;
  #ended = false;
  #cancelled = false;
  #waiter: { resolve: (result: IteratorResult<T>) => void; reject: (error: unknown) => void } | undefined;
  readonly #onAbort = () => this.#finish();

  constructor(call: ClientReadableStream<T>, signal: AbortSignal | undefined) {
    this.#call = call;
    this.#signal = signal;
    call.on('data', (message: T) => {
      this.#queue.push(message);
      if (this.#queue.length >= ITERATOR_HIGH_WATER) call.pause();
      this.#wake();
    });
    call.on('error', (error: unknown) => {
      if (this.#cancelled) return;
      this.#error ??= error;
      this.#ended = true;
      this.#wake();
    });
    call.on('end', () => {
      this.#ended = true;
      this.#wake();
    });
    if (signal?.aborted) this.#finish();
    else signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  next(): Promise<IteratorResult<T>> {
    const message = this.#queue.shift();
    if (message !== undefined) {
      if (this.#queue.length < ITERATOR_HIGH_WATER / 2 && this.#call.isPaused()) this.#call.resume();
      return Promise.resolve({ value: message, done: false });
    }
    if (this.#ended) {
      const error = this.#error;
      this.#error = undefined;
      this.#finish();
      return error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  async return(): Promise<IteratorResult<T>> {
    this.#finish();
    return { value: undefined, done: true };
  }

  #wake(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    this.#waiter = undefined;
    this.next().then(waiter.resolve, waiter.reject);
  }

  /** Cancels the call; what was not yet consumed is dropped. A cancelled call's error is not ours to throw. */
  #finish(): void {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    if (!this.#ended) {
      this.#ended = true;
      this.#cancelled = true;
      this.#call.cancel();
    }
    this.#queue.length = 0;
    this.#wake();
  }
}
