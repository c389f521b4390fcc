/**
 * Re-adoption after a daemon restart, through the core with fake ports: what a previous daemon
 * recorded (PersistedState) against what the host still runs.
 */
import { describe, expect, it } from '@jest/globals';
import type { ProcessExitEvent, ProcessIdentity } from '../../../src/core/domain.js';
import type { PersistedProcess, PersistedState } from '../../../src/core/ports.js';
import { validateStartRequest } from '../../../src/validation/start-request.js';
import { expectVmprocError, rejectionOf } from '../support/errors.js';
import { bootRequest, type CoreHarness, coreHarness, DEFAULTS, settle, track } from './fakes.js';

/** What a previous daemon journalled for `sandboxId`, launched `agoMs` before the fake clock's now. */
function persisted(h: CoreHarness, sandboxId: string, extra: Partial<PersistedProcess> = {}, agoMs = 60_000): PersistedProcess {
  return {
    spec: validateStartRequest(bootRequest(sandboxId), DEFAULTS),
    logPath: `/run/fake/logs/${sandboxId}.log`,
    statusPath: `/run/fake/exits/${sandboxId}.old.status`,
    startedAt: new Date(h.clock.now().getTime() - agoMs),
    bootId: h.host.boot,
    signalsSent: [],
    ...extra,
  };
}

function state(...processes: PersistedProcess[]): PersistedState {
  const exits = processes.flatMap((p) => (p.exit ? [p.exit] : [])).sort((a, b) => a.sequence - b.sequence);
  return { processes: new Map(processes.map((p) => [p.spec.sandboxId, p])), exits, lastSequence: exits.at(-1)?.sequence ?? 0, events: [], lastEventSequence: 0, droppedTailBytes: 0 };
}

function exitEvent(sequence: number, sandboxId: string): ProcessExitEvent {
  return { sequence, sandboxId, pid: 42, exitCode: 0, reason: 'exited', exitedAt: new Date(0), startedAt: new Date(0), labels: {}, stderrTail: '', message: 'exited on its own (exit code 0)', signalSentByDaemon: false };
}

const ready = (h: CoreHarness) => ({ readyAt: new Date(h.clock.now().getTime() - 59_000), vmmVersion: '53.0.0' });

describe('core: recovery', () => {
  it('brings exited records back for Get and Wait, and re-adopts a VMM that still runs', async () => {
    const h = await coreHarness({ initialSequence: 1 });
    const identity = h.host.survivor();
    await h.supervisor.recover(state(persisted(h, 'done', { exit: exitEvent(1, 'done') }), persisted(h, 'alive', { identity, ...ready(h) })));
    expect(h.supervisor.get('done')).toMatchObject({ state: 'exited', exit: { sequence: 1 } });
    expect((await h.supervisor.wait('done')).exit?.sequence).toBe(1);
    expect(h.supervisor.get('alive')).toMatchObject({ state: 'running', pid: identity.pid, vmmVersion: '53.0.0' });
    expect(h.exits).toEqual([]);
    // Fully supervised again: its exit comes with the next sequence, a stop works.
    await h.supervisor.stop('alive', 1_000);
    expect(h.exits).toEqual([expect.objectContaining({ sequence: 2, sandboxId: 'alive', reason: 'stopped', signal: 'SIGTERM' })]);
    expect(h.layout.orphanSweeps).toEqual([[{ logPath: '/run/fake/logs/alive.log', statusPath: '/run/fake/exits/alive.old.status' }]]);
  });

  it('an exit journalled by a daemon killed before its clean-up gets its socket files released; finished ones do not', async () => {
    // The previous daemon journalled both exits; it died before removing cut-1's socket, lock and
    // status file (the status file goes last). done-1 was cleaned up.
    const h = await coreHarness({ initialSequence: 2 });
    const cut = persisted(h, 'cut-1', { exit: exitEvent(1, 'cut-1'), ...ready(h), socketFiles: { socket: '1:2:3', lock: '1:4:5' } });
    const done = persisted(h, 'done-1', { exit: exitEvent(2, 'done-1') });
    h.layout.statusFilesOnDisk.add(cut.statusPath);
    await h.supervisor.recover(state(cut, done));
    expect({ removed: h.layout.removedSockets, known: h.layout.releasedSocketFiles }).toEqual({ removed: ['/run/fake/cut-1.sock'], known: [{ socket: '1:2:3', lock: '1:4:5' }] });
    expect(h.exits).toEqual([]);
  });

  it('an unfinished exit\'s socket path that a live VMM has by now is left to that VMM', async () => {
    const h = await coreHarness({ initialSequence: 1 });
    const identity = h.host.survivor();
    const cut = persisted(h, 'cut-1', { exit: exitEvent(1, 'cut-1') });
    const live = persisted(h, 'live-1', { identity, ...ready(h), spec: validateStartRequest({ ...bootRequest('live-1'), socketPath: '/run/fake/cut-1.sock' }, DEFAULTS) });
    h.layout.statusFilesOnDisk.add(cut.statusPath);
    await h.supervisor.recover(state(cut, live));
    expect(h.layout.removedSockets).toEqual([]);
    expect(h.supervisor.get('live-1').state).toBe('running');
  });

  it('a VMM that ended while the daemon was down gets the exit its reaper recorded, before recover() resolves', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor();
    const record = persisted(h, 'sb-1', { identity, ...ready(h) });
    h.host.survivors.get(identity.pid)!.process = undefined;
    h.host.survivors.delete(identity.pid);
    h.host.recorded.set(record.statusPath, { pid: identity.pid, exitCode: 4, coreDumped: false, exitedAt: new Date(5), logTail: 'bye' });
    await h.supervisor.recover(state(record));
    expect(h.exits).toEqual([expect.objectContaining({ sandboxId: 'sb-1', reason: 'exited', exitCode: 4, stderrTail: 'bye', exitedAt: new Date(5) })]);
  });

  it('an exit found at recovery that the store cannot record is published, and its reaper\'s record kept for the next daemon', async () => {
    const h = await coreHarness({ initialSequence: 7 });
    const identity = h.host.survivor();
    const record = persisted(h, 'sb-1', { identity, ...ready(h) });
    h.host.survivors.get(identity.pid)!.process = undefined;
    h.host.survivors.delete(identity.pid);
    h.host.recorded.set(record.statusPath, { pid: identity.pid, exitCode: 4, coreDumped: false, exitedAt: new Date(5), logTail: 'bye' });
    h.store.failing.add('exited');
    await h.supervisor.recover(state(record));
    await settle();
    expect(h.exits).toEqual([expect.objectContaining({ sequence: 8, sandboxId: 'sb-1', exitCode: 4 })]);
    expect(h.layout.removedLaunchFiles).toEqual([]);
    expect(h.layout.orphanSweeps).toEqual([[{ logPath: record.logPath, statusPath: record.statusPath }]]);
  });

  it('a VMM gone with its reaper and no record is LOST; so is everything after a host reboot', async () => {
    const h = await coreHarness();
    const gone: ProcessIdentity = { pid: 9, startTime: 9n, reaperPid: 8, reaperStartTime: 8n };
    const survivor = h.host.survivor();
    await h.supervisor.recover(state(
      persisted(h, 'gone', { identity: gone, ...ready(h) }),
      persisted(h, 'rebooted', { identity: survivor, ...ready(h), bootId: 'boot-0' }),
    ));
    expect(h.exits.map((e) => [e.sandboxId, e.reason, e.message]).sort()).toEqual([
      ['gone', 'lost', 'it ended while vmprocd was down, and its reaper left no status'],
      ['rebooted', 'lost', 'the host rebooted while vmprocd was down; the VMM ended with it'],
    ]);
    expect(h.host.processes.filter((p) => p.identity.pid === survivor.pid)).toEqual([]);
  });

  it('a reaper that records the exit and ends while recovery looks: the exit it recorded, not LOST', async () => {
    const h = await coreHarness();
    const ended: ProcessIdentity = { pid: 19, startTime: 19n, reaperPid: 18, reaperStartTime: 18n };
    const record = persisted(h, 'racing', { identity: ended, ...ready(h) });
    // The first look finds no record; by the second, the reaper has written it and gone.
    let looks = 0;
    const recordedExit = h.host.recordedExit.bind(h.host);
    h.host.recordedExit = async (files) => {
      if (files.statusPath === record.statusPath && ++looks === 2) {
        return { pid: 19, exitCode: 19, coreDumped: false, exitedAt: h.clock.now() };
      }
      return recordedExit(files);
    };
    await h.supervisor.recover(state(record));
    expect(h.exits.map((e) => [e.sandboxId, e.reason, e.exitCode])).toEqual([['racing', 'exited', 19]]);
  });

  it('a VMM whose reaper is gone while it runs is still adopted', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor();
    await h.supervisor.recover(state(persisted(h, 'sb-1', { identity, ...ready(h) })));
    expect(h.supervisor.get('sb-1').state).toBe('running');
  });

  it('an interrupted stop goes on with its original SIGKILL deadline', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor({ ignoreSigterm: true });
    const killAt = new Date(h.clock.now().getTime() + 3_000);
    await h.supervisor.recover(state(persisted(h, 'sb-1', { identity, ...ready(h), stopKillAt: killAt })));
    const process = h.host.survivors.get(identity.pid)!.process!;
    expect(h.supervisor.get('sb-1').state).toBe('stopping');
    await settle();
    expect(process.signals).toEqual(['SIGTERM']);
    await h.clock.advance(2_999);
    expect(process.signals).toEqual(['SIGTERM']);
    await h.clock.advance(1);
    expect(process.signals).toEqual(['SIGTERM', 'SIGKILL']);
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'stopped', signal: 'SIGKILL', signalSentByDaemon: true })]);
    // A StopProcess now shares the resumed stop rather than starting another.
    expect((await h.supervisor.stop('sb-1')).exit?.reason).toBe('stopped');
  });

  it('an interrupted stop whose deadline passed while the daemon was down is SIGKILL at once', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor({ ignoreSigterm: true });
    await h.supervisor.recover(state(persisted(h, 'sb-1', { identity, ...ready(h), stopKillAt: new Date(h.clock.now().getTime() - 1) })));
    await settle();
    expect(h.host.survivors.get(identity.pid)!.process!.signals).toEqual(['SIGKILL']);
    expect(h.exits).toHaveLength(1);
  });

  it('an interrupted start is finished within what is left of its ready timeout', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor();
    await h.supervisor.recover(state(persisted(h, 'sb-1', { identity }, 1_000)));
    await settle();
    expect(h.supervisor.get('sb-1')).toMatchObject({ state: 'running', vmmVersion: '53.0.0' });
    expect(h.store.of('sb-1')).toEqual(['ready']);
  });

  it('an interrupted start whose ready timeout has passed is killed: START_TIMEOUT', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor();
    await h.supervisor.recover(state(persisted(h, 'sb-1', { identity }, 10_000)));
    await settle();
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'start-timeout', signal: 'SIGKILL', signalSentByDaemon: true })]);
  });

  it('an interrupted start the previous daemon was abandoning is killed, with the failure it recorded', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor();
    const startFailure = { reason: 'start-failed' as const, message: 'start cancelled by the client' };
    await h.supervisor.recover(state(persisted(h, 'sb-1', { identity, startFailure }, 1_000)));
    await settle();
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'start-failed', message: 'start cancelled by the client', signal: 'SIGKILL', signalSentByDaemon: true })]);
  });

  it('a start recorded as ready and then failed is killed too, not left running', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor();
    await h.supervisor.recover(state(persisted(h, 'sb-1', { identity, ...ready(h), startFailure: { reason: 'start-failed', message: 'cancelled' } })));
    await settle();
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'start-failed', signal: 'SIGKILL' })]);
  });

  it('a launch whose PIDs were never journalled is found through its reaper and adopted', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor();
    const record = persisted(h, 'sb-1', {}, 1_000);
    h.host.found.set(record.statusPath, { reaper: { pid: identity.reaperPid, startTime: identity.reaperStartTime }, vmm: { pid: identity.pid, startTime: identity.startTime } });
    await h.supervisor.recover(state(record));
    await settle();
    expect(h.store.operations.find((o) => o.op === 'spawned')).toEqual({ op: 'spawned', id: 'sb-1', detail: { identity, logOffset: 0 } });
    expect(h.supervisor.get('sb-1')).toMatchObject({ state: 'running', pid: identity.pid });
  });

  it('a launch found through its reaper is adopted even when its PIDs cannot be journalled (a full state disk)', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor();
    const record = persisted(h, 'sb-1', {}, 1_000);
    h.host.found.set(record.statusPath, { reaper: { pid: identity.reaperPid, startTime: identity.reaperStartTime }, vmm: { pid: identity.pid, startTime: identity.startTime } });
    h.store.failing.add('spawned');
    await h.supervisor.recover(state(record));
    await settle();
    expect(h.supervisor.get('sb-1')).toMatchObject({ state: 'running', pid: identity.pid });
  });

  it('a launch that never produced a process is dropped: no exit, the store forgets it', async () => {
    const h = await coreHarness();
    await h.supervisor.recover(state(persisted(h, 'sb-1', {}, 1_000)));
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.get('sb-1'))), 'not-found');
    expect({ exits: h.exits, store: h.store.of('sb-1') }).toEqual({ exits: [], store: ['abandoned'] });
  });

  it('a re-adopted VMM owns its socket and ID again: a start of either is refused', async () => {
    const h = await coreHarness();
    const identity = h.host.survivor();
    await h.supervisor.recover(state(persisted(h, 'sb-1', { identity, ...ready(h) })));
    expectVmprocError(await rejectionOf(h.supervisor.start(bootRequest('sb-1'))), 'already-exists');
    expectVmprocError(await rejectionOf(h.supervisor.start(bootRequest('sb-2', { socketPath: '/run/fake/sb-1.sock' }))), 'failed-precondition', 'belongs to sandbox sb-1');
    const wait = track(h.supervisor.wait('sb-1'));
    h.host.survivors.get(identity.pid)!.process!.end({ code: 0 });
    await settle();
    expect(wait.value?.exit?.reason).toBe('exited');
  });
});
