import { VmprocError } from '../errors.js';
import { EventFloors } from './event-floors.js';
import type { EventFilter, ProcessEvent } from './events.js';

/**
 * The retained events, oldest first, at most `limit`, and the floors of those dropped. Replay
 * after a cursor is exact: every retained event after it, or `out-of-range` when one the
 * watcher would have received is gone.
 */
export class EventHistory {
  readonly #limit: number;
  readonly #events: ProcessEvent[] = [];
  readonly floors: EventFloors;

  constructor(limit: number, initial: readonly ProcessEvent[] = [], floors = new EventFloors()) {
    if (limit < 1) throw new RangeError('limit must be positive');
    this.#limit = limit;
    this.floors = floors;
    for (const event of initial) this.append(event);
  }

  append(event: ProcessEvent): void {
    this.#events.push(event);
    if (this.#events.length > this.#limit) this.floors.dropped(this.#events.shift()!);
  }

  get oldest(): ProcessEvent | undefined {
    return this.#events[0];
  }

  /**
   * The retained events after `after`, oldest first, for a watcher with `filter`; `latest` is the
   * newest sequence published. Throws `out-of-range` for a cursor past `latest`, or one before an
   * event the filter lets through that is no longer retained.
   */
  after(after: number, latest: number, filter: EventFilter): ProcessEvent[] {
    if (after > latest) {
      throw new VmprocError('out-of-range', `after_sequence ${after} is newer than the latest event sequence ${latest}; resync with ListProcesses`);
    }
    const floor = this.floors.floorFor(filter);
    if (after < floor) {
      const filtered = (filter.sandboxIds?.length ?? 0) > 0 || (filter.kinds?.length ?? 0) > 0;
      throw new VmprocError(
        'out-of-range',
        `after_sequence ${after} is older than the retained event history: ${filtered ? 'an event this filter lets through' : 'event'} ` +
          `${floor} is no longer kept (--event-history); resync with ListProcesses and watch from its event_sequence`,
      );
    }
    // Sequences increase but may jump (after a host crash), so search.
    let low = 0;
    let high = this.#events.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (this.#events[mid]!.sequence <= after) low = mid + 1;
      else high = mid;
    }
    return this.#events.slice(low);
  }
}
