import { describe, expect, it } from '@jest/globals';
import { EventExchange, type EventSubscription } from '../../../src/core/event-exchange.js';
import { EventFloors } from '../../../src/core/event-floors.js';
import type { EventKind, EventStreamItem, ProcessEvent } from '../../../src/core/events.js';
import { expectVmprocError as expectError, thrownBy } from '../support/errors.js';

const expectVmprocError = (fn: () => unknown, code: Parameters<typeof expectError>[1], ...fragments: string[]) => expectError(thrownBy(fn), code, ...fragments);

function unsequenced(sandboxId: string, kind: EventKind = 'paused') {
  return { sandboxId, kind, time: new Date(0), labels: {}, origin: 'daemon' as const, pid: 1 };
}

/** An exchange whose progress rounds run when the test says. */
function exchange(options: { historyLimit?: number; bufferLimit?: number; initialSequence?: number; initialHistory?: ProcessEvent[]; initialFloors?: EventFloors } = {}) {
  const rounds: Array<() => void> = [];
  const events = new EventExchange({
    historyLimit: options.historyLimit ?? 100,
    subscriberBufferLimit: options.bufferLimit ?? 100,
    ...(options.initialSequence !== undefined ? { initialSequence: options.initialSequence } : {}),
    ...(options.initialHistory ? { initialHistory: options.initialHistory } : {}),
    ...(options.initialFloors ? { initialFloors: options.initialFloors } : {}),
    schedule: (_ms, callback) => rounds.push(callback),
  });
  const publish = (sandboxId: string, kind: EventKind = 'paused'): ProcessEvent => {
    const event = events.assign(unsequenced(sandboxId, kind));
    events.deliver(event);
    return event;
  };
  const runRound = () => {
    for (const round of rounds.splice(0)) round();
  };
  return { events, publish, runRound, rounds };
}

/** What a subscription holds right now, without waiting. */
async function queued(subscription: EventSubscription): Promise<Array<string>> {
  const items: EventStreamItem[] = [];
  while (subscription.pending > 0) items.push((await subscription.next()).value as EventStreamItem);
  return items.map((item) => (item.kind === 'progress' ? `progress ${item.sequence}` : `${item.sequence} ${item.sandboxId} ${item.kind}`));
}

describe('EventExchange', () => {
  it('numbers events from 1, delivers them in sequence order even when recorded out of order', async () => {
    const { events } = exchange();
    const watcher = events.subscribe();
    const a = events.assign(unsequenced('a'));
    const b = events.assign(unsequenced('b'));
    events.deliver(b);
    expect(watcher.pending).toBe(0);
    events.deliver(a);
    expect(await queued(watcher)).toEqual(['1 a paused', '2 b paused']);
    expect(events.latestSequence).toBe(2);
    expect(() => events.deliver(a)).toThrow(RangeError);
  });

  it('replays after a cursor with no gap and no duplicate, then goes on live', async () => {
    const { events, publish } = exchange();
    for (const id of ['a', 'b', 'c']) publish(id);
    const watcher = events.subscribe({ afterSequence: 1 });
    publish('d');
    expect(await queued(watcher)).toEqual(['2 b paused', '3 c paused', '4 d paused']);
  });

  it('refuses a cursor past the latest sequence, and one before the retained history', () => {
    const { events, publish } = exchange({ historyLimit: 2 });
    for (const id of ['a', 'b', 'c']) publish(id);
    expectVmprocError(() => events.subscribe({ afterSequence: 4 }), 'out-of-range', 'newer than the latest event sequence 3');
    expectVmprocError(() => events.subscribe({ afterSequence: 0 }), 'out-of-range', 'older than the retained event history');
    expect(() => events.subscribe({ afterSequence: 1 })).not.toThrow();
    expect(events.retainedAfter).toBe(1);
  });

  it('filters by sandbox and by kind, both at once', async () => {
    const { events, publish } = exchange();
    const watcher = events.subscribe({ sandboxIds: ['a'], kinds: ['resumed'] });
    publish('a', 'paused');
    publish('b', 'resumed');
    publish('a', 'resumed');
    expect(await queued(watcher)).toEqual(['3 a resumed']);
  });

  it('tells a filtered watcher how far it has got: one marker per round, only after skipped events', async () => {
    const { events, publish, runRound } = exchange();
    const watcher = events.subscribe({ sandboxIds: ['a'] });
    publish('a');
    runRound();
    expect(await queued(watcher)).toEqual(['1 a paused']);
    for (const id of ['b', 'c', 'd']) publish(id);
    expect(watcher.pending).toBe(0);
    runRound();
    expect(await queued(watcher)).toEqual(['progress 4']);
    runRound();
    expect(watcher.pending).toBe(0);
  });

  it('keeps one marker queued for a slow watcher, however many rounds pass', async () => {
    const { events, publish, runRound } = exchange();
    const watcher = events.subscribe({ sandboxIds: ['a'] });
    publish('b');
    runRound();
    publish('b');
    runRound();
    expect(await queued(watcher)).toEqual(['progress 2']);
  });

  it('ends a short replay with a marker at the latest sequence, so a watcher knows it is current', async () => {
    const { events, publish } = exchange();
    publish('a');
    publish('b');
    publish('b');
    expect(await queued(events.subscribe({ sandboxIds: ['a'], afterSequence: 0 }))).toEqual(['1 a paused', 'progress 3']);
    expect(await queued(events.subscribe({ sandboxIds: ['b'], afterSequence: 0 }))).toEqual(['2 b paused', '3 b paused']);
  });

  it("never refuses a filtered watcher's cursor for dropped events it did not want", () => {
    const { events, publish } = exchange({ historyLimit: 2 });
    publish('a');
    for (let i = 0; i < 10; i++) publish('b');
    // Event 1 (a) and events 2..9 (b) were dropped.
    expect(() => events.subscribe({ sandboxIds: ['c'], afterSequence: 0 })).not.toThrow();
    expect(() => events.subscribe({ sandboxIds: ['a'], afterSequence: 1 })).not.toThrow();
    expectVmprocError(() => events.subscribe({ sandboxIds: ['a'], afterSequence: 0 }), 'out-of-range', 'an event this filter lets through');
    expectVmprocError(() => events.subscribe({ sandboxIds: ['b'], afterSequence: 8 }), 'out-of-range', '9 is no longer kept');
    expect(() => events.subscribe({ kinds: ['exited'], afterSequence: 0 })).not.toThrow();
    expectVmprocError(() => events.subscribe({ kinds: ['paused'], afterSequence: 5 }), 'out-of-range');
  });

  it('cuts off a watcher that falls more than its buffer behind', async () => {
    const { events, publish } = exchange({ bufferLimit: 2 });
    const watcher = events.subscribe();
    for (const id of ['a', 'b', 'c']) publish(id);
    await expect(watcher.next()).rejects.toMatchObject({ code: 'resource-exhausted', message: expect.stringContaining('event watcher fell more than 2 events behind') });
    expect(events.subscriberCount).toBe(0);
  });

  it('continues numbering after a restart, from the history and floors it was given', () => {
    const first = exchange({ historyLimit: 2 });
    for (const id of ['a', 'b', 'c']) first.publish(id);
    const history = first.events.subscribe({ afterSequence: 1 });
    void history;
    const floors = new EventFloors();
    floors.dropped({ ...unsequenced('a'), sequence: 1 });
    const second = exchange({ historyLimit: 2, initialSequence: 3, initialHistory: [{ ...unsequenced('b'), sequence: 2 }, { ...unsequenced('c'), sequence: 3 }], initialFloors: floors });
    expect(second.publish('d').sequence).toBe(4);
    expectVmprocError(() => second.events.subscribe({ sandboxIds: ['a'], afterSequence: 0 }), 'out-of-range');
    expect(() => second.events.subscribe({ sandboxIds: ['x'], afterSequence: 0 })).not.toThrow();
  });

  it('counts everything before a jump in numbering as dropped (what was in between is unknown)', () => {
    const { events } = exchange({ initialSequence: 1000, initialHistory: [{ ...unsequenced('a'), sequence: 5 }] });
    expectVmprocError(() => events.subscribe({ sandboxIds: ['x'], afterSequence: 5 }), 'out-of-range');
    expect(() => events.subscribe({ sandboxIds: ['x'], afterSequence: 1000 })).not.toThrow();
  });
});

describe('EventFloors', () => {
  it('round-trips through JSON', () => {
    const floors = new EventFloors(2);
    floors.dropped({ ...unsequenced('a', 'paused'), sequence: 3 });
    floors.dropped({ ...unsequenced('b', 'exited'), sequence: 7 });
    floors.dropped({ ...unsequenced('c', 'exited'), sequence: 9 });
    const copy = EventFloors.fromJson(floors.toJson(), 2);
    for (const filter of [{}, { sandboxIds: ['a'] }, { sandboxIds: ['b'] }, { sandboxIds: ['c'] }, { kinds: ['paused' as const] }, { sandboxIds: ['zz'] }]) {
      expect(copy.floorFor(filter)).toBe(floors.floorFor(filter));
    }
  });

  it('remembers a bounded number of sandboxes; the forgotten ones share the highest of their floors', () => {
    const floors = new EventFloors(2);
    floors.dropped({ ...unsequenced('a'), sequence: 1 });
    floors.dropped({ ...unsequenced('b'), sequence: 2 });
    floors.dropped({ ...unsequenced('c'), sequence: 3 });
    // 'a' was forgotten: any sandbox not remembered now has floor 1.
    expect(floors.floorFor({ sandboxIds: ['a'] })).toBe(1);
    expect(floors.floorFor({ sandboxIds: ['never-seen'] })).toBe(1);
    expect(floors.floorFor({ sandboxIds: ['c'] })).toBe(3);
  });
});
