import type { VmprocError } from '../errors.js';
import { EventFloors } from './event-floors.js';
import { EventHistory } from './event-history.js';
import { type EventFilter, type EventStreamItem, eventPredicate, type ProcessEvent, type ProgressMarker, type UnsequencedEvent } from './events.js';
import { Subscription } from './subscription.js';

/** How often, at most, a filtered watcher hears of events it did not want. */
export const PROGRESS_INTERVAL_MS = 1000;

export interface EventExchangeOptions {
  readonly historyLimit: number;
  readonly subscriberBufferLimit: number;
  /** The last sequence already used (numbering continues from here, e.g. after a restart). */
  readonly initialSequence?: number;
  /** Retained events to start from, oldest first, increasing, ending at or before initialSequence. */
  readonly initialHistory?: readonly ProcessEvent[];
  readonly initialFloors?: EventFloors;
  /** Runs `callback` after `ms` (the progress rounds); setTimeout by default. */
  readonly schedule?: (ms: number, callback: () => void) => void;
  /** Told of every watcher cut off (metrics). */
  readonly onWatcherCutOff?: () => void;
}

export interface EventSubscribeOptions extends EventFilter {
  /** Replay retained events after this sequence first. */
  readonly afterSequence?: number;
}

/**
 * The one place lifecycle events are numbered and fanned out, with the exit exchange's rules:
 * events are assigned a sequence, recorded, then delivered strictly in sequence order; history is
 * a bounded ring; a watcher that falls behind is cut off. Filtered watchers also get progress
 * markers, at most once per PROGRESS_INTERVAL_MS and at the end of a replay.
 */
export class EventExchange {
  readonly #options: EventExchangeOptions;
  readonly #history: EventHistory;
  readonly #subscribers = new Set<EventSubscription>();
  #assigned: number;
  #sequence: number;
  readonly #early = new Map<number, ProcessEvent>();
  #closedWith: VmprocError | undefined;
  #progressDue = false;

  constructor(options: EventExchangeOptions) {
    if (options.historyLimit < 1 || options.subscriberBufferLimit < 1) throw new RangeError('limits must be positive');
    this.#options = options;
    this.#sequence = options.initialSequence ?? 0;
    this.#assigned = this.#sequence;
    const history = options.initialHistory ?? [];
    this.#history = new EventHistory(options.historyLimit, history, options.initialFloors ?? new EventFloors());
    // Numbering past the newest retained event (a jump after a host crash): what lies between is unknown.
    const newest = history.at(-1)?.sequence ?? 0;
    if (this.#sequence > newest && this.#sequence > this.#history.floors.all) this.#history.floors.droppedAllUpTo(this.#sequence);
  }

  /** The sequence of the latest published event, 0 before the first. */
  get latestSequence(): number {
    return this.#sequence;
  }

  /** The oldest cursor every watcher may resume from: events after it are all retained. */
  get retainedAfter(): number {
    return this.#history.floors.all;
  }

  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  /** Numbers an event without delivering it, so it can be recorded first; deliver() it afterwards. */
  assign(event: UnsequencedEvent): ProcessEvent {
    return Object.freeze({ ...event, sequence: ++this.#assigned });
  }

  /** Delivers assigned events in sequence order, holding back any that arrive early. */
  deliver(event: ProcessEvent): void {
    if (event.sequence <= this.#sequence || event.sequence > this.#assigned) {
      throw new RangeError(`event sequence ${event.sequence} was not assigned or was already delivered`);
    }
    this.#early.set(event.sequence, event);
    let skipped = false;
    for (let next = this.#early.get(this.#sequence + 1); next; next = this.#early.get(this.#sequence + 1)) {
      this.#early.delete(next.sequence);
      this.#sequence = next.sequence;
      this.#history.append(next);
      for (const subscriber of this.#subscribers) if (!subscriber.offer(next)) skipped = true;
    }
    if (skipped) this.#scheduleProgress();
  }

  /**
   * Starts a subscription: first the retained events after `afterSequence` (if given), then a
   * progress marker if the replay ended before the latest sequence, then live events, with no gap
   * and no duplicate. Throws `out-of-range` for a cursor outside the retained history.
   */
  subscribe(options: EventSubscribeOptions = {}): EventSubscription {
    if (this.#closedWith) throw this.#closedWith;
    const accepts = eventPredicate(options);
    const subscription: EventSubscription = new EventSubscription(accepts, this.#options.subscriberBufferLimit, () => this.#subscribers.delete(subscription), this.#options.onWatcherCutOff);
    if (options.afterSequence !== undefined) {
      const replayed = this.#history.after(options.afterSequence, this.#sequence, options);
      subscription.replay(replayed);
      const lastWanted = accepts ? replayed.findLast(accepts) : replayed.at(-1);
      if (this.#sequence > (lastWanted?.sequence ?? options.afterSequence)) subscription.progress(this.#sequence);
    }
    this.#subscribers.add(subscription);
    return subscription;
  }

  /** Ends every subscription with `error` and refuses new ones with it. */
  closeAll(error: VmprocError): void {
    this.#closedWith = error;
    for (const subscriber of [...this.#subscribers]) subscriber.fail(error);
  }

  #scheduleProgress(): void {
    if (this.#progressDue) return;
    this.#progressDue = true;
    const schedule = this.#options.schedule ?? ((ms, callback) => setTimeout(callback, ms).unref());
    schedule(PROGRESS_INTERVAL_MS, () => {
      this.#progressDue = false;
      for (const subscriber of this.#subscribers) subscriber.flushProgress();
    });
  }
}

/** A watcher's queue of events, and of progress markers when its filter skips some. */
export class EventSubscription extends Subscription<EventStreamItem> {
  /** The latest sequence skipped since the last item this watcher was sent. */
  #skipped: number | undefined;

  constructor(accepts: ((event: ProcessEvent) => boolean) | undefined, limit: number, detach: () => void, onCutOff?: () => void) {
    super({
      ...(accepts ? { accepts: (item: EventStreamItem) => item.kind !== 'progress' && accepts(item) } : {}),
      limit,
      name: 'event watcher',
      detach,
      ...(onCutOff ? { onCutOff } : {}),
    });
  }

  override offer(item: EventStreamItem): boolean {
    const wanted = super.offer(item);
    this.#skipped = wanted ? undefined : item.sequence;
    return wanted;
  }

  /** Sends a marker for what was skipped since the last item, if anything was. */
  flushProgress(): void {
    if (this.#skipped !== undefined) this.progress(this.#skipped);
  }

  /** Queues a progress marker at `sequence`, in place of one still queued last. */
  progress(sequence: number): void {
    this.#skipped = undefined;
    const marker: ProgressMarker = { kind: 'progress', sequence };
    this.push(marker, (last) => last.kind === 'progress');
  }
}
