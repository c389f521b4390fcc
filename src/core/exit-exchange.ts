import { VmprocError } from '../errors.js';
import type { ProcessExitEvent, UnsequencedExit } from './domain.js';
import type { ExitObserver } from './observer.js';
import { Subscription } from './subscription.js';

export type { UnsequencedExit };

export interface ExitExchangeOptions {
  /** How many past exits are kept for replay. */
  readonly historyLimit: number;
  /** How many undelivered exits one subscriber may have before it is cut off. */
  readonly subscriberBufferLimit: number;
  /** The last sequence already used (continues numbering, e.g. after a restart). */
  readonly initialSequence?: number;
  /** Retained history to start from, oldest first, increasing, ending at or before initialSequence. */
  readonly initialHistory?: readonly ProcessExitEvent[];
  /** Told of every exit delivered and every subscriber cut off (metrics). */
  readonly observer?: ExitObserver;
}

export interface SubscribeOptions {
  /** Only these sandboxes; all when empty or undefined. */
  readonly sandboxIds?: readonly string[];
  /** Replay retained exits after this sequence first. */
  readonly afterSequence?: number;
}

/**
 * The one place exits are numbered and fanned out (as containerd's exchange). Publishing never
 * blocks and never grows memory without bound: history is a ring of `historyLimit` events and a
 * subscriber that falls `subscriberBufferLimit` events behind is ended with `resource-exhausted`.
 */
export class ExitExchange {
  readonly #historyLimit: number;
  readonly #bufferLimit: number;
  readonly #history: ProcessExitEvent[] = [];
  readonly #subscribers = new Set<ExitSubscription>();
  /** The last sequence handed out by assign(). */
  #assigned: number;
  /** The last sequence delivered; deliveries happen strictly in sequence order. */
  #sequence: number;
  /** Assigned events delivered out of order, waiting for their predecessors. */
  readonly #early = new Map<number, ProcessExitEvent>();
  #closedWith: VmprocError | undefined;
  readonly #observer: ExitObserver | undefined;

  constructor(options: ExitExchangeOptions) {
    if (options.historyLimit < 1 || options.subscriberBufferLimit < 1) throw new RangeError('limits must be positive');
    this.#historyLimit = options.historyLimit;
    this.#bufferLimit = options.subscriberBufferLimit;
    this.#sequence = options.initialSequence ?? 0;
    this.#assigned = this.#sequence;
    this.#observer = options.observer;
    const history = options.initialHistory ?? [];
    this.#history.push(...history.slice(-this.#historyLimit));
  }

  /** The sequence of the latest published exit, 0 before the first. */
  get latestSequence(): number {
    return this.#sequence;
  }

  /** Every exit after this sequence is retained: the oldest cursor a watcher can resume from. */
  get retainedAfter(): number {
    return (this.#history[0]?.sequence ?? this.#sequence + 1) - 1;
  }

  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  /**
   * Numbers an exit without delivering it, so it can be recorded durably first; deliver() it
   * afterwards. Every assigned exit must be delivered, or later ones wait forever.
   */
  assign(exit: UnsequencedExit): ProcessExitEvent {
    return Object.freeze({ ...exit, sequence: ++this.#assigned });
  }

  /** Delivers assigned exits in sequence order, holding back any that arrive early. */
  deliver(event: ProcessExitEvent): void {
    if (event.sequence <= this.#sequence || event.sequence > this.#assigned) {
      throw new RangeError(`exit sequence ${event.sequence} was not assigned or was already delivered`);
    }
    this.#early.set(event.sequence, event);
    for (let next = this.#early.get(this.#sequence + 1); next; next = this.#early.get(this.#sequence + 1)) {
      this.#early.delete(next.sequence);
      this.#sequence = next.sequence;
      this.#history.push(next);
      if (this.#history.length > this.#historyLimit) this.#history.shift();
      this.#observer?.exitPublished?.(next);
      for (const subscriber of this.#subscribers) subscriber.offer(next);
    }
  }

  /**
   * Starts a subscription: first the retained exits after `afterSequence` (if given), then live
   * ones, with no gap and no duplicate. Throws `out-of-range` when the cursor is older than the
   * retained history or newer than the latest sequence.
   */
  subscribe(options: SubscribeOptions = {}): ExitSubscription {
    if (this.#closedWith) throw this.#closedWith;
    const filter = options.sandboxIds && options.sandboxIds.length > 0 ? new Set(options.sandboxIds) : undefined;
    const subscription = new ExitSubscription(filter, this.#bufferLimit, () => this.#subscribers.delete(subscription), () => this.#observer?.watcherCutOff?.());
    if (options.afterSequence !== undefined) {
      subscription.replay(this.#replayAfter(options.afterSequence));
    }
    this.#subscribers.add(subscription);
    return subscription;
  }

  /** Retained exits with a sequence greater than `after`, oldest first. */
  #replayAfter(after: number): ProcessExitEvent[] {
    if (after > this.#sequence) {
      throw new VmprocError(
        'out-of-range',
        `after_sequence ${after} is newer than the latest exit sequence ${this.#sequence}; resync with ListProcesses`,
      );
    }
    const oldest = this.#history[0]?.sequence ?? this.#sequence + 1;
    if (after < oldest - 1) {
      throw new VmprocError(
        'out-of-range',
        `after_sequence ${after} is older than the retained exit history (oldest retained is ${oldest}); resync with ListProcesses`,
      );
    }
    // Sequences are increasing but may jump (after a host crash, see src/daemon), so search.
    let low = 0;
    let high = this.#history.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (this.#history[mid]!.sequence <= after) low = mid + 1;
      else high = mid;
    }
    return this.#history.slice(low);
  }

  /** Ends every subscription with `error` (e.g. `unavailable` on shutdown) and refuses new ones with it. */
  closeAll(error: VmprocError): void {
    this.#closedWith = error;
    for (const subscriber of [...this.#subscribers]) subscriber.fail(error);
  }
}

/** An exit watcher's queue: the exits of the sandboxes it asked for (all when none). */
export class ExitSubscription extends Subscription<ProcessExitEvent> {
  constructor(filter: ReadonlySet<string> | undefined, limit: number, detach: () => void, onCutOff?: () => void) {
    super({
      ...(filter ? { accepts: (event: ProcessExitEvent) => filter.has(event.sandboxId) } : {}),
      limit,
      name: 'exit watcher',
      detach,
      ...(onCutOff ? { onCutOff } : {}),
    });
  }
}
