import { describe, expect, it } from '@jest/globals';
import { VmprocError } from '../../src/errors.js';
import { ExitExchange, type ExitSubscription, type UnsequencedExit } from '../../src/core/exit-exchange.js';
import type { ProcessExitEvent } from '../../src/core/domain.js';
import { expectThrowsVmprocError, expectVmprocError, rejectionOf } from './support/errors.js';
import { publishExit } from '../helpers/exits.js';

function exitOf(sandboxId: string, extra: Partial<UnsequencedExit> = {}): UnsequencedExit {
  return {
    sandboxId,
    pid: 100,
    exitCode: 0,
    reason: 'exited',
    exitedAt: new Date(2000),
    startedAt: new Date(1000),
    labels: {},
    stderrTail: '',
    message: 'exit code 0',
    signalSentByDaemon: false,
    ...extra,
  };
}

function exchange(options: Partial<ConstructorParameters<typeof ExitExchange>[0]> = {}): ExitExchange {
  return new ExitExchange({ historyLimit: 100, subscriberBufferLimit: 100, ...options });
}

/** Publishes `count` exits of `sandboxId` (default s0, s1, ...) and returns them. */
function publishMany(ex: ExitExchange, count: number, sandboxId?: string): ProcessExitEvent[] {
  return Array.from({ length: count }, (_, i) => publishExit(ex, exitOf(sandboxId ?? `s${i}`)));
}

/** Takes exactly what is queued now, without waiting. */
async function drain(subscription: ExitSubscription): Promise<number[]> {
  const sequences: number[] = [];
  while (subscription.pending > 0) {
    const result = await subscription.next();
    if (result.done) break;
    sequences.push(result.value.sequence);
  }
  return sequences;
}

/** Resolves with 'pending' if `promise` has not settled after the microtask queue drains. */
async function stateOf(promise: Promise<unknown>): Promise<'pending' | 'settled'> {
  const marker = Symbol('pending');
  const winner = await Promise.race([promise.then(() => 'settled' as const, () => 'settled' as const), new Promise((r) => setImmediate(() => r(marker)))]);
  return winner === marker ? 'pending' : 'settled';
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('ExitExchange publishing', () => {
  it('numbers exits 1, 2, 3 ... and tracks the latest sequence', () => {
    const ex = exchange();
    expect(ex.latestSequence).toBe(0);
    expect(publishMany(ex, 3).map((e) => e.sequence)).toEqual([1, 2, 3]);
    expect(ex.latestSequence).toBe(3);
  });

  it('continues from initialSequence', () => {
    const ex = exchange({ initialSequence: 41 });
    expect(ex.latestSequence).toBe(41);
    expect(publishMany(ex, 2).map((e) => e.sequence)).toEqual([42, 43]);
  });

  it('delivers assigned exits in sequence order even when they are delivered out of order', async () => {
    const ex = exchange();
    const sub = ex.subscribe();
    const first = ex.assign(exitOf('a'));
    const second = ex.assign(exitOf('b'));
    ex.deliver(second);
    // Held back: 1 is not delivered yet, so neither is 2, and the latest sequence stays 0.
    expect(ex.latestSequence).toBe(0);
    expect(sub.pending).toBe(0);
    ex.deliver(first);
    expect(ex.latestSequence).toBe(2);
    expect((await sub.next()).value!.sandboxId).toBe('a');
    expect((await sub.next()).value!.sandboxId).toBe('b');
    expect(() => ex.deliver(first)).toThrow(RangeError);
  });

  it('keeps every field of the exit and freezes the event', () => {
    const ex = exchange();
    const exit = exitOf('a', { exitCode: undefined, signal: 'SIGKILL', reason: 'signaled', labels: { k: 'v' }, signalSentByDaemon: true });
    const event = publishExit(ex, exit);
    expect(event).toEqual({ ...exit, sequence: 1 });
    expect(Object.isFrozen(event)).toBe(true);
  });

  it('publishes without subscribers and never blocks', () => {
    const ex = exchange({ historyLimit: 2 });
    publishMany(ex, 1000);
    expect(ex.latestSequence).toBe(1000);
  });

  it.each([
    [{ historyLimit: 0, subscriberBufferLimit: 1 }],
    [{ historyLimit: 1, subscriberBufferLimit: 0 }],
    [{ historyLimit: -1, subscriberBufferLimit: 5 }],
  ])('refuses non-positive limits %j', (options) => {
    expect(() => new ExitExchange(options)).toThrow(RangeError);
  });
});

describe('ExitExchange replay', () => {
  it('subscribes live by default: no history, only later exits', async () => {
    const ex = exchange();
    publishMany(ex, 3);
    const sub = ex.subscribe();
    expect(sub.pending).toBe(0);
    publishExit(ex, exitOf('x'));
    expect(await drain(sub)).toEqual([4]);
  });

  it('replays everything after 0 when the whole history is retained', async () => {
    const ex = exchange();
    publishMany(ex, 5);
    expect(await drain(ex.subscribe({ afterSequence: 0 }))).toEqual([1, 2, 3, 4, 5]);
  });

  it('accepts afterSequence 0 before any exit', async () => {
    const ex = exchange();
    const sub = ex.subscribe({ afterSequence: 0 });
    publishExit(ex, exitOf('a'));
    expect(await drain(sub)).toEqual([1]);
  });

  it('replays nothing when afterSequence is the latest, then goes live', async () => {
    const ex = exchange();
    publishMany(ex, 5);
    const sub = ex.subscribe({ afterSequence: 5 });
    expect(sub.pending).toBe(0);
    publishExit(ex, exitOf('a'));
    expect(await drain(sub)).toEqual([6]);
  });

  it('replays then continues live with no gap and no duplicate', async () => {
    const ex = exchange();
    publishMany(ex, 5);
    const sub = ex.subscribe({ afterSequence: 2 });
    publishExit(ex, exitOf('a'));
    expect(await drain(sub)).toEqual([3, 4, 5, 6]);
    const waiting = sub.next();
    publishExit(ex, exitOf('b'));
    expect((await waiting).value?.sequence).toBe(7);
    publishExit(ex, exitOf('c'));
    expect(await drain(sub)).toEqual([8]);
  });

  it('keeps only historyLimit exits and refuses cursors older than that', async () => {
    const ex = exchange({ historyLimit: 3 });
    publishMany(ex, 5);
    expect(await drain(ex.subscribe({ afterSequence: 2 }))).toEqual([3, 4, 5]);
    expectThrowsVmprocError(() => ex.subscribe({ afterSequence: 1 }), 'out-of-range', 'after_sequence 1', 'oldest retained is 3', 'ListProcesses');
    expectThrowsVmprocError(() => ex.subscribe({ afterSequence: 0 }), 'out-of-range');
    expectThrowsVmprocError(() => ex.subscribe({ afterSequence: -1 }), 'out-of-range');
  });

  it('refuses a cursor newer than the latest sequence', () => {
    const ex = exchange();
    publishMany(ex, 3);
    expectThrowsVmprocError(() => ex.subscribe({ afterSequence: 4 }), 'out-of-range', 'after_sequence 4', 'newer', 'latest exit sequence 3');
    expectThrowsVmprocError(() => exchange().subscribe({ afterSequence: 1 }), 'out-of-range', 'newer');
  });

  it('does not register a subscriber whose cursor was refused', () => {
    const ex = exchange();
    expect(() => ex.subscribe({ afterSequence: 9 })).toThrow(VmprocError);
    expect(ex.subscriberCount).toBe(0);
  });

  it('after a restart without history, accepts only the latest sequence as a cursor', async () => {
    const ex = exchange({ initialSequence: 10 });
    const sub = ex.subscribe({ afterSequence: 10 });
    publishExit(ex, exitOf('a'));
    expect(await drain(sub)).toEqual([11]);
    expectThrowsVmprocError(() => exchange({ initialSequence: 10 }).subscribe({ afterSequence: 9 }), 'out-of-range', 'older');
    expectThrowsVmprocError(() => exchange({ initialSequence: 10 }).subscribe({ afterSequence: 11 }), 'out-of-range', 'newer');
  });

  it('replays initialHistory, trimmed to historyLimit', async () => {
    const seed = exchange();
    const history = publishMany(seed, 5);
    const ex = exchange({ historyLimit: 3, initialSequence: 5, initialHistory: history });
    expect(await drain(ex.subscribe({ afterSequence: 2 }))).toEqual([3, 4, 5]);
    expectThrowsVmprocError(() => ex.subscribe({ afterSequence: 1 }), 'out-of-range', 'oldest retained is 3');
    expect(publishExit(ex, exitOf('a')).sequence).toBe(6);
    expectThrowsVmprocError(() => ex.subscribe({ afterSequence: 2 }), 'out-of-range', 'oldest retained is 4');
  });

  it('replays the same events to several subscribers independently', async () => {
    const ex = exchange();
    publishMany(ex, 3);
    const a = ex.subscribe({ afterSequence: 1 });
    const b = ex.subscribe({ afterSequence: 0 });
    expect(await drain(a)).toEqual([2, 3]);
    expect(await drain(b)).toEqual([1, 2, 3]);
  });
});

describe('ExitExchange sandbox filter', () => {
  it('delivers only the listed sandboxes, replayed and live', async () => {
    const ex = exchange();
    publishExit(ex, exitOf('a'));
    publishExit(ex, exitOf('b'));
    publishExit(ex, exitOf('c'));
    const sub = ex.subscribe({ sandboxIds: ['a', 'c'], afterSequence: 0 });
    publishExit(ex, exitOf('b'));
    publishExit(ex, exitOf('c'));
    const events: string[] = [];
    while (sub.pending > 0) {
      const { value } = await sub.next();
      events.push(`${value!.sequence}:${value!.sandboxId}`);
    }
    expect(events).toEqual(['1:a', '3:c', '5:c']);
  });

  it('treats an empty list as all sandboxes', async () => {
    const ex = exchange();
    const sub = ex.subscribe({ sandboxIds: [] });
    publishExit(ex, exitOf('a'));
    publishExit(ex, exitOf('b'));
    expect(await drain(sub)).toEqual([1, 2]);
  });

  it('does not wake a pending next() for another sandbox', async () => {
    const ex = exchange();
    const sub = ex.subscribe({ sandboxIds: ['a'] });
    const waiting = sub.next();
    publishExit(ex, exitOf('b'));
    expect(await stateOf(waiting)).toBe('pending');
    publishExit(ex, exitOf('a'));
    expect((await waiting).value).toMatchObject({ sequence: 2, sandboxId: 'a' });
  });
});

describe('ExitExchange slow subscribers', () => {
  it('cuts off a subscriber more than subscriberBufferLimit behind with resource-exhausted; others are unaffected', async () => {
    const ex = exchange({ subscriberBufferLimit: 2 });
    const slow = ex.subscribe();
    const fast = ex.subscribe();
    const fastGot: number[] = [];
    for (let i = 0; i < 2; i++) {
      publishExit(ex, exitOf(`s${i}`));
      fastGot.push(...(await drain(fast)));
    }
    expect(slow.ended).toBe(false);
    expect(slow.pending).toBe(2);
    publishExit(ex, exitOf('s2'));
    fastGot.push(...(await drain(fast)));
    expect(slow.ended).toBe(true);
    expect(slow.pending).toBe(0);
    expectVmprocError(await rejectionOf(slow.next()), 'resource-exhausted', 'more than 2 events behind', 'after_sequence');
    // It keeps failing: the error is the end of the subscription.
    expectVmprocError(await rejectionOf(slow.next()), 'resource-exhausted');
    expect(ex.subscriberCount).toBe(1);
    publishExit(ex, exitOf('s3'));
    fastGot.push(...(await drain(fast)));
    expect(fastGot).toEqual([1, 2, 3, 4]);
    expect(fast.ended).toBe(false);
  });

  it('does not count replayed exits against the live buffer limit', async () => {
    const ex = exchange({ subscriberBufferLimit: 2 });
    publishMany(ex, 5);
    const sub = ex.subscribe({ afterSequence: 0 });
    expect(sub.pending).toBe(5);
    publishMany(ex, 2);
    expect(sub.ended).toBe(false);
    expect(sub.pending).toBe(7);
    publishExit(ex, exitOf('x'));
    expect(sub.ended).toBe(true);
    expectVmprocError(await rejectionOf(sub.next()), 'resource-exhausted');
  });

  it('counts the live backlog correctly while replayed exits are being consumed', async () => {
    const ex = exchange({ subscriberBufferLimit: 2 });
    publishMany(ex, 3);
    const sub = ex.subscribe({ afterSequence: 0 });
    expect((await sub.next()).value?.sequence).toBe(1);
    publishMany(ex, 2); // live backlog 2: at the limit, still fine
    expect(sub.ended).toBe(false);
    expect(await drain(sub)).toEqual([2, 3, 4, 5]);
    publishMany(ex, 2);
    expect(sub.ended).toBe(false);
    publishExit(ex, exitOf('x'));
    expect(sub.ended).toBe(true);
  });

  it('does not count filtered-out exits against the limit', () => {
    const ex = exchange({ subscriberBufferLimit: 1 });
    const sub = ex.subscribe({ sandboxIds: ['a'] });
    publishMany(ex, 10, 'b');
    publishExit(ex, exitOf('a'));
    expect(sub.ended).toBe(false);
    expect(sub.pending).toBe(1);
  });

  it('hands an exit straight to a waiting next() without buffering', async () => {
    const ex = exchange({ subscriberBufferLimit: 1 });
    const sub = ex.subscribe();
    for (let i = 1; i <= 5; i++) {
      const waiting = sub.next();
      publishExit(ex, exitOf('a'));
      expect(sub.pending).toBe(0);
      expect((await waiting).value?.sequence).toBe(i);
    }
    expect(sub.ended).toBe(false);
  });
});

describe('ExitSubscription ending', () => {
  it('close() resolves a pending next() as done, detaches, and ignores later exits', async () => {
    const ex = exchange();
    const sub = ex.subscribe();
    const waiting = sub.next();
    expect(ex.subscriberCount).toBe(1);
    sub.close();
    expect(await waiting).toEqual({ value: undefined, done: true });
    expect(sub.ended).toBe(true);
    expect(ex.subscriberCount).toBe(0);
    publishExit(ex, exitOf('a'));
    sub.offer(publishExit(ex, exitOf('b')));
    expect(sub.pending).toBe(0);
    expect(await sub.next()).toEqual({ value: undefined, done: true });
    sub.close();
    expect(await sub.next()).toEqual({ value: undefined, done: true });
  });

  it('close() still hands out exits queued before it, then ends', async () => {
    const ex = exchange();
    const sub = ex.subscribe();
    publishMany(ex, 2);
    sub.close();
    expect(await drain(sub)).toEqual([1, 2]);
    expect(await sub.next()).toEqual({ value: undefined, done: true });
  });

  it('closeAll(error) rejects pending and later next() calls on every subscriber', async () => {
    const ex = exchange();
    const a = ex.subscribe();
    const b = ex.subscribe({ afterSequence: 0 });
    publishExit(ex, exitOf('x'));
    const waiting = a.next();
    await waiting; // a took exit 1
    const pendingA = a.next();
    const shutdown = new VmprocError('unavailable', 'daemon shutting down');
    ex.closeAll(shutdown);
    expect(await rejectionOf(pendingA)).toBe(shutdown);
    // Queued exits are dropped: the error is what b sees next.
    expect(b.pending).toBe(0);
    expect(await rejectionOf(b.next())).toBe(shutdown);
    expect(ex.subscriberCount).toBe(0);
    expect(a.ended && b.ended).toBe(true);
  });

  it('refuses new subscribers after closeAll with the same error (the daemon is going away)', () => {
    const ex = exchange();
    ex.subscribe();
    const shutdown = new VmprocError('unavailable', 'x');
    ex.closeAll(shutdown);
    expect(() => ex.subscribe()).toThrow(shutdown);
    expect(ex.subscriberCount).toBe(0);
  });

  it('the first ending wins: fail after close does not turn done into an error', async () => {
    const ex = exchange();
    const sub = ex.subscribe();
    sub.close();
    sub.fail(new VmprocError('internal', 'late'));
    expect(await sub.next()).toEqual({ value: undefined, done: true });
  });

  it('refuses a second concurrent next()', async () => {
    const ex = exchange();
    const sub = ex.subscribe();
    const first = sub.next();
    await expect(sub.next()).rejects.toThrow('another next() is pending');
    publishExit(ex, exitOf('a'));
    expect((await first).value?.sequence).toBe(1);
  });
});

describe('ExitSubscription.onEnded', () => {
  it('calls each listener once when the subscription ends, not before', () => {
    const sub = exchange().subscribe();
    const calls: string[] = [];
    sub.onEnded(() => calls.push('a'));
    sub.onEnded(() => calls.push('b'));
    expect(calls).toEqual([]);
    sub.close();
    sub.close();
    sub.fail(new VmprocError('internal', 'x'));
    expect(calls).toEqual(['a', 'b']);
  });

  it('calls a listener at once when registered after the end', () => {
    const sub = exchange().subscribe();
    sub.fail(new VmprocError('resource-exhausted', 'x'));
    let called = 0;
    const unsubscribe = sub.onEnded(() => called++);
    expect(called).toBe(1);
    unsubscribe();
    expect(called).toBe(1);
  });

  it('does not call an unsubscribed listener', () => {
    const sub = exchange().subscribe();
    let called = 0;
    const unsubscribe = sub.onEnded(() => called++);
    unsubscribe();
    sub.close();
    expect(called).toBe(0);
  });

  it('fires when the exchange cuts off a slow subscriber, already detached', () => {
    const ex = exchange({ subscriberBufferLimit: 1 });
    const sub = ex.subscribe();
    const seen: Array<{ ended: boolean; count: number }> = [];
    sub.onEnded(() => seen.push({ ended: sub.ended, count: ex.subscriberCount }));
    publishMany(ex, 2);
    expect(seen).toEqual([{ ended: true, count: 0 }]);
  });
});

describe('ExitSubscription as an async iterable', () => {
  it('for await + break detaches the subscriber', async () => {
    const ex = exchange();
    publishMany(ex, 3);
    const sub = ex.subscribe({ afterSequence: 0 });
    const seen: number[] = [];
    for await (const event of sub) {
      seen.push(event.sequence);
      if (event.sequence === 2) break;
    }
    expect(seen).toEqual([1, 2]);
    expect(sub.ended).toBe(true);
    expect(ex.subscriberCount).toBe(0);
  });

  it('ends the loop when the subscription is closed while waiting', async () => {
    const ex = exchange();
    const sub = ex.subscribe();
    const seen: number[] = [];
    const loop = (async () => {
      for await (const event of sub) seen.push(event.sequence);
    })();
    publishExit(ex, exitOf('a'));
    publishExit(ex, exitOf('b'));
    await new Promise((resolve) => setImmediate(resolve));
    sub.close();
    await loop;
    expect(seen).toEqual([1, 2]);
  });

  it('throws the error that ended the subscription out of the loop', async () => {
    const ex = exchange();
    const sub = ex.subscribe();
    const error = new VmprocError('unavailable', 'shutting down');
    const loop = (async () => {
      for await (const _event of sub) {
        // no exits published
      }
    })();
    ex.closeAll(error);
    expect(await rejectionOf(loop)).toBe(error);
    expect(ex.subscriberCount).toBe(0);
  });

  it('delivers a long run in order with no gap while the consumer keeps up', async () => {
    const ex = exchange({ subscriberBufferLimit: 4, historyLimit: 8 });
    const sub = ex.subscribe();
    const seen: number[] = [];
    const loop = (async () => {
      for await (const event of sub) {
        seen.push(event.sequence);
        if (event.sequence === 200) break;
      }
    })();
    for (let i = 0; i < 200; i++) {
      publishExit(ex, exitOf('a'));
      if (i % 3 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    await loop;
    expect(seen).toEqual(range(1, 200));
  });
});
