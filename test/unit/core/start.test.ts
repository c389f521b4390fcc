/**
 * StartProcess through the supervisor's core with fake ports: every way a start ends, and that
 * every spawned process gets exactly one exit, in milliseconds and without root.
 */
import { describe, expect, it } from '@jest/globals';
import { VmprocError } from '../../../src/errors.js';
import { ENDING_VMM_WAIT_MS } from '../../../src/core/start-process.js';
import { expectVmprocError, rejectionOf } from '../support/errors.js';
import { bootRequest, coreHarness, settle, track } from './fakes.js';

describe('core: a start that succeeds', () => {
  it('resolves RUNNING with the pid, ready time and VMM version, and journals launch, spawn and ready in order', async () => {
    const h = await coreHarness();
    const snapshot = await h.supervisor.start(bootRequest('sb-1'));
    expect(snapshot).toMatchObject({
      sandboxId: 'sb-1',
      state: 'running',
      pid: h.host.processes[0]!.identity.pid,
      vmmVersion: '53.0.0',
      socketPath: '/run/fake/sb-1.sock',
      logPath: '/run/fake/logs/sb-1.log',
      labels: { team: 'a' },
    });
    expect(snapshot.readyAt).toEqual(h.clock.now());
    expect(h.store.of('sb-1')).toEqual(['launching', 'spawned', 'ready']);
    expect(h.exits).toEqual([]);
  });

  it('after ready, cancelling the caller has no effect on the VMM', async () => {
    const h = await coreHarness();
    const abort = new AbortController();
    await h.supervisor.start(bootRequest('sb-1'), abort.signal);
    abort.abort();
    await settle();
    expect({ state: h.supervisor.get('sb-1').state, signals: h.host.processes[0]!.signals }).toEqual({ state: 'running', signals: [] });
  });

  it('restores the snapshot once the VMM answers, in restore mode', async () => {
    const h = await coreHarness();
    const restore = { sourceUrl: 'file:///snap/1', memoryRestoreMode: 'OnDemand' as const, resume: true, prefault: false };
    const snapshot = await h.supervisor.start({ ...bootRequest('sb-1'), mode: 'restore', kernelPath: '', restore });
    expect(snapshot.state).toBe('running');
    expect(h.vmm.restores).toEqual([{ socketPath: '/run/fake/sb-1.sock', restore }]);
  });
});

describe('core: a start refused before anything is spawned', () => {
  it('an invalid request is INVALID_ARGUMENT: nothing launched, recorded or published', async () => {
    const h = await coreHarness();
    expectVmprocError(await rejectionOf(h.supervisor.start(bootRequest('bad id'))), 'invalid-argument', 'sandbox_id');
    expect({ launches: h.host.launches.length, store: h.store.operations, exits: h.exits }).toEqual({ launches: 0, store: [], exits: [] });
  });

  it('what the host lacks is the host check\'s error, before any launch', async () => {
    const h = await coreHarness();
    h.host.notLaunchable = new VmprocError('failed-precondition', 'rootfs_path /images/rootfs.ext4 does not exist');
    expectVmprocError(await rejectionOf(h.supervisor.start(bootRequest('sb-1'))), 'failed-precondition', 'does not exist');
    expect(h.host.launches).toHaveLength(0);
  });

  it('a second start of a live sandbox is ALREADY_EXISTS; a live socket of another is FAILED_PRECONDITION', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    expectVmprocError(await rejectionOf(h.supervisor.start(bootRequest('sb-1'))), 'already-exists', 'sandbox sb-1 is already running');
    const taken = await rejectionOf(h.supervisor.start(bootRequest('sb-2', { socketPath: '/run/fake/sb-1.sock' })));
    expectVmprocError(taken, 'failed-precondition', 'socket_path /run/fake/sb-1.sock belongs to sandbox sb-1, which is running');
    expect(h.host.launches).toHaveLength(1);
  });

  it('two concurrent starts of one ID: exactly one gets it', async () => {
    const h = await coreHarness();
    const results = await Promise.allSettled([h.supervisor.start(bootRequest('sb-1')), h.supervisor.start(bootRequest('sb-1'))]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(h.host.launches).toHaveLength(1);
  });

  it('a launch that fails spawns nothing: the reservation is released, the launch abandoned, nothing published', async () => {
    const h = await coreHarness();
    h.host.launchFailure = new Error('spawner said: cannot open log');
    expectVmprocError(await rejectionOf(h.supervisor.start(bootRequest('sb-1'))), 'internal', 'cannot launch sandbox sb-1', 'cannot open log');
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.get('sb-1'))), 'not-found');
    expect(h.store.of('sb-1')).toEqual(['launching', 'abandoned']);
    expect(h.exits).toEqual([]);
    // The socket and ID are free again.
    expect((await h.supervisor.start(bootRequest('sb-1'))).state).toBe('running');
  });

  it('a launch record refused for a full state disk is RESOURCE_EXHAUSTED with the store\'s message, and spawns nothing', async () => {
    const h = await coreHarness();
    h.store.failing.add('launching');
    h.store.failure = () => new VmprocError('resource-exhausted', 'the state disk is full: cannot write to the state journal /state/state.journal (ENOSPC)');
    expectVmprocError(await rejectionOf(h.supervisor.start(bootRequest('sb-1'))), 'resource-exhausted', 'the state disk is full', '/state/state.journal');
    expect(h.host.launches).toEqual([]);
    expect(h.store.of('sb-1')).toEqual(['launching', 'abandoned']);
    expect(h.exits).toEqual([]);
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.get('sb-1'))), 'not-found');
  });

  it('a failed relaunch brings the previous exited record back', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    h.host.processes[0]!.end({ code: 3 });
    await settle();
    h.host.launchFailure = new VmprocError('unavailable', 'the spawner helper is not running; retry the start');
    expectVmprocError(await rejectionOf(h.supervisor.start(bootRequest('sb-1'))), 'unavailable');
    expect(h.supervisor.get('sb-1')).toMatchObject({ state: 'exited', exit: { exitCode: 3 } });
  });
});

describe('core: a start that fails once its VMM exists', () => {
  it('an exit before ready is FAILED_PRECONDITION with the exit status and stderr tail; START_FAILED is published once', async () => {
    const h = await coreHarness();
    h.vmm.holdReady = true;
    const start = track(h.supervisor.start(bootRequest('sb-1')));
    await settle();
    h.host.processes[0]!.end({ code: 1 }, 'Error: Cloud Hypervisor exited with the following chain of errors:\n  0: no /dev/kvm');
    await settle();
    expectVmprocError(start.error, 'failed-precondition', 'VMM of sandbox sb-1 exited before it was ready (exit code 1)', 'no /dev/kvm');
    expect(h.exits).toEqual([expect.objectContaining({ sequence: 1, sandboxId: 'sb-1', reason: 'start-failed', exitCode: 1, signalSentByDaemon: false })]);
    expect(h.layout.removedSockets).toEqual(['/run/fake/sb-1.sock']);
  });

  it('a VMM that dies during vm.create is FAILED_PRECONDITION with its exit, even when the call fails before the exit is recorded', async () => {
    // The exit removes the socket while it is being recorded: the start's vm.create then fails
    // (ENOENT: UNAVAILABLE) before the exit is published. The caller must hear of the exit.
    const h = await coreHarness();
    h.vmm.holding.add('create');
    h.vmm.failures.set('create', new VmprocError('unavailable', "creating the VM: the VMM's API did not answer: the API socket does not exist (ENOENT)"));
    let openGate!: () => void;
    h.layout.releaseGate = new Promise((resolve) => {
      openGate = resolve;
    });
    const start = track(h.supervisor.start(bootRequest('sb-1', { vm: { vcpus: 1, maxVcpus: 1, memoryMib: 64, maxMemoryMib: 0, cmdline: '', initramfsPath: '', rootfsReadonly: false, disks: [], net: [], pvpanic: false } })));
    await settle();
    expect(h.vmm.calls).toEqual(['create']);
    h.host.processes[0]!.end({ signal: 'SIGSEGV' }, 'segfault');
    await settle();
    h.vmm.release('create');
    await settle();
    openGate();
    await settle();
    expectVmprocError(start.error, 'failed-precondition', 'VMM of sandbox sb-1 exited before it was ready (signal SIGSEGV)', 'segfault');
    expect(h.exits).toEqual([expect.objectContaining({ sandboxId: 'sb-1', reason: 'start-failed', signal: 'SIGSEGV', signalSentByDaemon: false })]);
    expect(h.host.processes[0]!.signals).toEqual([]);
  });

  it('a VM call that fails because the VMM died under it, before its exit is reported, is FAILED_PRECONDITION with the exit', async () => {
    // SIGKILL (a SignalProcess, the OOM killer) during vm.create: the connection resets before
    // the reaper has told the daemon about the exit.
    const h = await coreHarness();
    h.vmm.holding.add('create');
    h.vmm.failures.set('create', new VmprocError('unavailable', "creating the VM: the VMM's API did not answer: the connection closed (ECONNRESET)"));
    const start = track(h.supervisor.start(bootRequest('sb-1', { vm: { vcpus: 1, maxVcpus: 1, memoryMib: 64, maxMemoryMib: 0, cmdline: '', initramfsPath: '', rootfsReadonly: false, disks: [], net: [], pvpanic: false } })));
    await settle();
    const vmm = h.host.processes[0]!;
    vmm.die();
    h.vmm.release('create');
    await settle();
    expect(start.settled).toBe(false);
    vmm.end({ signal: 'SIGKILL' });
    await settle();
    expectVmprocError(start.error, 'failed-precondition', 'VMM of sandbox sb-1 exited before it was ready (signal SIGKILL)');
    expect(h.exits).toEqual([expect.objectContaining({ sandboxId: 'sb-1', reason: 'start-failed', signal: 'SIGKILL' })]);
    expect(vmm.signals).toEqual([]);
  });

  it('not ready within ready_timeout is DEADLINE_EXCEEDED: the VMM is SIGKILLed and START_TIMEOUT published', async () => {
    const h = await coreHarness();
    h.vmm.holdReady = true;
    const start = track(h.supervisor.start(bootRequest('sb-1', { readyTimeoutMs: 2_000 })));
    await h.clock.advance(1_999);
    expect(start.settled).toBe(false);
    await h.clock.advance(1);
    expectVmprocError(start.error, 'deadline-exceeded', 'not ready within 2000ms');
    expect(h.host.processes[0]!.signals).toEqual(['SIGKILL']);
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'start-timeout', signal: 'SIGKILL', signalSentByDaemon: true, message: 'not ready within 2000ms' })]);
    expect(h.store.of('sb-1')).toEqual(['launching', 'spawned', 'startFailed', 'exited']);
  });

  it('a refused restore carries the VMM\'s error to the caller and the exit', async () => {
    const h = await coreHarness();
    h.vmm.restoreFailure = new VmprocError('failed-precondition', 'restoring the snapshot: the VMM refused: Snapshot state is corrupt');
    const failure = await rejectionOf(h.supervisor.start({ ...bootRequest('sb-1'), mode: 'restore', kernelPath: '', restore: { sourceUrl: 'file:///snap', resume: true, prefault: false } }));
    expectVmprocError(failure, 'failed-precondition', 'Snapshot state is corrupt');
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'start-failed', signal: 'SIGKILL', message: expect.stringContaining('Snapshot state is corrupt') })]);
  });

  it('a VMM API that stops answering during the restore is UNAVAILABLE (mapped by the VMM adapter), not a refusal', async () => {
    const h = await coreHarness();
    h.vmm.restoreFailure = new VmprocError('unavailable', "restoring the snapshot: the VMM's API did not answer: reset");
    const start = track(h.supervisor.start({ ...bootRequest('sb-1'), mode: 'restore', kernelPath: '', restore: { sourceUrl: 'file:///snap', resume: true, prefault: false } }));
    await settle();
    // It waits a moment for a VMM that might be on its way out; this one stays.
    expect(start.settled).toBe(false);
    await h.clock.advance(ENDING_VMM_WAIT_MS);
    await settle();
    expectVmprocError(start.error, 'unavailable', 'did not answer');
    expect(h.exits).toHaveLength(1);
  });

  it('a VMM shutting down under a start (socket gone first, exit a moment later) is FAILED_PRECONDITION with its exit', async () => {
    const h = await coreHarness();
    h.vmm.failures.set('create', new VmprocError('unavailable', "creating the VM: the VMM's API did not answer: the API socket does not exist (ENOENT)"));
    h.vmm.holding.add('create');
    const start = track(h.supervisor.start(bootRequest('sb-1', { vm: { vcpus: 1, maxVcpus: 1, memoryMib: 64, maxMemoryMib: 0, cmdline: '', initramfsPath: '', rootfsReadonly: false, disks: [], net: [], pvpanic: false } })));
    await settle();
    h.vmm.release('create');
    await settle();
    expect(start.settled).toBe(false);
    await h.clock.advance(100);
    h.host.processes[0]!.end({ code: 0 });
    await settle();
    expectVmprocError(start.error, 'failed-precondition', 'VMM of sandbox sb-1 exited before it was ready (exit code 0)');
    expect(h.exits).toEqual([expect.objectContaining({ sandboxId: 'sb-1', reason: 'start-failed', exitCode: 0 })]);
  });

  it('a caller that cancels before the VMM is spawned gets CANCELLED, and the VMM is killed as soon as it exists', async () => {
    const h = await coreHarness();
    h.host.holdLaunches = true;
    const abort = new AbortController();
    const start = track(h.supervisor.start(bootRequest('sb-1'), abort.signal));
    await settle();
    expect(h.supervisor.get('sb-1')).toMatchObject({ state: 'starting', pid: 0 });
    abort.abort();
    h.host.held[0]!.release();
    await settle();
    expectVmprocError(start.error, 'cancelled', 'start cancelled by the client; the VMM was killed');
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'start-failed', message: 'start cancelled by the client', signalSentByDaemon: true })]);
    expect(h.supervisor.get('sb-1').state).toBe('exited');
  });

  it('a caller that cancels before validation is over gets CANCELLED and nothing is launched', async () => {
    const h = await coreHarness();
    const failure = await rejectionOf(h.supervisor.start(bootRequest('sb-1'), AbortSignal.abort()));
    expectVmprocError(failure, 'cancelled', 'start of sandbox sb-1 was cancelled by the client');
    expect(h.host.launches).toHaveLength(0);
  });

  it('a VMM that survives SIGKILL after a failed start is INTERNAL after the backstop', async () => {
    const h = await coreHarness();
    h.vmm.holdReady = true;
    h.host.behaviour = { unkillable: true };
    const start = track(h.supervisor.start(bootRequest('sb-1', { readyTimeoutMs: 1_000 })));
    await h.clock.advance(1_000);
    expect(start.settled).toBe(false);
    await h.clock.advance(5_000);
    expectVmprocError(start.error, 'internal', 'failed to start and survived SIGKILL for 5s');
    // It is still ours: its exit, whenever it comes, is published.
    h.host.processes[0]!.end({ signal: 'SIGKILL' });
    await settle();
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'start-timeout' })]);
  });
});

describe('core: a stop while starting', () => {
  it('before the PID is known: the start is ABORTED, the stop returns the exit, STOPPED is published once', async () => {
    const h = await coreHarness();
    h.host.holdLaunches = true;
    const start = track(h.supervisor.start(bootRequest('sb-1')));
    await settle();
    const stop = track(h.supervisor.stop('sb-1', 5_000));
    await settle();
    expect(h.supervisor.get('sb-1').state).toBe('stopping');
    h.host.held[0]!.release();
    await settle();
    expectVmprocError(start.error, 'aborted', 'sandbox sb-1: stopped by StopProcess while starting');
    expect(stop.value).toMatchObject({ state: 'exited', exit: { reason: 'stopped', signal: 'SIGTERM', signalSentByDaemon: true } });
    expect(h.exits).toHaveLength(1);
  });

  it('after the spawn, before ready: the same, with the stop\'s grace period', async () => {
    const h = await coreHarness();
    h.vmm.holdReady = true;
    h.host.behaviour = { ignoreSigterm: true };
    const start = track(h.supervisor.start(bootRequest('sb-1')));
    await settle();
    const stop = track(h.supervisor.stop('sb-1', 3_000));
    await h.clock.advance(2_999);
    expect({ start: start.settled, stop: stop.settled, signals: h.host.processes[0]!.signals }).toEqual({ start: false, stop: false, signals: ['SIGTERM'] });
    await h.clock.advance(1);
    expectVmprocError(start.error, 'aborted');
    expect(stop.value).toMatchObject({ exit: { reason: 'stopped', signal: 'SIGKILL' } });
    expect(h.exits).toHaveLength(1);
  });
});

describe('core: shutdown', () => {
  it('abandons starts not yet ready (UNAVAILABLE, START_FAILED) and leaves running VMMs alone', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('running'));
    h.vmm.holdReady = true;
    const start = track(h.supervisor.start(bootRequest('starting')));
    await settle();
    await h.supervisor.shutdown();
    await settle();
    expectVmprocError(start.error, 'unavailable', 'the daemon is shutting down; the VMM was killed before it was ready');
    expect(h.exits).toEqual([expect.objectContaining({ sandboxId: 'starting', reason: 'start-failed', message: 'daemon shut down during the start' })]);
    expect({ running: h.supervisor.get('running').state, signals: h.host.processes[0]!.signals, hostClosed: h.host.closed }).toEqual({ running: 'running', signals: [], hostClosed: true });
    expectVmprocError(await rejectionOf(h.supervisor.start(bootRequest('late'))), 'unavailable', 'shutting down');
  });

  it('after shutdown, an end is left for the next daemon to record', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    await h.supervisor.shutdown();
    h.host.processes[0]!.end({ code: 0 });
    await settle();
    expect({ exits: h.exits, recorded: h.store.of('sb-1') }).toEqual({ exits: [], recorded: ['launching', 'spawned', 'ready'] });
  });
});
