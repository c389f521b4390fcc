/**
 * DaemonMetrics against the real exchange and a fake store, no root: the counters that are hard
 * to provoke end to end (a watcher cut off, a failed journal write) and the scrape-time gauges.
 */
import { describe, expect, it } from '@jest/globals';
import { DaemonMetrics } from '../../src/metrics/daemon-metrics.js';
import { instrumentStore } from '../../src/metrics/instrumented-store.js';
import { ephemeralStore } from '../../src/store/state-store.js';
import { ExitExchange, type UnsequencedExit } from '../../src/core/exit-exchange.js';
import { parseMetrics } from './scrape.js';
import { publishExit } from '../helpers/exits.js';

function exit(sandboxId: string, reason: UnsequencedExit['reason'] = 'exited'): UnsequencedExit {
  const at = new Date(0);
  return { sandboxId, pid: 1, exitCode: 0, reason, exitedAt: at, startedAt: at, labels: {}, stderrTail: '', message: '', signalSentByDaemon: false };
}

async function scrapeOf(metrics: DaemonMetrics) {
  return parseMetrics(await metrics.registry.metrics());
}

describe('DaemonMetrics', () => {
  it('counts exits by reason and watchers cut off for falling behind', async () => {
    const metrics = new DaemonMetrics();
    const exchange = new ExitExchange({ historyLimit: 10, subscriberBufferLimit: 2, observer: metrics });
    metrics.bind({ processStates: () => [], exitWatchers: () => exchange.subscriberCount, exitSequence: () => exchange.latestSequence, logStreams: () => 0 });
    const slow = exchange.subscribe();
    const fast = exchange.subscribe();
    expect((await scrapeOf(metrics)).value('vmprocd_exit_watchers')).toBe(2);
    for (const [id, reason] of [['a', 'exited'], ['b', 'signaled'], ['c', 'start-timeout']] as const) {
      publishExit(exchange, exit(id, reason));
      await fast.next();
    }
    const scrape = await scrapeOf(metrics);
    expect(slow.ended).toBe(true);
    expect(scrape.value('vmprocd_exit_watchers_cut_off_total')).toBe(1);
    expect(scrape.value('vmprocd_exit_watchers')).toBe(1);
    expect(scrape.value('vmprocd_exits_total', { reason: 'exited' })).toBe(1);
    expect(scrape.value('vmprocd_exits_total', { reason: 'signaled' })).toBe(1);
    expect(scrape.value('vmprocd_exits_total', { reason: 'start_timeout' })).toBe(1);
    expect(scrape.value('vmprocd_exits_total', { reason: 'lost' })).toBe(0);
    expect(scrape.value('vmprocd_exit_sequence')).toBe(3);
    fast.close();
  });

  it('reads processes by state at scrape time, with every state present', async () => {
    const metrics = new DaemonMetrics();
    let states: Array<'starting' | 'running' | 'stopping' | 'exited'> = ['running', 'running', 'exited'];
    metrics.bind({ processStates: () => states, exitWatchers: () => 0, exitSequence: () => 0, logStreams: () => 4, eventWatchers: () => 3, eventSequence: () => 17 });
    let scrape = await scrapeOf(metrics);
    expect([scrape.value('vmprocd_event_watchers'), scrape.value('vmprocd_event_sequence')]).toEqual([3, 17]);
    expect(['starting', 'running', 'stopping', 'exited'].map((state) => scrape.value('vmprocd_processes', { state }))).toEqual([0, 2, 0, 1]);
    expect(scrape.value('vmprocd_log_streams')).toBe(4);
    states = ['stopping'];
    scrape = await scrapeOf(metrics);
    expect(['starting', 'running', 'stopping', 'exited'].map((state) => scrape.value('vmprocd_processes', { state }))).toEqual([0, 0, 1, 0]);
  });

  it('times store writes and counts the failed ones, by record', async () => {
    const metrics = new DaemonMetrics();
    const failing = { ...ephemeralStore, ready: () => Promise.reject(new Error('disk full')) };
    const store = instrumentStore(failing, metrics);
    await store.launching('a', {} as never).durable;
    await store.exited({} as never);
    await expect(store.ready('a', new Date(), '1', {})).rejects.toThrow('disk full');
    await new Promise((resolve) => setImmediate(resolve));
    const scrape = await scrapeOf(metrics);
    expect(scrape.value('vmprocd_store_write_seconds_count', { operation: 'launch' })).toBe(1);
    expect(scrape.value('vmprocd_store_write_seconds_count', { operation: 'exit' })).toBe(1);
    expect(scrape.value('vmprocd_store_write_seconds_count', { operation: 'ready' })).toBeUndefined();
    expect(scrape.value('vmprocd_store_write_failures_total', { operation: 'ready' })).toBe(1);
  });

  it('labels start outcomes with the error code in snake case', async () => {
    const metrics = new DaemonMetrics();
    metrics.startFinished('ready', 0.02);
    metrics.startFinished('deadline-exceeded');
    metrics.startFinished('failed-precondition');
    metrics.startFinished('failed-precondition');
    const scrape = await scrapeOf(metrics);
    expect(scrape.value('vmprocd_starts_total', { outcome: 'ready' })).toBe(1);
    expect(scrape.value('vmprocd_starts_total', { outcome: 'deadline_exceeded' })).toBe(1);
    expect(scrape.value('vmprocd_starts_total', { outcome: 'failed_precondition' })).toBe(2);
    expect(scrape.value('vmprocd_start_ready_seconds_bucket', { le: '0.025' })).toBe(1);
    expect(scrape.value('vmprocd_start_ready_seconds_bucket', { le: '0.01' })).toBe(0);
  });
});
