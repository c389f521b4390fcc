import { VmprocError } from '../errors.js';

export interface SubscriptionOptions<T> {
  /** Which items this consumer wants; all when undefined. */
  readonly accepts?: (item: T) => boolean;
  /** How many live items may wait before the consumer is cut off. */
  readonly limit: number;
  /** What to call the consumer in the cut-off message ('exit watcher'). */
  readonly name: string;
  /** Removes the subscription from its exchange. */
  readonly detach: () => void;
  readonly onCutOff?: () => void;
}

/**
 * A bounded queue of items for one consumer of an exchange. Iterate it (or call next()) to receive
 * items in order; iteration ends with the error that ended the subscription, if any. Offering
 * never blocks: a consumer `limit` items behind is ended with `resource-exhausted`.
 */
export class Subscription<T> implements AsyncIterable<T> {
  readonly #options: SubscriptionOptions<T>;
  readonly #queue: T[] = [];
  /** Queued replayed items, at the head of the queue: they come from the retained history, which
   * is bounded already, so they do not count against the live buffer limit. */
  #replayed = 0;
  #waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  #ended = false;
  #error: VmprocError | undefined;
  readonly #endListeners = new Set<() => void>();

  constructor(options: SubscriptionOptions<T>) {
    this.#options = options;
  }

  /** Items received but not yet taken. */
  get pending(): number {
    return this.#queue.length;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** True when the consumer wants `item`. */
  accepts(item: T): boolean {
    return this.#options.accepts?.(item) ?? true;
  }

  /** Queues retained items ahead of any live one. */
  replay(items: readonly T[]): void {
    for (const item of items) {
      if (!this.accepts(item)) continue;
      this.#queue.push(item);
      this.#replayed++;
    }
  }

  /** Called by the exchange for a live item; never blocks. Returns whether the consumer wanted it. */
  offer(item: T): boolean {
    if (this.#ended || !this.accepts(item)) return false;
    this.push(item);
    return true;
  }

  /**
   * Queues `item` for the consumer whatever its filter. `replaces` may pick a queued last item the
   * new one makes redundant (a progress marker behind another one), so bursts cost one slot.
   */
  protected push(item: T, replaces?: (last: T) => boolean): void {
    if (this.#ended) return;
    if (this.#waiter) {
      const { resolve } = this.#waiter;
      this.#waiter = undefined;
      resolve({ value: item, done: false });
      return;
    }
    const last = this.#queue.length > this.#replayed ? this.#queue.at(-1) : undefined;
    if (last !== undefined && replaces?.(last)) {
      this.#queue[this.#queue.length - 1] = item;
      return;
    }
    if (this.#queue.length - this.#replayed >= this.#options.limit) {
      this.#options.onCutOff?.();
      this.fail(
        new VmprocError(
          'resource-exhausted',
          `${this.#options.name} fell more than ${this.#options.limit} events behind and was cut off; ` +
            'reconnect with after_sequence set to the last sequence you received',
        ),
      );
      return;
    }
    this.#queue.push(item);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#queue.length > 0) {
      const item = this.#queue.shift()!;
      if (this.#replayed > 0) this.#replayed--;
      return Promise.resolve({ value: item, done: false });
    }
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    if (this.#waiter) return Promise.reject(new Error('Subscription.next() called while another next() is pending'));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Ends the subscription with an error: queued items are dropped, next() rejects. */
  fail(error: VmprocError): void {
    if (this.#ended) return;
    this.#error = error;
    this.#queue.length = 0;
    this.#replayed = 0;
    this.#end();
    this.#waiter?.reject(error);
    this.#waiter = undefined;
  }

  /** Ends the subscription normally (the consumer went away). */
  close(): void {
    if (this.#ended) return;
    this.#end();
    this.#waiter?.resolve({ value: undefined, done: true });
    this.#waiter = undefined;
  }

  /** Calls `listener` once when the subscription ends (at once if it has); returns an unsubscribe. */
  onEnded(listener: () => void): () => void {
    if (this.#ended) {
      listener();
      return () => {};
    }
    this.#endListeners.add(listener);
    return () => this.#endListeners.delete(listener);
  }

  #end(): void {
    this.#ended = true;
    this.#options.detach();
    for (const listener of [...this.#endListeners]) listener();
    this.#endListeners.clear();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => this.next(),
      return: async () => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }
}
