/**
 * The VM contract: driving the VM over gRPC, end to end through the real launch, as the daemon's
 * users see it: boot with a VmConfig (the tiny guest, native/tiny-guest), the guest's console in
 * StreamLogs, pause, resume, snapshot (checkpoint, stay paused, hibernate), restore in another
 * sandbox and network namespace with the counter carrying on, inspect, counters, resize, stop,
 * a guest power-off, and Cloud Hypervisor's refusals.
 *
 * The same suite runs against the stand-in VMM (test/grpc/vm-contract.test.ts, in CI) and against
 * a real Cloud Hypervisor (test/real-ch/, `npm run test:real-ch`): where they differ, the stand-in
 * is wrong.
 */
import { afterEach, beforeAll, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { AfterSnapshot, ExitReason, LaunchMode, MemoryRestoreMode, ProcessState, VmState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { nativeBin } from '../../src/package-paths.js';
import { expectRpcError, type StartInit, useGrpcSuite, WAIT_MS } from '../grpc/support.js';
import { addTap, createTestNetns, type TestNetns } from '../helpers/netns.js';
import { eventually } from '../helpers/wait.js';

/** The VMM the contract runs against. */
export interface ContractVmm {
  readonly name: string;
  readonly vmmBin: string;
  /** What the VMM's answers may differ in, as long as both are right (e.g. a version). */
  readonly standIn: boolean;
}

const VM = { vcpus: 1, maxVcpus: 2, memoryMib: 64n, cmdline: 'console=ttyS0 tick_ms=100', net: [{ id: 'net0', tap: 'tap0' }] };

export function vmContract(vmm: ContractVmm): void {
  let other: TestNetns;
  let kernelPath: string;
  const s = useGrpcSuite(async (fixture) => {
    await mkdir(join(fixture.root, 'snaps'));
    kernelPath = join(fixture.root, 'tiny-guest.elf');
    await copyFile(nativeBin('tiny-guest.elf'), kernelPath);
    return { vmmBin: vmm.vmmBin };
  });

  beforeAll(() => addTap(s.netns));
  // Every VM here uses tap0: a test that fails half-way must not leave its VMM holding it.
  afterEach(() => s.stopLive());

  const withVm = (id: string, extra: Partial<StartInit> = {}) => s.startBoot(id, {}, { kernelPath, vm: VM, ...extra });
  const snapsDir = () => join(s.fixture.root, 'snaps');
  /** What the sandbox's console (the VMM's log) says so far. */
  async function consoleOf(sandboxId: string): Promise<string> {
    let text = '';
    for await (const chunk of s.client.streamLogs({ sandboxId })) text += Buffer.from(chunk.data).toString('utf8');
    return text;
  }
  const lastTick = (log: string) => Number([...log.matchAll(/tiny-guest: tick (\d+)/g)].at(-1)?.[1] ?? 0);

  it('boots the VM it was given: RUNNING with vm_state RUNNING, named by the sandbox paths', async () => {
    const id = s.id('boot');
    const p = (await withVm(id)).process!;
    expect({ state: p.state, vm: p.vmState }).toEqual({ state: ProcessState.RUNNING, vm: VmState.RUNNING });
    const info = (await s.client.getVmInfo({ sandboxId: id })).vm!;
    expect({ state: info.state, vcpus: info.vcpus, maxVcpus: info.maxVcpus, memory: info.memoryBytes }).toEqual({ state: VmState.RUNNING, vcpus: 1, maxVcpus: 2, memory: 64n << 20n });
    const config = JSON.parse(info.rawJson).config;
    expect(config.payload.kernel).toBe(`${s.fixture.sandboxDir}/vmlinux`);
    expect(config.disks[0]).toMatchObject({ id: 'rootfs', path: `${s.fixture.sandboxDir}/rootfs.ext4` });
    // The serial console is in the VMM's log.
    await eventually(async () => lastTick(await consoleOf(id)) >= 2, WAIT_MS);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('refuses a TAP the network namespace does not have: FAILED_PRECONDITION, START_FAILED', async () => {
    const id = s.id('notap');
    await expectRpcError(withVm(id, { vm: { ...VM, net: [{ id: 'net0', tap: 'tap9' }] } }), status.FAILED_PRECONDITION, 'TAP device tap9 does not exist');
    expect((await s.recorder.exitOf(id)).reason).toBe(ExitReason.START_FAILED);
  });

  it("pauses and resumes; Cloud Hypervisor's refusals come with its own message", async () => {
    const id = s.id('pause');
    await withVm(id);
    expect((await s.client.pauseVm({ sandboxId: id })).process!.vmState).toBe(VmState.PAUSED);
    await expectRpcError(s.client.pauseVm({ sandboxId: id }), status.FAILED_PRECONDITION, 'The VM could not be paused');
    const paused = lastTick(await consoleOf(id));
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(lastTick(await consoleOf(id))).toBe(paused);
    expect((await s.client.resumeVm({ sandboxId: id })).process!.vmState).toBe(VmState.RUNNING);
    await expectRpcError(s.client.resumeVm({ sandboxId: id }), status.FAILED_PRECONDITION, 'The VM could not resume');
    await eventually(async () => lastTick(await consoleOf(id)) > paused, WAIT_MS);
    expect((await s.client.getProcess({ sandboxId: id })).process!.vmState).toBe(VmState.RUNNING);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('a checkpoint writes the snapshot into a new directory and the VM runs on; a second one there is refused', async () => {
    const id = s.id('ckpt');
    await withVm(id);
    const destination = join(snapsDir(), id);
    const { process, snapshotUrl } = await s.client.snapshotVm({ sandboxId: id, destinationUrl: `file://${destination}`, afterSnapshot: AfterSnapshot.RESUME });
    expect({ url: snapshotUrl, vm: process!.vmState }).toEqual({ url: `file://${destination}`, vm: VmState.RUNNING });
    expect((await readdir(destination)).sort()).toEqual(['config.json', 'memory-ranges', 'state.json']);
    await expectRpcError(s.client.snapshotVm({ sandboxId: id, destinationUrl: `file://${destination}`, afterSnapshot: AfterSnapshot.RESUME }), status.FAILED_PRECONDITION, 'already exists');
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('refuses a destination outside the image roots, a missing parent, a URL that is not file://, and no after_snapshot', async () => {
    const id = s.id('dest');
    await withVm(id);
    await expectRpcError(s.client.snapshotVm({ sandboxId: id, destinationUrl: 'file:///etc/vmprocd-snap', afterSnapshot: AfterSnapshot.RESUME }), status.PERMISSION_DENIED, 'outside the image roots');
    expect(existsSync('/etc/vmprocd-snap')).toBe(false);
    await expectRpcError(s.client.snapshotVm({ sandboxId: id, destinationUrl: `file://${snapsDir()}/no/such/x`, afterSnapshot: AfterSnapshot.RESUME }), status.FAILED_PRECONDITION, 'does not exist');
    await expectRpcError(s.client.snapshotVm({ sandboxId: id, destinationUrl: 'http://x/y', afterSnapshot: AfterSnapshot.RESUME }), status.INVALID_ARGUMENT, 'file://');
    await expectRpcError(s.client.snapshotVm({ sandboxId: id, destinationUrl: `file://${snapsDir()}/n`, afterSnapshot: AfterSnapshot.UNSPECIFIED }), status.INVALID_ARGUMENT, 'after_snapshot is required');
    expect(existsSync(`${snapsDir()}/n`)).toBe(false);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('hibernate stops the VMM, and the snapshot restores in another sandbox and network namespace, carrying on', async () => {
    other = await createTestNetns('vmpo');
    try {
      await addTap(other);
      const id = s.id('hib');
      await withVm(id);
      await eventually(async () => lastTick(await consoleOf(id)) >= 3, WAIT_MS);
      const destination = join(snapsDir(), id);
      const { process, snapshotUrl } = await s.client.snapshotVm({ sandboxId: id, destinationUrl: `file://${destination}`, afterSnapshot: AfterSnapshot.STOP });
      expect(process!.state).toBe(ProcessState.EXITED);
      expect(process!.exit).toMatchObject({ reason: ExitReason.STOPPED, snapshotUrl, message: expect.stringContaining(`after a snapshot to ${snapshotUrl}`) });
      const atSnapshot = lastTick(await consoleOf(id));
      for (const mode of [MemoryRestoreMode.ON_DEMAND, MemoryRestoreMode.COPY]) {
        const restored = s.id('restored');
        const started = await s.client.startProcess({
          sandboxId: restored,
          mode: LaunchMode.RESTORE,
          rootfsPath: await s.fixture.rootfs(restored),
          networkNamespace: other.name,
          restore: { sourceUrl: snapshotUrl, memoryRestoreMode: mode, resume: true },
        });
        expect(started.process!.vmState).toBe(VmState.RUNNING);
        await eventually(async () => lastTick(await consoleOf(restored)) > atSnapshot, WAIT_MS);
        const log = await consoleOf(restored);
        expect(log).not.toContain('tiny-guest: boot');
        expect(Number(/tiny-guest: tick (\d+)/.exec(log)?.[1])).toBe(atSnapshot + 1);
        await s.client.stopProcess({ sandboxId: restored, gracePeriod: { seconds: 5n } });
      }
    } finally {
      await other.remove();
    }
  });

  it('reads counters and resizes vCPUs; a resize over the maximum is refused by Cloud Hypervisor', async () => {
    const id = s.id('resize');
    await withVm(id);
    const counters = (await s.client.getVmCounters({ sandboxId: id })).devices;
    expect(Object.keys(counters).sort()).toEqual(['net0', 'rootfs']);
    expect(Object.keys(counters['net0']!.counters).sort()).toEqual(['rx_bytes', 'rx_frames', 'tx_bytes', 'tx_frames']);
    const resized = await s.client.resizeVm({ sandboxId: id, vcpus: 2 });
    expect(resized.vm!.vcpus).toBe(2);
    await expectRpcError(s.client.resizeVm({ sandboxId: id, vcpus: 3 }), status.FAILED_PRECONDITION, 'Requested vCPUs exceed maximum');
    await expectRpcError(s.client.resizeVm({ sandboxId: id }), status.INVALID_ARGUMENT, 'at least one of');
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('every VM operation on an exited process, or an unknown one, is refused precisely', async () => {
    const id = s.id('gone');
    await withVm(id);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    await expectRpcError(s.client.pauseVm({ sandboxId: id }), status.FAILED_PRECONDITION, 'has exited');
    await expectRpcError(s.client.getVmInfo({ sandboxId: id }), status.FAILED_PRECONDITION, 'has exited');
    await expectRpcError(s.client.getVmCounters({ sandboxId: 'nope' }), status.NOT_FOUND, 'no process for sandbox "nope"');
  });

  it('a stop is SIGTERM, and the VMM exits 0 (it shuts its VM down)', async () => {
    const id = s.id('term');
    await withVm(id);
    const exit = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 10n } })).process!.exit!;
    expect({ reason: exit.reason, code: exit.exitCode, byDaemon: exit.signalSentByDaemon }).toEqual({ reason: ExitReason.STOPPED, code: 0, byDaemon: false });
  });

  it('a guest that powers itself off ends the VMM: EXITED with code 0', async () => {
    const id = s.id('poweroff');
    await withVm(id, { vm: { ...VM, cmdline: 'console=ttyS0 tick_ms=100 poweroff_after=3' } });
    const exit = await s.recorder.exitOf(id);
    expect({ reason: exit.reason, code: exit.exitCode }).toEqual({ reason: ExitReason.EXITED, code: 0 });
    expect(await consoleOf(id)).toContain('tiny-guest: poweroff');
  });

  it("Cloud Hypervisor's own refusals, on its socket: a snapshot of a running VM", async () => {
    const id = s.id('raw');
    const p = (await withVm(id)).process!;
    const { ChClient } = await import('../../src/vmm/ch-client.js');
    const error = await new ChClient(p.socketPath).snapshot(`file://${snapsDir()}/raw`, { timeoutMs: 10_000 }).then(() => undefined, (e: unknown) => e);
    expect(error).toMatchObject({ kind: 'http-status', status: 500, errorChain: expect.arrayContaining(['The VM could not be snapshotted']) });
    expect((error as { errorChain: string[] }).errorChain.join(' ')).toMatch(/snapshot while VM is running|Could not get vCPU state/);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });
}
