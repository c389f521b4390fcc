/**
 * The reconnecting exit watcher against the real daemon binary: it rides out a graceful restart
 * (SIGTERM) and a crash (SIGKILL) of the daemon, including exits that happen while no daemon
 * runs, and delivers every exit exactly once, in order. When the history no longer reaches back
 * to its cursor (`--exit-history 2`), it throws ExitHistoryGapError, and a resync works.
 */
import { afterAll, afterEach, beforeAll, expect, it } from '@jest/globals';
import { LaunchMode, type ProcessExit, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { ExitHistoryGapError, isRpcError, Status } from '../../src/client/rpc-error.js';
import type { ReconnectEvent } from '../../src/client/exit-watch.js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { DaemonProcess, type DaemonProcessOptions } from '../helpers/daemon-process.js';
import { createTestNetns, type TestNetns } from '../helpers/netns.js';
import { killProcessesMentioning } from '../helpers/process-scan.js';
import { describeAsRoot } from '../helpers/root.js';
import { createSandboxFixture, type SandboxFixture } from '../helpers/sandbox-fixture.js';
import { ExitCollector, killBehindDaemon, sequencesOf, WAIT_MS } from './support.js';

/** Quick retries, so a restart is noticed within a fraction of a second. */
const FAST_BACKOFF = { initialDelayMs: 50, maxDelayMs: 500 };

function useDaemonProcessSuite(options: DaemonProcessOptions = {}) {
  const s = {} as {
    fixture: SandboxFixture;
    netns: TestNetns;
    daemon: DaemonProcess;
    client: VmProcessClient;
    start(id: string): Promise<number>;
    stop(id: string): Promise<void>;
    restart(how: 'SIGTERM' | 'SIGKILL', whileDown?: () => Promise<void>): Promise<void>;
  };
  const collectors: ExitCollector[] = [];
  const aborts: AbortController[] = [];

  beforeAll(async () => {
    s.netns = await createTestNetns('vmpc');
    s.fixture = await createSandboxFixture();
    s.daemon = await DaemonProcess.start(s.fixture, { stateSync: 'none', ...options });
    // Our own client, not daemon.client(): it must outlive the daemon processes.
    s.client = new VmProcessClient(s.daemon.address);
    s.start = async (id) => {
      const { process } = await s.client.startProcess({
        sandboxId: id,
        mode: LaunchMode.BOOT,
        kernelPath: s.fixture.kernelPath,
        rootfsPath: await s.fixture.rootfs(id),
        networkNamespace: s.netns.name,
      });
      return process!.pid;
    };
    s.stop = async (id) => {
      await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    };
    s.restart = async (how, whileDown) => {
      await s.daemon.kill(how);
      await whileDown?.();
      s.daemon = await DaemonProcess.start(s.fixture, { stateSync: 'none', ...options });
      // The channel may still be backing off from the outage; unary calls fail fast until it reconnects.
      await s.client.waitForReady(WAIT_MS);
    };
  });

  afterEach(() => {
    for (const abort of aborts.splice(0)) abort.abort();
  });

  afterAll(async () => {
    for (const abort of aborts.splice(0)) abort.abort();
    await Promise.all(collectors.map((c) => c.waitForEnd(5_000).catch(() => undefined)));
    try {
      if (s.daemon && !s.daemon.exit) {
        const { processes } = await s.client.listProcesses({ states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] }, { timeoutMs: 5_000 });
        await Promise.all(processes.map((p) => s.stop(p.sandboxId)));
        await s.daemon.stop();
      }
    } finally {
      s.client?.close();
      if (s.fixture) await killProcessesMentioning(s.fixture.root);
      await s.netns?.remove();
      await s.fixture?.remove();
    }
  }, 60_000);

  return {
    s,
    /** A signal aborted at the end of the test (for watchers made outside collect()). */
    signal(): AbortSignal {
      const abort = new AbortController();
      aborts.push(abort);
      return abort.signal;
    },
    /** A collector over `exits`, ended by the returned abort controller (or at the end of the test). */
    collect(make: (signal: AbortSignal) => AsyncIterable<ProcessExit>): ExitCollector {
      const abort = new AbortController();
      aborts.push(abort);
      const collector = new ExitCollector(make(abort.signal));
      collectors.push(collector);
      return collector;
    },
  };
}

describeAsRoot('client: watchExitsReconnecting across real daemon restarts', () => {
  const { s, collect, signal } = useDaemonProcessSuite();

  it('delivers every exit exactly once across a SIGTERM restart and a SIGKILL crash, exits while down included', async () => {
    const reconnects: ReconnectEvent[] = [];
    const collector = collect((signal) =>
      s.client.watchExitsReconnecting({ startAfter: 0n, backoff: FAST_BACKOFF, signal, onReconnect: (e) => reconnects.push(e) }));

    // Live exits.
    await s.start('a1');
    await s.stop('a1');
    await s.start('a2');
    await s.stop('a2');
    await collector.waitForCount(2);

    // Graceful restart; b1 dies while no daemon runs, b2 survives and is stopped afterwards.
    const b1 = await s.start('b1');
    await s.start('b2');
    await s.restart('SIGTERM', () => killBehindDaemon(b1));
    await s.stop('b2');
    await collector.waitForCount(4);

    // Crash (no goodbye on the stream); c1 dies while down, c2 lives a whole cycle after the restart.
    const c1 = await s.start('c1');
    await s.restart('SIGKILL', () => killBehindDaemon(c1));
    await s.start('c2');
    await s.stop('c2');
    const seen = await collector.waitForCount(6);

    expect(seen.map((e) => e.sandboxId)).toEqual(['a1', 'a2', 'b1', 'b2', 'c1', 'c2']);
    expect(sequencesOf(seen)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(seen.find((e) => e.sandboxId === 'b1')?.signal).toBe('SIGKILL');
    // The daemon's own history agrees, exit for exit.
    const history = new ExitCollector(s.client.watchExits({ afterSequence: 0n }), (e) => e.sequence === 6n);
    expect(await history.waitForCount(6)).toEqual(seen);
    // Both breaks were noticed as UNAVAILABLE and retried after the last exit delivered by then.
    expect(reconnects.length).toBeGreaterThanOrEqual(2);
    expect(reconnects.every((r) => isRpcError(r.error, Status.UNAVAILABLE))).toBe(true);
    expect([...new Set(reconnects.map((r) => r.cursor))]).toEqual([2n, 4n]);
    // Nothing more arrived, and nothing twice.
    expect(collector.exits).toHaveLength(6);
    expect(collector.error).toBeUndefined();
  }, 90_000);

  it('starts after the latest exit by default, and a fromList snapshot lines up with the watch', async () => {
    const { snapshot, exits } = await s.client.watchExitsFromList({}, { backoff: FAST_BACKOFF, signal: signal() });
    const latest = snapshot.exitSequence;
    expect(exits.cursor).toBe(latest);
    expect(snapshot.processes.map((p) => p.sandboxId).sort()).toEqual(['a1', 'a2', 'b1', 'b2', 'c1', 'c2']);
    const fromList = collect(() => exits);
    const fromNow = collect((signal) => s.client.watchExitsReconnecting({ backoff: FAST_BACKOFF, signal }));
    await s.start('d1');
    await s.stop('d1');
    const [viaList] = await fromList.waitForCount(1);
    const [viaNow] = await fromNow.waitForCount(1);
    expect(viaList).toEqual(viaNow);
    expect(viaList!.sequence).toBe(latest + 1n);
    expect(exits.cursor).toBe(latest + 1n);
  }, 60_000);
});

describeAsRoot('client: watchExitsReconnecting when the history no longer reaches its cursor (--exit-history 2)', () => {
  const { s, collect, signal } = useDaemonProcessSuite({ exitHistory: 2 });

  it('throws ExitHistoryGapError with the cursor; resyncing with ListProcesses then works', async () => {
    const collector = collect((signal) => s.client.watchExitsReconnecting({ startAfter: 0n, backoff: FAST_BACKOFF, signal }));
    await s.start('e1');
    await s.stop('e1');
    await collector.waitForCount(1);

    // Three exits while the daemon is down: the restarted daemon keeps only the last two.
    const pids = [await s.start('f1'), await s.start('f2'), await s.start('f3')];
    await s.restart('SIGTERM', async () => {
      for (const pid of pids) await killBehindDaemon(pid);
    });
    await collector.waitForEnd();
    expect(collector.exits.map((e) => e.sandboxId)).toEqual(['e1']);
    expect(collector.error).toBeInstanceOf(ExitHistoryGapError);
    const gap = collector.error as ExitHistoryGapError;
    expect(gap.cursor).toBe(1n);
    expect(isRpcError(gap, Status.OUT_OF_RANGE)).toBe(true);
    expect(gap.details).toContain('older than the retained exit history');
    expect(gap.message).toContain('resync with ListProcesses');

    // Resync: the snapshot shows how f1..f3 ended; the watch continues after it.
    const { snapshot, exits } = await s.client.watchExitsFromList({}, { backoff: FAST_BACKOFF, signal: signal() });
    expect(snapshot.exitSequence).toBe(4n);
    // (Only as many exited records as the history keeps: two of f1..f3.)
    const ended = snapshot.processes.filter((p) => p.sandboxId.startsWith('f'));
    expect(ended.map((p) => p.exit?.signal)).toEqual(['SIGKILL', 'SIGKILL']);
    const resumed = collect(() => exits);
    await s.start('g1');
    await s.stop('g1');
    expect((await resumed.waitForCount(1)).map((e) => [e.sandboxId, e.sequence])).toEqual([['g1', 5n]]);

    // A cursor that was never reached is out of range as well: the same typed error.
    const ahead = new ExitCollector(s.client.watchExitsReconnecting({ startAfter: 99n, backoff: FAST_BACKOFF }));
    await ahead.waitForEnd(WAIT_MS);
    expect(ahead.error).toBeInstanceOf(ExitHistoryGapError);
    expect((ahead.error as ExitHistoryGapError).cursor).toBe(99n);
  }, 90_000);
});
