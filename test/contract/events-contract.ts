/**
 * The events contract: WatchEvents end to end through the real launch, with the tiny guest
 * (native/tiny-guest) in a VM: the daemon's transitions, the VMM's event monitor for changes made
 * through the daemon, on the VMM's own socket and by the guest (reboot, power-off, panic), their
 * order and origin, the EXITED event carrying the exit WatchExits sends, and progress markers for
 * a filtered watcher.
 *
 * The same suite runs against the stand-in (test/grpc/events-contract.test.ts, in CI) and a real
 * Cloud Hypervisor (test/real-ch/events-contract.test.ts): where they differ, the stand-in is wrong.
 */
import { afterEach, beforeAll, expect, it } from '@jest/globals';
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { AfterSnapshot, EventKind, EventOrigin, ExitReason, LaunchMode, MemoryRestoreMode, type ProcessEvent } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { nativeBin } from '../../src/package-paths.js';
import { expectRpcError, type StartInit, useGrpcSuite, WAIT_MS } from '../grpc/support.js';
import { addTap, createTestNetns, type TestNetns } from '../helpers/netns.js';
import { eventually } from '../helpers/wait.js';
import { rawRequest } from '../standin/raw-http.js';
import type { ContractVmm } from './vm-contract.js';

const VM = { vcpus: 1, maxVcpus: 2, memoryMib: 64n, cmdline: 'console=ttyS0 tick_ms=100', net: [{ id: 'net0', tap: 'tap0' }] };

/** `KIND origin` per event, e.g. `PAUSED DAEMON`. */
const brief = (events: readonly ProcessEvent[]) => events.map((e) => `${EventKind[e.kind]} ${EventOrigin[e.origin]}`);

export function eventsContract(vmm: ContractVmm): void {
  let other: TestNetns;
  let kernelPath: string;
  const s = useGrpcSuite(async (fixture) => {
    await mkdir(join(fixture.root, 'snaps'));
    kernelPath = join(fixture.root, 'tiny-guest.elf');
    await copyFile(nativeBin('tiny-guest.elf'), kernelPath);
    return { vmmBin: vmm.vmmBin };
  });

  beforeAll(() => addTap(s.netns));
  afterEach(() => s.stopLive());

  const withVm = (id: string, extra: Partial<StartInit> = {}, cmdline = VM.cmdline) => s.startBoot(id, {}, { kernelPath, vm: { ...VM, cmdline }, ...extra });
  const snapsDir = () => join(s.fixture.root, 'snaps');
  const eventsOf = (sandboxId: string) => s.events.events.filter((e) => e.sandboxId === sandboxId);
  const untilEvents = (sandboxId: string, count: number) => eventually(() => eventsOf(sandboxId).length >= count, WAIT_MS);

  it('a boot is STARTED, VM_BOOTED, READY, with the labels and PID; a stop ends with EXITED, the exit WatchExits sent', async () => {
    const id = s.id('boot');
    const p = (await withVm(id, { labels: { team: 'events' } })).process!;
    await untilEvents(id, 3);
    expect(brief(eventsOf(id))).toEqual(['STARTED DAEMON', 'VM_BOOTED DAEMON', 'READY DAEMON']);
    expect(eventsOf(id)[0]).toMatchObject({ pid: p.pid, labels: { team: 'events' } });
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    await untilEvents(id, 4);
    const exited = eventsOf(id)[3]!;
    expect(brief([exited])).toEqual(['EXITED DAEMON']);
    const exit = await s.recorder.exitOf(id);
    expect(exited.detail).toEqual({ case: 'exit', value: exit });
    expect(exit.reason).toBe(ExitReason.STOPPED);
    // The VM shutting down under the stop is the stop, not a guest power-off.
    expect(eventsOf(id)).toHaveLength(4);
  });

  it('pause and resume through the daemon are its own; the same on the VMM socket are the VMM\'s', async () => {
    const id = s.id('pause');
    const p = (await withVm(id)).process!;
    await s.client.pauseVm({ sandboxId: id });
    await s.client.resumeVm({ sandboxId: id });
    expect((await rawRequest(p.socketPath, 'PUT', 'vm.pause')).status).toBe(204);
    expect((await rawRequest(p.socketPath, 'PUT', 'vm.resume')).status).toBe(204);
    await untilEvents(id, 7);
    expect(brief(eventsOf(id)).slice(3)).toEqual(['PAUSED DAEMON', 'RESUMED DAEMON', 'PAUSED VMM', 'RESUMED VMM']);
  });

  it('a snapshot says where it went, a restore where it came from, and a resize what was asked', async () => {
    const id = s.id('snap');
    await withVm(id);
    const { snapshotUrl } = await s.client.snapshotVm({ sandboxId: id, destinationUrl: `file://${snapsDir()}/${id}`, afterSnapshot: AfterSnapshot.STOP });
    await untilEvents(id, 6);
    // Hibernation: paused, snapshotted, stopped; the VM going down under the stop is no event.
    expect(brief(eventsOf(id))).toEqual(['STARTED DAEMON', 'VM_BOOTED DAEMON', 'READY DAEMON', 'PAUSED DAEMON', 'SNAPSHOTTED DAEMON', 'EXITED DAEMON']);
    expect(eventsOf(id).find((e) => e.kind === EventKind.SNAPSHOTTED)!.detail).toEqual({ case: 'snapshot', value: expect.objectContaining({ snapshotUrl }) });
    expect(eventsOf(id).at(-1)!.kind).toBe(EventKind.EXITED);

    other = await createTestNetns();
    try {
      await addTap(other);
      const restored = s.id('restored');
      await s.startBoot(restored, {}, {
        mode: LaunchMode.RESTORE,
        kernelPath: '',
        networkNamespace: other.name,
        restore: { sourceUrl: snapshotUrl, memoryRestoreMode: MemoryRestoreMode.ON_DEMAND, resume: true },
      });
      await untilEvents(restored, 4);
      // resume: true is Cloud Hypervisor's own (RestoreConfig.resume): it resumes the VM it restored.
      expect(brief(eventsOf(restored))).toEqual(['STARTED DAEMON', 'RESTORED DAEMON', 'RESUMED DAEMON', 'READY DAEMON']);
      expect(eventsOf(restored)[1]!.detail).toEqual({ case: 'restore', value: expect.objectContaining({ sourceUrl: snapshotUrl, memoryRestoreMode: MemoryRestoreMode.ON_DEMAND }) });
      await s.client.resizeVm({ sandboxId: restored, vcpus: 2 });
      await untilEvents(restored, 5);
      expect(eventsOf(restored)[4]).toMatchObject({ kind: EventKind.RESIZED, origin: EventOrigin.DAEMON, detail: { case: 'resize', value: expect.objectContaining({ vcpus: 2 }) } });
      await s.client.stopProcess({ sandboxId: restored, gracePeriod: { seconds: 5n } });
    } finally {
      await s.stopLive();
      await other.remove();
    }
  });

  it('a guest that reboots is GUEST_REBOOT, from the VMM', async () => {
    const id = s.id('reboot');
    await withVm(id, {}, 'console=ttyS0 tick_ms=100 reboot_after=2');
    await eventually(() => eventsOf(id).some((e) => e.kind === EventKind.GUEST_REBOOT), WAIT_MS);
    expect(brief(eventsOf(id).filter((e) => e.kind === EventKind.GUEST_REBOOT))[0]).toBe('GUEST_REBOOT VMM');
  });

  it('a guest that powers off is GUEST_SHUTDOWN, then EXITED with exit code 0', async () => {
    const id = s.id('poweroff');
    await withVm(id, {}, 'console=ttyS0 tick_ms=100 poweroff_after=3');
    const exit = await s.recorder.exitOf(id);
    expect(exit).toMatchObject({ reason: ExitReason.EXITED, exitCode: 0 });
    await untilEvents(id, 5);
    expect(brief(eventsOf(id))).toEqual(['STARTED DAEMON', 'VM_BOOTED DAEMON', 'READY DAEMON', 'GUEST_SHUTDOWN VMM', 'EXITED DAEMON']);
  });

  it('a guest panic through pvpanic is GUEST_PANIC, naming what the guest wrote', async () => {
    const id = s.id('panic');
    await s.startBoot(id, {}, { kernelPath, vm: { ...VM, cmdline: 'console=ttyS0 tick_ms=100 panic_after=2', pvpanic: true } });
    await eventually(() => eventsOf(id).some((e) => e.kind === EventKind.GUEST_PANIC), WAIT_MS);
    const panic = eventsOf(id).find((e) => e.kind === EventKind.GUEST_PANIC)!;
    expect(panic).toMatchObject({ origin: EventOrigin.VMM, detail: { case: 'guestPanic', value: expect.objectContaining({ event: 'panic' }) } });
  });

  it('a filtered watcher gets PROGRESS markers for what it skipped, and resumes after one without a gap', async () => {
    const watched = s.id('watched');
    const unrelated = s.id('unrelated');
    const client = s.harness.newClient();
    const controller = new AbortController();
    const seen: ProcessEvent[] = [];
    const reading = (async () => {
      for await (const event of client.watchEvents({ sandboxIds: [watched] }, { signal: controller.signal })) seen.push(event);
    })().catch(() => undefined);
    await eventually(() => s.harness.daemon.supervisor.events.subscriberCount === 2, WAIT_MS);
    await withVm(unrelated);
    await eventually(() => seen.some((e) => e.kind === EventKind.PROGRESS), WAIT_MS);
    const marker = seen.find((e) => e.kind === EventKind.PROGRESS)!;
    expect(marker).toMatchObject({ sandboxId: '', labels: {}, origin: EventOrigin.UNSPECIFIED });
    expect(marker.sequence).toBeGreaterThanOrEqual(eventsOf(unrelated)[0]!.sequence);
    controller.abort();
    await reading;
    client.close();

    // Resuming after the marker: only the watched sandbox's events, none before the marker.
    await s.client.stopProcess({ sandboxId: unrelated, gracePeriod: { seconds: 5n } });
    await withVm(watched);
    const resumed: ProcessEvent[] = [];
    const again = new AbortController();
    const resumeClient = s.harness.newClient();
    const resumedReading = (async () => {
      for await (const event of resumeClient.watchEvents({ sandboxIds: [watched], afterSequence: marker.sequence }, { signal: again.signal })) resumed.push(event);
    })().catch(() => undefined);
    await eventually(() => resumed.filter((e) => e.kind !== EventKind.PROGRESS).length >= 3, WAIT_MS);
    expect(brief(resumed.filter((e) => e.kind !== EventKind.PROGRESS))).toEqual(['STARTED DAEMON', 'VM_BOOTED DAEMON', 'READY DAEMON']);
    again.abort();
    await resumedReading;
    resumeClient.close();
  });

  it('GetLatestSequence and ListProcesses give cursors that resume with no gap and no duplicate', async () => {
    const latest = await s.client.getLatestSequence();
    const listed = await s.client.listProcesses();
    expect(listed.eventSequence).toBe(latest.latestEventSequence);
    expect(latest.latestExitSequence).toBe(listed.exitSequence);
    const id = s.id('cursor');
    await withVm(id);
    const replayed: ProcessEvent[] = [];
    for await (const event of s.client.watchEvents({ afterSequence: listed.eventSequence }, { timeoutMs: 2000 })) {
      replayed.push(event);
      if (replayed.length === 3) break;
    }
    expect(replayed.map((e) => e.sequence)).toEqual(eventsOf(id).slice(0, 3).map((e) => e.sequence));
    await expectRpcError(s.client.watchEvents({ kinds: [EventKind.PROGRESS] })[Symbol.asyncIterator]().next(), status.INVALID_ARGUMENT, 'not an event kind to filter on');
    await expectRpcError(
      s.client.watchEvents({ afterSequence: latest.latestEventSequence + 1000n })[Symbol.asyncIterator]().next(),
      status.OUT_OF_RANGE,
      'newer than the latest event sequence',
    );
  });
}
