import { DEFAULT_STOP_GRACE_MS } from '../api-defaults.js';
import { VmprocError } from '../errors.js';
import type { SupervisorContext } from './context.js';
import type { AfterSnapshot, ProcessSnapshot, VmCounters, VmInfo, VmResize, VmState } from './domain.js';
import { stopProcess } from './stop-process.js';
import type { SupervisedProcess } from './supervised-process.js';
import { causingVmmEvent } from './vmm-events.js';

/**
 * What a control plane does to the VM inside a VMM: pause, resume, snapshot, inspect, resize.
 * Operations that change the VM run in the sandbox's lane (operation-lane.ts), one at a time; a
 * stop closes the lane. Cloud Hypervisor decides what is legal in which state: its refusals come
 * back as the VMM adapter maps them (FAILED_PRECONDITION with its error chain).
 */

/** A running VMM, or FAILED_PRECONDITION saying what it is instead. */
function runningRecord(context: SupervisorContext, sandboxId: string, action: string, allowStopping = false): SupervisedProcess {
  const record = context.table.find(sandboxId);
  const phase = record.phase;
  if (phase === 'running' || (allowStopping && phase === 'stopping')) return record;
  const what = phase === 'starting' || phase === 'abandoning' ? 'is still starting' : phase === 'stopping' ? 'is being stopped' : 'has exited';
  throw new VmprocError('failed-precondition', `sandbox ${sandboxId} ${what}: cannot ${action}`);
}

/** Runs a changing operation in the lane, once the VMM is running. */
function inLane<T>(context: SupervisorContext, sandboxId: string, action: string, work: (record: SupervisedProcess) => Promise<T>): Promise<T> {
  const record = runningRecord(context, sandboxId, action);
  return record.lane.run(action, async () => {
    // The lane may have held it while the process changed: look again.
    runningRecord(context, sandboxId, action);
    return work(record);
  });
}

async function noteVmState(context: SupervisorContext, record: SupervisedProcess, state: VmState): Promise<void> {
  if (record.vmState === state) return;
  record.setVmState(state);
  await context.store.vmState(record.sandboxId, state).catch((error: unknown) =>
    context.logger.warn({ sandboxId: record.sandboxId, err: error }, 'cannot record the VM state'));
}

export function pauseVm(context: SupervisorContext, sandboxId: string): Promise<ProcessSnapshot> {
  return inLane(context, sandboxId, 'pause the VM', async (record) => {
    await causingVmmEvent(context, record, 'paused', () => context.vmm.pauseVm(record.spec.socketPath));
    await noteVmState(context, record, 'paused');
    context.logger.info({ sandboxId }, 'vm paused');
    return record.snapshot();
  });
}

export function resumeVm(context: SupervisorContext, sandboxId: string): Promise<ProcessSnapshot> {
  return inLane(context, sandboxId, 'resume the VM', async (record) => {
    await causingVmmEvent(context, record, 'resumed', () => context.vmm.resumeVm(record.spec.socketPath));
    await noteVmState(context, record, 'running');
    context.logger.info({ sandboxId }, 'vm resumed');
    return record.snapshot();
  });
}

/**
 * Pauses the VM if it runs, snapshots it into a directory the daemon makes, then resumes it, leaves
 * it paused, or stops the VMM (hibernate). A failed snapshot removes that directory and leaves the
 * VM as it was.
 */
export async function snapshotVm(
  context: SupervisorContext,
  sandboxId: string,
  destinationUrl: string,
  after: AfterSnapshot,
): Promise<{ process: ProcessSnapshot; snapshotUrl: string }> {
  let stopping: Promise<ProcessSnapshot> | undefined;
  const taken = await inLane(context, sandboxId, 'snapshot the VM', async (record) => {
    const socket = record.spec.socketPath;
    const dir = await context.snapshotDirs.create('destination_url', destinationUrl);
    const wasRunning = record.vmState !== 'paused';
    try {
      if (wasRunning) {
        await causingVmmEvent(context, record, 'paused', () => context.vmm.pauseVm(socket));
        await noteVmState(context, record, 'paused');
      }
      await causingVmmEvent(context, record, 'snapshotted', () => context.vmm.snapshotVm(socket, dir.url), { kind: 'snapshot', snapshotUrl: dir.url });
    } catch (error) {
      await context.snapshotDirs.remove(dir.path).catch((removal: unknown) =>
        context.logger.warn({ sandboxId, path: dir.path, err: removal }, 'cannot remove the directory of a failed snapshot'));
      if (wasRunning && (record.vmState as VmState) === 'paused') {
        await causingVmmEvent(context, record, 'resumed', () => context.vmm.resumeVm(socket)).then(
          () => noteVmState(context, record, 'running'),
          (resumeError: unknown) => context.logger.error({ sandboxId, err: resumeError }, 'cannot resume the VM after a failed snapshot'),
        );
      }
      throw error;
    }
    context.logger.info({ sandboxId, snapshotUrl: dir.url, after }, 'vm snapshotted');
    if (after === 'resume') {
      await causingVmmEvent(context, record, 'resumed', () => context.vmm.resumeVm(socket));
      await noteVmState(context, record, 'running');
    } else if (after === 'stop') {
      // The stop closes the lane, which waits for this operation: it is started here, awaited after.
      record.stopAfterSnapshot(dir.url);
      stopping = stopProcess(context, sandboxId, DEFAULT_STOP_GRACE_MS);
      stopping.catch(() => undefined);
    }
    return { process: record.snapshot(), snapshotUrl: dir.url };
  });
  if (stopping) return { process: await stopping, snapshotUrl: taken.snapshotUrl };
  return taken;
}

/** vm.info, with the VM's state noted; read-only, so not queued behind changing operations. */
export async function getVmInfo(context: SupervisorContext, sandboxId: string): Promise<VmInfo> {
  const record = runningRecord(context, sandboxId, 'read the VM info', true);
  const info = await context.vmm.vmInfo(record.spec.socketPath);
  if (record.phase === 'running') await noteVmState(context, record, info.state);
  return info;
}

export function getVmCounters(context: SupervisorContext, sandboxId: string): Promise<VmCounters> {
  const record = runningRecord(context, sandboxId, 'read the VM counters', true);
  return context.vmm.vmCounters(record.spec.socketPath);
}

export async function resizeVm(context: SupervisorContext, sandboxId: string, resize: VmResize): Promise<{ process: ProcessSnapshot; vm: VmInfo }> {
  if (resize.vcpus === undefined && resize.memoryMib === undefined && resize.balloonMib === undefined) {
    throw new VmprocError('invalid-argument', 'ResizeVm needs at least one of vcpus, memory_mib, balloon_mib');
  }
  if (resize.vcpus !== undefined && (resize.vcpus < 1 || resize.vcpus > 254)) throw new VmprocError('invalid-argument', `vcpus ${resize.vcpus} must be 1 to 254`);
  if (resize.memoryMib !== undefined && resize.memoryMib < 1) throw new VmprocError('invalid-argument', 'memory_mib must be at least 1');
  return inLane(context, sandboxId, 'resize the VM', async (record) => {
    await causingVmmEvent(context, record, 'resized', () => context.vmm.resizeVm(record.spec.socketPath, resize), { kind: 'resize', ...resize });
    const vm = await context.vmm.vmInfo(record.spec.socketPath);
    await noteVmState(context, record, vm.state);
    context.logger.info({ sandboxId, ...resize }, 'vm resized');
    return { process: record.snapshot(), vm };
  });
}
