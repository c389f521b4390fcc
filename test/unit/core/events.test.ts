/**
 * Lifecycle events through the core with fake ports: the daemon's own transitions, what the VMM's
 * event monitor reports (through FakeVmmEvents), who caused each, and their order around an exit.
 */
import { describe, expect, it } from '@jest/globals';
import type { VmRequest } from '../../../src/core/domain.js';
import type { ProcessEvent } from '../../../src/core/events.js';
import { bootRequest, coreHarness, settle } from './fakes.js';

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

const withVm = (id: string) => bootRequest(id, { vm: VM });
const brief = (events: readonly ProcessEvent[]) => events.map((e) => `${e.sequence} ${e.sandboxId} ${e.kind} ${e.origin}`);

describe('core: lifecycle events', () => {
  it('a start is STARTED then READY, numbered from 1, with the labels and the PID', async () => {
    const h = await coreHarness();
    const started = await h.supervisor.start(bootRequest('sb-1'));
    await settle();
    expect(brief(h.published)).toEqual(['1 sb-1 started daemon', '2 sb-1 ready daemon']);
    expect(h.published[0]).toMatchObject({ labels: { team: 'a' }, pid: started.pid });
    expect(h.store.events.map((r) => r.event.sequence)).toEqual([1, 2]);
  });

  it("the monitor's events become events; a daemon call claims the one it causes, the rest are the VMM's", async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    await h.vmmEvents.emit('sb-1', 'vmm/starting', 'vm/booting', 'vm/booted');
    await h.supervisor.pauseVm('sb-1');
    await h.vmmEvents.emit('sb-1', 'vm/pausing', 'vm/paused');
    // Someone resumes it on the VMM's own socket.
    await h.vmmEvents.emit('sb-1', 'vm/resuming', 'vm/resumed');
    await settle();
    expect(brief(h.published)).toEqual(['1 sb-1 started daemon', '2 sb-1 ready daemon', '3 sb-1 vm-booted daemon', '4 sb-1 paused daemon', '5 sb-1 resumed vmm']);
    // Each VMM event is recorded with the monitor's offset just past it.
    expect(h.store.events.filter((r) => r.event.origin !== undefined && r.monitorOffset !== undefined).map((r) => r.event.kind)).toEqual(['vm-booted', 'paused', 'resumed']);
  });

  it('a snapshot says where; a resize says what was asked; a restore says from where', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    const snapshot = h.supervisor.snapshotVm('sb-1', 'file:///snaps/one', 'resume');
    await settle();
    await h.vmmEvents.emit('sb-1', 'vm/paused', 'vm/snapshotted', 'vm/resumed');
    const { snapshotUrl } = await snapshot;
    await h.supervisor.resizeVm('sb-1', { vcpus: 2 });
    await h.vmmEvents.emit('sb-1', 'vm/resizing', 'vm/resized');
    h.vmm.state = undefined;
    await h.supervisor.start({ ...bootRequest('sb-2'), mode: 'restore', kernelPath: '', restore: { sourceUrl: snapshotUrl, memoryRestoreMode: 'OnDemand', resume: true, prefault: false } });
    await h.vmmEvents.emit('sb-2', 'vm/restoring', 'vm/restored');
    await settle();
    const detail = (kind: string) => h.published.find((e) => e.kind === kind)?.detail;
    expect(detail('snapshotted')).toEqual({ kind: 'snapshot', snapshotUrl });
    expect(detail('resized')).toEqual({ kind: 'resize', vcpus: 2 });
    expect(detail('restored')).toEqual({ kind: 'restore', sourceUrl: snapshotUrl, memoryRestoreMode: 'OnDemand' });
    expect(h.published.filter((e) => e.sandboxId === 'sb-1').map((e) => e.origin)).toEqual(Array(6).fill('daemon'));
  });

  it('a guest panic, reboot and power-off are the VMM\'s; the power-off is followed by the exit as the last event', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    await h.vmmEvents.emit('sb-1', { name: 'guest/panic', properties: { event: 'panic' } }, 'vm/rebooting', 'vm/rebooted', 'vm/shutdown', 'vm/deleted', 'vmm/shutdown');
    h.host.processes[0]!.end({ code: 0 });
    await settle();
    const kinds = h.published.map((e) => `${e.kind} ${e.origin}`);
    expect(kinds).toEqual(['started daemon', 'ready daemon', 'guest-panic vmm', 'guest-reboot vmm', 'guest-shutdown vmm', 'exited daemon']);
    expect(h.published[2]!.detail).toEqual({ kind: 'guest-panic', event: 'panic' });
    const exited = h.published.at(-1)!;
    expect(exited.detail).toEqual({ kind: 'exit', exit: h.exits[0] });
  });

  it('the VM going down under a stop is the stop: no GUEST_SHUTDOWN, only EXITED', async () => {
    const h = await coreHarness();
    h.host.behaviour = { ignoreSigterm: true };
    await h.supervisor.start(withVm('sb-1'));
    const stopping = h.supervisor.stop('sb-1', 1000);
    await settle();
    await h.vmmEvents.emit('sb-1', 'vm/shutdown', 'vm/deleted', 'vmm/shutdown');
    h.host.processes[0]!.end({ code: 0 });
    await stopping;
    await settle();
    expect(h.published.map((e) => e.kind)).toEqual(['started', 'ready', 'exited']);
  });

  it('reads what the monitor holds before it publishes the exit, and nothing after', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    const follow = h.vmmEvents.follows.at(-1)!;
    // A batch in flight as the process ends is handled before the exit.
    const late = h.vmmEvents.emit('sb-1', 'vm/paused');
    h.host.processes[0]!.end({ signal: 'SIGKILL' });
    await late;
    await settle();
    expect(h.published.map((e) => e.kind)).toEqual(['started', 'ready', 'paused', 'exited']);
    expect(follow.closed).toBe(true);
  });

  it('an EXITED event is delivered with its exit, in one step: a listing agrees with both sequences', async () => {
    const h = await coreHarness();
    await h.supervisor.start(bootRequest('sb-1'));
    const seen: Array<{ exitSequence: number; eventSequence: number; state: string }> = [];
    const watcher = h.supervisor.watchEvents({ kinds: ['exited'] });
    void (async () => {
      for await (const item of watcher) {
        if (item.kind !== 'exited') continue;
        const { exitSequence, eventSequence, processes } = h.supervisor.list();
        seen.push({ exitSequence, eventSequence, state: processes[0]!.state });
      }
    })();
    h.host.processes[0]!.end({ code: 3 });
    await settle();
    expect(seen).toEqual([{ exitSequence: 1, eventSequence: 3, state: 'exited' }]);
    watcher.close();
  });

  it('a failed pause claims nothing: a pause made later on the socket is the VMM\'s', async () => {
    const h = await coreHarness();
    await h.supervisor.start(withVm('sb-1'));
    h.vmm.failures.set('pause', new (await import('../../../src/errors.js')).VmprocError('failed-precondition', 'no'));
    await h.supervisor.pauseVm('sb-1').catch(() => undefined);
    await h.vmmEvents.emit('sb-1', 'vm/paused');
    await settle();
    expect(h.published.at(-1)).toMatchObject({ kind: 'paused', origin: 'vmm' });
  });

  it('a re-adopted VMM is followed from the offset its last recorded event came with', async () => {
    const h = await coreHarness();
    const spec = (await import('../../../src/validation/start-request.js')).validateStartRequest(withVm('old'), (await import('./fakes.js')).DEFAULTS);
    const now = h.clock.now().getTime();
    const persisted = { spec, logPath: '/l/old.log', statusPath: '/s/old', startedAt: new Date(now - 60_000), bootId: h.host.boot, signalsSent: [], readyAt: new Date(now - 59_000), vmmVersion: '53.0.0', identity: h.host.survivor(), monitorOffset: 4321 };
    await h.supervisor.recover({ processes: new Map([['old', persisted]]), exits: [], lastSequence: 0, events: [], lastEventSequence: 0, droppedTailBytes: 0 });
    expect(h.vmmEvents.follows.map((f) => f.fromOffset)).toEqual([4321]);
  });
});

describe('core: READY and a stop that overlaps it', () => {
  it('a start answers RUNNING even when a stop arrives while its READY event is being recorded', async () => {
    const h = await coreHarness();
    h.host.behaviour = { ignoreSigterm: true };
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const record = h.store.event.bind(h.store);
    h.store.event = (event, offset) => (event.kind === 'ready' ? held.then(() => record(event, offset)) : record(event, offset));
    const starting = h.supervisor.start(bootRequest('sb-1'));
    await settle();
    const stopping = h.supervisor.stop('sb-1', 1000);
    await settle();
    release();
    expect((await starting).state).toBe('running');
    h.host.processes[0]!.end({ code: 0 });
    await stopping;
    await settle();
    expect(h.published.map((e) => e.kind)).toEqual(['started', 'ready', 'exited']);
  });
});
