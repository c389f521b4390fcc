/**
 * The reconnecting watcher's decisions against a scripted server (no root needed): what it resumes
 * from, what it drops, which statuses it rides out, when it gives up, and the backoff itself.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { Backoff } from '../../src/client/backoff.js';
import type { ReconnectEvent } from '../../src/client/exit-watch.js';
import { ExitHistoryGapError, isRpcError } from '../../src/client/rpc-error.js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { startStubServer, type StubServer, type WatchStep } from './stub-server.js';
import { ExitCollector, sequencesOf } from './support.js';

const QUICK = { initialDelayMs: 5, maxDelayMs: 20 };
const unavailable = { code: status.UNAVAILABLE, details: 'vmprocd is shutting down' };

describe('ReconnectingExitWatch against a scripted server', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  async function setup(script: (call: number) => WatchStep, exitSequence?: bigint): Promise<{ server: StubServer; client: VmProcessClient }> {
    const server = await startStubServer(script, exitSequence !== undefined ? { exitSequence } : {});
    const client = new VmProcessClient(server.address);
    cleanups.push(() => server.close(), () => client.close());
    return { server, client };
  }

  it('resumes after the last delivered exit, drops replayed duplicates, rides out UNAVAILABLE and RESOURCE_EXHAUSTED', async () => {
    const steps: WatchStep[] = [
      { send: [1, 2], end: unavailable },
      { send: [2, 3], end: { code: status.RESOURCE_EXHAUSTED, details: 'watcher fell behind' } }, // 2 again: a server bug, never delivered twice
      { send: [4, 5], end: 'open' },
    ];
    const { server, client } = await setup((i) => steps[i]!);
    const events: ReconnectEvent[] = [];
    const watch = client.watchExitsReconnecting({ startAfter: 0n, sandboxIds: ['a', 'b'], backoff: QUICK, onReconnect: (e) => events.push(e) });
    const collector = new ExitCollector(watch, (e) => e.sequence === 5n);
    await collector.waitForEnd();
    expect(collector.error).toBeUndefined();
    expect(sequencesOf(collector.exits)).toEqual([1, 2, 3, 4, 5]);
    expect(server.watchRequests.map((r) => [r.afterSequence, r.sandboxIds])).toEqual([
      [0n, ['a', 'b']],
      [2n, ['a', 'b']],
      [3n, ['a', 'b']],
    ]);
    expect(events.map((e) => [(e.error as { code: number }).code, e.cursor])).toEqual([
      [status.UNAVAILABLE, 2n],
      [status.RESOURCE_EXHAUSTED, 3n],
    ]);
    // Each failure came after a delivered exit, so each retry starts the backoff afresh.
    expect(events.map((e) => e.attempt)).toEqual([1, 1]);
    expect(watch.cursor).toBe(5n);
    expect(server.listCalls).toBe(0);
  });

  it('without startAfter, starts after the latest sequence from ListProcesses', async () => {
    const { server, client } = await setup(() => ({ send: [8], end: 'open' }), 7n);
    const collector = new ExitCollector(client.watchExitsReconnecting({ backoff: QUICK }), () => true);
    await collector.waitForEnd();
    expect(server.listCalls).toBe(1);
    expect(server.watchRequests[0]!.afterSequence).toBe(7n);
    expect(sequencesOf(collector.exits)).toEqual([8]);
  });

  it('turns OUT_OF_RANGE into ExitHistoryGapError carrying the cursor', async () => {
    const steps: WatchStep[] = [
      { send: [3], end: unavailable },
      { send: [], end: { code: status.OUT_OF_RANGE, details: 'after_sequence 3 is older than the retained exit history' } },
    ];
    const { client } = await setup((i) => steps[i]!);
    const collector = new ExitCollector(client.watchExitsReconnecting({ startAfter: 2n, backoff: QUICK }));
    await collector.waitForEnd();
    expect(sequencesOf(collector.exits)).toEqual([3]);
    const error = collector.error as ExitHistoryGapError;
    expect(error).toBeInstanceOf(ExitHistoryGapError);
    expect(error.cursor).toBe(3n);
    expect(isRpcError(error, status.OUT_OF_RANGE)).toBe(true);
    expect(error.details).toContain('older than the retained');
  });

  it('passes any other status through as it is', async () => {
    const { client } = await setup(() => ({ send: [], end: { code: status.PERMISSION_DENIED, details: 'no' } }));
    const collector = new ExitCollector(client.watchExitsReconnecting({ startAfter: 0n, backoff: QUICK }));
    await collector.waitForEnd();
    expect(isRpcError(collector.error, status.PERMISSION_DENIED)).toBe(true);
  });

  it('gives up with the last error after maxAttempts consecutive failures', async () => {
    const { server, client } = await setup(() => ({ send: [], end: unavailable }));
    const events: ReconnectEvent[] = [];
    const watch = client.watchExitsReconnecting({ startAfter: 0n, backoff: { ...QUICK, maxAttempts: 3 }, onReconnect: (e) => events.push(e) });
    const collector = new ExitCollector(watch);
    await collector.waitForEnd();
    expect(isRpcError(collector.error, status.UNAVAILABLE)).toBe(true);
    expect(events.map((e) => e.attempt)).toEqual([1, 2, 3]);
    expect(server.watchRequests).toHaveLength(4);
  });

  it('a stream the server ends with OK is resumed too', async () => {
    const steps: WatchStep[] = [{ send: [1] }, { send: [2], end: 'open' }];
    const { client } = await setup((i) => steps[i]!);
    const collector = new ExitCollector(client.watchExitsReconnecting({ startAfter: 0n, backoff: QUICK }), (e) => e.sequence === 2n);
    await collector.waitForEnd();
    expect(sequencesOf(collector.exits)).toEqual([1, 2]);
  });

  it('aborting during the wait between attempts ends the iteration at once', async () => {
    const { client } = await setup(() => ({ send: [], end: unavailable }));
    const abort = new AbortController();
    const waiting: ReconnectEvent[] = [];
    const watch = client.watchExitsReconnecting({
      startAfter: 0n,
      signal: abort.signal,
      backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
      onReconnect: (e) => {
        waiting.push(e);
        abort.abort();
      },
    });
    const started = Date.now();
    const collector = new ExitCollector(watch);
    await collector.waitForEnd(5_000);
    expect(waiting).toHaveLength(1);
    expect(collector.error).toBeUndefined();
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('one watch cannot be iterated twice at once; a later iteration continues after the cursor', async () => {
    const steps: WatchStep[] = [{ send: [1], end: 'open' }, { send: [2], end: 'open' }];
    const { server, client } = await setup((i) => steps[i]!);
    const watch = client.watchExitsReconnecting({ startAfter: 0n, backoff: QUICK });
    const first = watch[Symbol.asyncIterator]();
    expect((await first.next()).value?.sequence).toBe(1n);
    await expect(watch[Symbol.asyncIterator]().next()).rejects.toThrow('already being iterated');
    await first.return!();
    const again = new ExitCollector(watch, () => true);
    await again.waitForEnd();
    expect(sequencesOf(again.exits)).toEqual([2]);
    expect(server.watchRequests.map((r) => r.afterSequence)).toEqual([0n, 1n]);
  });
});

describe('Backoff', () => {
  it('grows by the multiplier up to the cap, jittered within bounds, and starts over after reset', () => {
    const low = new Backoff({ initialDelayMs: 100, maxDelayMs: 1_000, multiplier: 2, jitter: 0.2 }, () => 0);
    expect([1, 2, 3, 4, 5, 6].map(() => low.next())).toEqual([80, 160, 320, 640, 800, 800]);
    const high = new Backoff({ initialDelayMs: 100, maxDelayMs: 1_000, multiplier: 2, jitter: 0.2 }, () => 1);
    expect([1, 2, 3, 4, 5].map(() => high.next())).toEqual([120, 240, 480, 960, 1_000]);
    high.reset();
    expect(high.next()).toBe(120);
  });

  it('stops after maxAttempts and rejects nonsensical settings', () => {
    const backoff = new Backoff({ maxAttempts: 2 });
    expect(backoff.next()).toBeDefined();
    expect(backoff.next()).toBeDefined();
    expect(backoff.next()).toBeUndefined();
    expect(() => new Backoff({ initialDelayMs: 10, maxDelayMs: 5 })).toThrow(RangeError);
    expect(() => new Backoff({ jitter: 2 })).toThrow(RangeError);
  });
});
