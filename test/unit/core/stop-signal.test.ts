/** StopProcess, SignalProcess and the exits they cause, through the core with fake ports. */
import { describe, expect, it } from '@jest/globals';
import { expectVmprocError, rejectionOf } from '../support/errors.js';
import { bootRequest, coreHarness, settle, track } from './fakes.js';

describe('core: stop', () => {
  it('SIGTERM to the group; resolves EXITED once the exit is seen; STOPPED with the daemon as the sender', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    const startedStop = h.clock.now().getTime();
    const stopped = await h.supervisor.stop('sb-1', 5_000);
    expect(stopped).toMatchObject({ state: 'exited', exit: { sequence: 1, reason: 'stopped', signal: 'SIGTERM', signalSentByDaemon: true, message: 'stopped (signal SIGTERM)' } });
    expect(h.host.processes[0]!.signals).toEqual(['SIGTERM']);
    expect(h.store.operations.find((o) => o.op === 'stopping')?.detail).toEqual({ killAt: new Date(startedStop + 5_000) });
    expect(h.layout.removedSockets).toEqual(['/run/fake/sb-1.sock']);
    expect(h.layout.removedLaunchFiles).toEqual([h.host.launches[0]!.files.statusPath]);
  });

  it('goes ahead when the stop cannot be recorded (a full state disk): the VMM is stopped and its exit published', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    h.store.failing.add('stopping');
    h.store.failing.add('exited');
    const stopped = await h.supervisor.stop('sb-1', 5_000);
    expect(stopped).toMatchObject({ state: 'exited', exit: { sequence: 1, reason: 'stopped', signal: 'SIGTERM', signalSentByDaemon: true } });
    expect(h.host.processes[0]!.signals).toEqual(['SIGTERM']);
    expect(h.exits.map((e) => e.sandboxId)).toEqual(['sb-1']);
  });

  it('SIGKILL exactly at the end of the grace period for a VMM that ignores SIGTERM', async () => {
    const h = await coreHarness();
    h.host.behaviour = { ignoreSigterm: true };
    await h.supervisor.start(bootRequest('sb-1'));
    const stop = track(h.supervisor.stop('sb-1', 10_000));
    await h.clock.advance(9_999);
    expect({ settled: stop.settled, signals: h.host.processes[0]!.signals }).toEqual({ settled: false, signals: ['SIGTERM'] });
    await h.clock.advance(1);
    expect(stop.value).toMatchObject({ exit: { reason: 'stopped', signal: 'SIGKILL', signalSentByDaemon: true } });
    expect(h.host.processes[0]!.signals).toEqual(['SIGTERM', 'SIGKILL']);
  });

  it('a grace period of zero is SIGKILL at once; the default is 10 s', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('now'));
    await h.supervisor.stop('now', 0);
    expect(h.host.processes[0]!.signals).toEqual(['SIGKILL']);
    h.host.behaviour = { ignoreSigterm: true };
    await h.supervisor.start(bootRequest('default'));
    const stop = track(h.supervisor.stop('default'));
    await h.clock.advance(9_999);
    expect(stop.settled).toBe(false);
    await h.clock.advance(1);
    expect(stop.value?.exit?.signal).toBe('SIGKILL');
  });

  it('the longest grace period (1 hour) waits the whole hour; a longer one is INVALID_ARGUMENT', async () => {
    const h = await coreHarness();
    h.host.behaviour = { ignoreSigterm: true };
    await h.supervisor.start(bootRequest('sb-1'));
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.stop('sb-1', 30 * 24 * 3600 * 1000))), 'invalid-argument', 'grace_period must be at most 3600s (got 2592000s)');
    const hour = 3600 * 1000;
    const stop = track(h.supervisor.stop('sb-1', hour));
    await h.clock.advance(hour - 1);
    expect(stop.settled).toBe(false);
    await h.clock.advance(1);
    expect(stop.value?.exit?.signal).toBe('SIGKILL');
  });

  it('concurrent stops share one stop: one SIGTERM, the first grace period, the same result', async () => {
    const h = await coreHarness();
    h.host.behaviour = { ignoreSigterm: true };
    await h.supervisor.start(bootRequest('sb-1'));
    const first = h.supervisor.stop('sb-1', 1_000);
    const second = h.supervisor.stop('sb-1', 60_000);
    expect(second).toBe(first);
    await h.clock.advance(1_000);
    expect(await first).toBe(await second);
    expect(h.host.processes[0]!.signals).toEqual(['SIGTERM', 'SIGKILL']);
  });

  it('stopping an exited process returns its record; an unknown one is NOT_FOUND; a negative grace INVALID_ARGUMENT', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    const exited = await h.supervisor.stop('sb-1', 0);
    expect(await h.supervisor.stop('sb-1', 0)).toBe(exited);
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.stop('nope'))), 'not-found', 'no process for sandbox "nope"');
    await h.supervisor.start(bootRequest('sb-2'));
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.stop('sb-2', -1))), 'invalid-argument', 'grace_period must not be negative');
    expect(h.exits).toHaveLength(1);
  });

  it('a VMM that survives SIGKILL fails the stop with INTERNAL after 5 s; a later stop retries', async () => {
    const h = await coreHarness();
    h.host.behaviour = { unkillable: true };
    await h.supervisor.start(bootRequest('sb-1'));
    const first = track(h.supervisor.stop('sb-1', 0));
    await h.clock.advance(5_000);
    expectVmprocError(first.error, 'internal', 'survived SIGKILL for 5s');
    expect(h.supervisor.get('sb-1').state).toBe('stopping');
    h.host.processes[0]!.behaviour = {};
    const retry = await h.supervisor.stop('sb-1', 0);
    expect(retry.exit).toMatchObject({ reason: 'stopped', signal: 'SIGKILL' });
    expect(h.host.processes[0]!.signals).toEqual(['SIGKILL', 'SIGKILL']);
  });
});

describe('core: signal', () => {
  it('sends a signal by name to the group and records it; the process goes on', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    const snapshot = await h.supervisor.signal('sb-1', 'usr1');
    expect(snapshot.state).toBe('running');
    expect(h.host.processes[0]!.signals).toEqual([10]);
    expect(h.store.operations.find((o) => o.op === 'signalled')).toEqual({ op: 'signalled', id: 'sb-1', detail: { signal: 'SIGUSR1' } });
  });

  it('an unknown signal is INVALID_ARGUMENT; a launch without a process yet, or an exited one, FAILED_PRECONDITION', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    expectVmprocError(await rejectionOf(h.supervisor.signal('sb-1', 'SIGNOPE')), 'invalid-argument', 'unknown signal "SIGNOPE"');
    h.host.processes[0]!.end({ code: 0 });
    await settle();
    expectVmprocError(await rejectionOf(h.supervisor.signal('sb-1', 'USR1')), 'failed-precondition', 'sandbox sb-1 has exited (exited, exit code 0); nothing to signal');
    h.host.holdLaunches = true;
    const start = track(h.supervisor.start(bootRequest('sb-2')));
    await settle();
    expectVmprocError(await rejectionOf(h.supervisor.signal('sb-2', 'USR1')), 'failed-precondition', 'sandbox sb-2 is being launched and has no process yet');
    h.host.held[0]!.release();
    await settle();
    expect(start.value?.state).toBe('running');
  });

  it('a death by a signal the daemon sent is SIGNALED with the daemon as the sender; by a stranger\'s, not', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('ours'));
    await h.supervisor.signal('ours', 'SIGTERM');
    await settle();
    await h.supervisor.start(bootRequest('theirs'));
    h.host.processes[1]!.end({ signal: 'SIGSEGV' });
    await settle();
    expect(h.exits.map((e) => ({ id: e.sandboxId, reason: e.reason, signal: e.signal, byDaemon: e.signalSentByDaemon }))).toEqual([
      { id: 'ours', reason: 'signaled', signal: 'SIGTERM', byDaemon: true },
      { id: 'theirs', reason: 'signaled', signal: 'SIGSEGV', byDaemon: false },
    ]);
  });

  it('an exit on its own is EXITED with its code, whatever the code', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    h.layout.logTail = 'unused: the reaper read the tail';
    h.host.processes[0]!.end({ code: 7 }, 'last words');
    await settle();
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'exited', exitCode: 7, stderrTail: 'last words', message: 'exited on its own (exit code 7)' })]);
    expect((await h.supervisor.wait('sb-1')).exit?.exitCode).toBe(7);
  });

  it('an end nobody saw is LOST, with the log\'s tail read by the daemon', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    h.layout.logTail = 'tail from the log';
    h.host.processes[0]!.end(undefined);
    await settle();
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'lost', stderrTail: 'tail from the log', message: 'the exit status could not be observed: its reaper ended without recording it' })]);
  });
});

describe('core: exit recording', () => {
  it('publishes an exit even when the store cannot record it, and keeps the reaper\'s files then', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    h.store.failing.add('exited');
    h.host.processes[0]!.end({ code: 0 });
    await settle();
    expect(h.exits).toHaveLength(1);
    expect(h.layout.removedLaunchFiles).toEqual([]);
  });

  it('lists processes and the exit sequence from one instant, filtered by state and labels', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('a', { labels: { team: 'a' } }));
    await h.supervisor.start(bootRequest('b', { labels: { team: 'b' } }));
    await h.supervisor.stop('a', 0);
    expect(h.supervisor.list({ states: ['running'] }).processes.map((p) => p.sandboxId)).toEqual(['b']);
    expect(h.supervisor.list({ labels: { team: 'a' } })).toMatchObject({ processes: [{ sandboxId: 'a', state: 'exited' }], exitSequence: 1 });
  });

  it('forgets the oldest exited records past the limit, with their logs, and a relaunch waits for that', async () => {
    const h = await coreHarness({ exitedRecordLimit: 2 });
    for (const id of ['a', 'b', 'c']) {
      await h.supervisor.start(bootRequest(id));
      await h.supervisor.stop(id, 0);
    }
    expect(h.supervisor.list().processes.map((p) => p.sandboxId)).toEqual(['b', 'c']);
    expect(h.layout.removedLogs).toEqual(['/run/fake/logs/a.log']);
    expect((await h.supervisor.start(bootRequest('a'))).state).toBe('running');
  });
});
