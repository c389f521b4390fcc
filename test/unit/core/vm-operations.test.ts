/**
 * Driving the VM through the core with fake ports: a start that creates and boots it, pause,
 * resume, snapshot (checkpoint, stay paused, hibernate), inspect, resize, and the one-at-a-time
 * lane with a stop's precedence.
 */
import { describe, expect, it } from '@jest/globals';
import type { VmRequest } from '../../../src/core/domain.js';
import { VmprocError } from '../../../src/errors.js';
import { expectVmprocError, rejectionOf } from '../support/errors.js';
import { bootRequest, coreHarness, settle, track } from './fakes.js';

const VM: VmRequest = {
  vcpus: 1,
  maxVcpus: 2,
  memoryMib: 64,
  maxMemoryMib: 0,
  cmdline: 'console=ttyS0',
  initramfsPath: '',
  rootfsReadonly: false,
  disks: [],
  net: [{ id: 'net0', tap: 'tap0', mac: '' }],
  pvpanic: false,
};

const withVm = (id: string, vm: Partial<VmRequest> = {}) => bootRequest(id, { vm: { ...VM, ...vm } });

describe('core: a start with a VM', () => {
  it('creates the VM, boots it, and returns once vm.info says it runs; vm_state is recorded', async () => {
    const h = await coreHarness();
    const snapshot = await h.supervisor.start(withVm('sb-1'));
    expect(snapshot).toMatchObject({ state: 'running', vmState: 'running' });
    expect(h.vmm.calls).toEqual(['create', 'boot', 'info']);
    expect(h.store.of('sb-1')).toEqual(['launching', 'spawned', 'vmState', 'ready']);
  });

  it('a bare VMM has no VM; a restore is running or paused as asked', async () => {
    const h = await coreHarness();
    expect((await h.supervisor.start(bootRequest('bare'))).vmState).toBe('not-created');
    const restore = (id: string, resume: boolean) => ({ ...bootRequest(id), mode: 'restore' as const, kernelPath: '', restore: { sourceUrl: 'file:///snap', resume, prefault: false } });
    h.vmm.state = undefined;
    expect((await h.supervisor.start(restore('resumed', true))).vmState).toBe('running');
    h.vmm.state = undefined;
    expect((await h.supervisor.start(restore('paused', false))).vmState).toBe('paused');
  });

  it('refuses a TAP that is not in the network namespace, and kills the VMM', async () => {
    const h = await coreHarness();
    const failure = await rejectionOf(h.supervisor.start(withVm('sb-1', { net: [{ id: 'n', tap: 'tap9', mac: '' }] })));
    expectVmprocError(failure, 'failed-precondition', 'TAP device tap9 does not exist in network namespace ns-1', 'ip tuntap add dev tap9 mode tap');
    expect(h.vmm.calls).toEqual([]);
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'start-failed', signal: 'SIGKILL' })]);
  });

  it("a VM Cloud Hypervisor will not boot fails the start with its error, and the VMM is killed", async () => {
    const h = await coreHarness();
    h.vmm.failures.set('boot', new VmprocError('failed-precondition', 'booting the VM: the VMM refused: Cannot open kernel file'));
    expectVmprocError(await rejectionOf(h.supervisor.start(withVm('sb-1'))), 'failed-precondition', 'Cannot open kernel file');
    expect(h.exits).toEqual([expect.objectContaining({ reason: 'start-failed', message: expect.stringContaining('Cannot open kernel file') })]);
  });
});

describe('core: pause, resume, inspect, resize', () => {
  it('pauses and resumes, keeping vm_state current and recorded', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    expect((await h.supervisor.pauseVm('sb-1')).vmState).toBe('paused');
    expect((await h.supervisor.resumeVm('sb-1')).vmState).toBe('running');
    expect(h.store.operations.filter((o) => o.op === 'vmState').map((o) => o.detail)).toEqual(['running', 'paused', 'running']);
  });

  it("passes Cloud Hypervisor's refusal on, with its message, and changes nothing", async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    expectVmprocError(await rejectionOf(h.supervisor.resumeVm('sb-1')), 'failed-precondition', 'Invalid transition');
    expect(h.supervisor.get('sb-1').vmState).toBe('running');
  });

  it('is FAILED_PRECONDITION for a process that is starting or has exited, and NOT_FOUND for an unknown one', async () => {
    const h = await coreHarness();
    h.vmm.holdReady = true;
    const start = track(h.supervisor.start(withVm('sb-1')));
    await settle();
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.pauseVm('sb-1'))), 'failed-precondition', 'sandbox sb-1 is still starting: cannot pause the VM');
    h.vmm.ready();
    await settle();
    expect(start.value?.state).toBe('running');
    await h.supervisor.stop('sb-1', 0);
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.vmInfo('sb-1'))), 'failed-precondition', 'has exited');
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.pauseVm('nope'))), 'not-found');
  });

  it('reads info and counters, noting the state vm.info reports', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    h.vmm.state = 'Paused'; // paused behind the daemon's back, e.g. through the VMM's own socket
    expect((await h.supervisor.vmInfo('sb-1')).state).toBe('paused');
    expect(h.supervisor.get('sb-1').vmState).toBe('paused');
    expect(await h.supervisor.vmCounters('sb-1')).toEqual({ rootfs: { read_bytes: 0n, write_bytes: 0n } });
  });

  it('resizes, and refuses a resize that changes nothing or is out of range', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    const { vm } = await h.supervisor.resizeVm('sb-1', { vcpus: 2 });
    expect(vm.vcpus).toBe(2);
    expect(h.vmm.calls).toContain('resize {"vcpus":2}');
    expectVmprocError(await rejectionOf(h.supervisor.resizeVm('sb-1', {})), 'invalid-argument', 'at least one of');
    expectVmprocError(await rejectionOf(h.supervisor.resizeVm('sb-1', { vcpus: 0 })), 'invalid-argument', 'vcpus 0');
  });
});

describe('core: snapshots', () => {
  it('a checkpoint pauses, snapshots and resumes: the VM runs on', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    const { process, snapshotUrl } = await h.supervisor.snapshotVm('sb-1', 'file:///snaps/s1', 'resume');
    expect({ url: snapshotUrl, state: process.state, vm: process.vmState }).toEqual({ url: 'file:///snaps/s1', state: 'running', vm: 'running' });
    expect(h.vmm.calls.slice(-3)).toEqual(['pause', 'snapshot file:///snaps/s1', 'resume']);
  });

  it('stay paused leaves it paused; a paused VM is not paused again', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    await h.supervisor.pauseVm('sb-1');
    const { process } = await h.supervisor.snapshotVm('sb-1', 'file:///snaps/s1', 'stay-paused');
    expect(process.vmState).toBe('paused');
    expect(h.vmm.calls.slice(-2)).toEqual(['pause', 'snapshot file:///snaps/s1']);
  });

  it('hibernate stops the VMM after the snapshot: its exit is STOPPED and says where the snapshot is', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    const { process, snapshotUrl } = await h.supervisor.snapshotVm('sb-1', 'file:///snaps/h1', 'stop');
    expect({ state: process.state, snapshotUrl }).toEqual({ state: 'exited', snapshotUrl: 'file:///snaps/h1' });
    expect(h.exits).toEqual([
      expect.objectContaining({ reason: 'stopped', snapshotUrl: 'file:///snaps/h1', signal: 'SIGTERM', message: 'stopped after a snapshot to file:///snaps/h1 (signal SIGTERM)' }),
    ]);
    expect(h.store.operations.find((o) => o.op === 'stopping')?.detail).toMatchObject({ snapshotUrl: 'file:///snaps/h1' });
  });

  it('a failed snapshot removes the directory it made and resumes the VM it paused', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    h.vmm.failures.set('snapshot', new VmprocError('failed-precondition', 'snapshotting the VM: the VMM refused: VM on-demand memory restore is still in progress'));
    expectVmprocError(await rejectionOf(h.supervisor.snapshotVm('sb-1', 'file:///snaps/s1', 'stay-paused')), 'failed-precondition', 'on-demand memory restore');
    expect({ removed: h.snapshotDirs.removed, vm: h.supervisor.get('sb-1').vmState, last: h.vmm.calls.at(-1) }).toEqual({ removed: ['/snaps/s1'], vm: 'running', last: 'resume' });
  });

  it('a destination the daemon refuses is refused before the VM is touched', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    h.snapshotDirs.failure = new VmprocError('permission-denied', 'destination_url file:///etc/x is outside the image roots');
    expectVmprocError(await rejectionOf(h.supervisor.snapshotVm('sb-1', 'file:///etc/x', 'resume')), 'permission-denied');
    expect(h.vmm.calls).not.toContain('pause');
  });
});

describe('core: one operation at a time, and a stop first', () => {
  it('runs a sandbox\'s operations in the order they came, one at a time', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    h.vmm.holding.add('pause');
    const pause = track(h.supervisor.pauseVm('sb-1'));
    const resume = track(h.supervisor.resumeVm('sb-1'));
    await settle();
    expect(h.vmm.calls.slice(-1)).toEqual(['pause']);
    h.vmm.release('pause');
    await settle();
    expect({ pause: pause.value?.vmState, resume: resume.value?.vmState, calls: h.vmm.calls.slice(-2) }).toEqual({ pause: 'paused', resume: 'running', calls: ['pause', 'resume'] });
  });

  it('a stop during a snapshot lets it finish, then stops; what was queued behind fails', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    h.vmm.holding.add('snapshot');
    const snapshot = track(h.supervisor.snapshotVm('sb-1', 'file:///snaps/s1', 'resume'));
    await settle();
    const queued = track(h.supervisor.pauseVm('sb-1'));
    const stop = track(h.supervisor.stop('sb-1', 10_000));
    await settle();
    expectVmprocError(queued.error, 'failed-precondition', 'sandbox sb-1 is being stopped');
    expect({ stop: stop.settled, signals: h.host.processes[0]!.signals }).toEqual({ stop: false, signals: [] });
    h.vmm.release('snapshot');
    await settle();
    expect(snapshot.value?.snapshotUrl).toBe('file:///snaps/s1');
    expect(stop.value?.exit).toMatchObject({ reason: 'stopped', signal: 'SIGTERM' });
    expectVmprocError(await rejectionOf(Promise.resolve().then(() => h.supervisor.resumeVm('sb-1'))), 'failed-precondition', 'has exited');
  });

  it('a stop waits for an operation in progress no longer than its grace period', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    h.vmm.holding.add('snapshot');
    void h.supervisor.snapshotVm('sb-1', 'file:///snaps/s1', 'resume').catch(() => undefined);
    await settle();
    const stop = track(h.supervisor.stop('sb-1', 3_000));
    await h.clock.advance(2_999);
    expect(h.host.processes[0]!.signals).toEqual([]);
    await h.clock.advance(1);
    expect(stop.value?.exit).toMatchObject({ reason: 'stopped', signal: 'SIGKILL' });
  });

  it('a signal waits its turn behind a VM operation; during a stop it goes straight through', async () => {
    const h = await coreHarness();
    h.host.behaviour = { ignoreSigterm: true };
    await h.supervisor.start(withVm('sb-1'));
    h.vmm.holding.add('pause');
    void h.supervisor.pauseVm('sb-1');
    const signal = track(h.supervisor.signal('sb-1', 'USR1'));
    await settle();
    expect(h.host.processes[0]!.signals).toEqual([]);
    h.vmm.release('pause');
    await settle();
    expect({ sent: signal.settled, signals: h.host.processes[0]!.signals }).toEqual({ sent: true, signals: [10] });
    void h.supervisor.stop('sb-1', 10_000);
    await settle();
    await h.supervisor.signal('sb-1', 'USR2');
    expect(h.host.processes[0]!.signals).toEqual([10, 'SIGTERM', 12]);
    await h.clock.advance(10_000);
  });
});

describe('core: the VM across a daemon restart', () => {
  it('a re-adopted VMM reports the VM state last recorded, and a resumed hibernate keeps its snapshot URL', async () => {
    const h = await coreHarness();
    const { validateStartRequest } = await import('../../../src/validation/start-request.js');
    const { DEFAULTS } = await import('./fakes.js');
    const spec = (id: string) => validateStartRequest(withVm(id), DEFAULTS);
    const now = h.clock.now().getTime();
    const base = (id: string) => ({ spec: spec(id), logPath: `/l/${id}`, statusPath: `/s/${id}`, startedAt: new Date(now - 60_000), bootId: h.host.boot, signalsSent: [], readyAt: new Date(now - 59_000), vmmVersion: '53.0.0' });
    const paused = { ...base('paused'), identity: h.host.survivor(), vmState: 'paused' as const };
    const hibernating = { ...base('hib'), identity: h.host.survivor({ ignoreSigterm: true }), vmState: 'paused' as const, stopKillAt: new Date(now + 1_000), stopSnapshotUrl: 'file:///snaps/h' };
    await h.supervisor.recover({ processes: new Map([['paused', paused], ['hib', hibernating]]), exits: [], lastSequence: 0, events: [], lastEventSequence: 0, droppedTailBytes: 0 });
    expect(h.supervisor.get('paused').vmState).toBe('paused');
    await h.clock.advance(1_000);
    expect(h.exits).toEqual([expect.objectContaining({ sandboxId: 'hib', reason: 'stopped', snapshotUrl: 'file:///snaps/h' })]);
  });
});
