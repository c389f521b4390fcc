import type { EventFilter, EventKind, ProcessEvent } from './events.js';

/** How many sandboxes the floors remember one by one; older ones share one floor. */
export const SANDBOX_FLOOR_LIMIT = 10_000;

/** EventFloors as plain JSON, for the journal. */
export interface EventFloorsJson {
  readonly all: number;
  readonly kinds: Readonly<Record<string, number>>;
  readonly sandboxes: ReadonlyArray<readonly [string, number]>;
  readonly forgotten: number;
  /** The floor of every kind not in `kinds`. */
  readonly otherKinds: number;
}

/**
 * What the retained history no longer holds, per sandbox and per kind: the highest sequence of
 * each that was dropped. A watcher's cursor is out of range only when an event it would have
 * received was dropped after it: a filtered watcher never fails for events it did not want.
 */
export class EventFloors {
  /** The highest sequence dropped, of any event. */
  #all = 0;
  readonly #kinds = new Map<EventKind, number>();
  /** In least-recently-raised order, at most SANDBOX_FLOOR_LIMIT. */
  readonly #sandboxes = new Map<string, number>();
  /** The highest floor of the sandboxes no longer remembered one by one. */
  #forgotten = 0;
  /** The floor of every kind not in #kinds (raised by droppedAllUpTo). */
  #otherKinds = 0;
  readonly #sandboxLimit: number;

  constructor(sandboxLimit = SANDBOX_FLOOR_LIMIT) {
    this.#sandboxLimit = sandboxLimit;
  }

  static fromJson(json: EventFloorsJson | undefined, sandboxLimit = SANDBOX_FLOOR_LIMIT): EventFloors {
    const floors = new EventFloors(sandboxLimit);
    if (!json) return floors;
    floors.#all = json.all;
    floors.#forgotten = json.forgotten;
    floors.#otherKinds = json.otherKinds;
    for (const [kind, sequence] of Object.entries(json.kinds)) floors.#kinds.set(kind as EventKind, sequence);
    for (const [sandboxId, sequence] of json.sandboxes) floors.#raiseSandbox(sandboxId, sequence);
    return floors;
  }

  toJson(): EventFloorsJson {
    return { all: this.#all, kinds: Object.fromEntries(this.#kinds), sandboxes: [...this.#sandboxes], forgotten: this.#forgotten, otherKinds: this.#otherKinds };
  }

  /** The highest sequence dropped, of any event (0: nothing ever was). */
  get all(): number {
    return this.#all;
  }

  /** `event` leaves the retained history. */
  dropped(event: ProcessEvent): void {
    this.#all = Math.max(this.#all, event.sequence);
    this.#kinds.set(event.kind, Math.max(this.#kinds.get(event.kind) ?? this.#otherKinds, event.sequence));
    this.#raiseSandbox(event.sandboxId, event.sequence);
  }

  /**
   * Every sequence up to `sequence` counts as dropped, whatever it was (numbering that jumped past
   * history, e.g. after a host crash: what was in between is unknown).
   */
  droppedAllUpTo(sequence: number): void {
    this.#all = Math.max(this.#all, sequence);
    this.#forgotten = Math.max(this.#forgotten, sequence);
    for (const kind of this.#kinds.keys()) this.#kinds.set(kind, Math.max(this.#kinds.get(kind)!, sequence));
    this.#otherKinds = Math.max(this.#otherKinds, sequence);
    for (const sandboxId of this.#sandboxes.keys()) this.#sandboxes.set(sandboxId, Math.max(this.#sandboxes.get(sandboxId)!, sequence));
  }

  /** The highest dropped sequence `filter` would have let through: a cursor below it missed something. */
  floorFor(filter: EventFilter): number {
    const sandboxes = filter.sandboxIds ?? [];
    const kinds = filter.kinds ?? [];
    const bySandbox = sandboxes.length === 0 ? this.#all : Math.max(...sandboxes.map((id) => this.#sandboxes.get(id) ?? this.#forgotten));
    const byKind = kinds.length === 0 ? this.#all : Math.max(...kinds.map((kind) => this.#kinds.get(kind) ?? this.#otherKinds));
    return Math.min(bySandbox, byKind);
  }

  #raiseSandbox(sandboxId: string, sequence: number): void {
    const current = this.#sandboxes.get(sandboxId) ?? this.#forgotten;
    this.#sandboxes.delete(sandboxId);
    this.#sandboxes.set(sandboxId, Math.max(current, sequence));
    if (this.#sandboxes.size > this.#sandboxLimit) {
      const [oldestId, oldest] = this.#sandboxes.entries().next().value!;
      this.#sandboxes.delete(oldestId);
      this.#forgotten = Math.max(this.#forgotten, oldest);
    }
  }
}
