import { KILL_BACKSTOP_MS } from '../api-defaults.js';
import { asVmprocError, isVmprocError, VmprocError } from '../errors.js';
import { validateStartRequest } from '../validation/start-request.js';
import { assertOpen, type SupervisorContext } from './context.js';
import { describeExitStatus, isVmSpec, type ProcessSnapshot, type StartRequest, type VmState } from './domain.js';
import { describeStartFailure } from './exit-classification.js';
import type { StartAbortReason } from './lifecycle.js';
import type { ProcessHandle, Recorded } from './ports.js';
import { publishEvent } from './publish-event.js';
import { supervise } from './record-exit.js';
import { expectVmmEvent, settleVmmEvent } from './vmm-events.js';
import { SupervisedProcess } from './supervised-process.js';
import { TIMED_OUT, withinTimeout } from './timing.js';


/**
 * StartProcess: validates, reserves the sandbox ID and socket, launches the VMM and resolves once
 * it is ready (ping answered, restore done). `signal` is the caller's interest: aborting it before
 * ready abandons the start; after ready it has no effect. Every failure once a VMM exists kills it
 * and still publishes its exit.
 */
export async function startProcess(context: SupervisorContext, request: StartRequest, signal?: AbortSignal): Promise<ProcessSnapshot> {
  assertOpen(context);
  const spec = await context.host.prepareLaunch(validateStartRequest(request, context.defaults));
  if (signal?.aborted) throw new VmprocError('cancelled', `start of sandbox ${spec.sandboxId} was cancelled by the client`);
  assertOpen(context);

  // Reserved synchronously, after the last await of validation: two concurrent starts of one ID
  // cannot both get here.
  const record = new SupervisedProcess(spec, context.layout.launchFiles(spec.sandboxId), context.clock.now());
  const previous = context.table.reserve(record);
  context.retention.release(spec.sandboxId);
  // From here on a cancel must reach the start, whichever step it is at (a listener added later
  // would never hear an abort that already happened).
  const onCallerAbort = () => record.interruptStart({ kind: 'cancelled' });
  signal?.addEventListener('abort', onCallerAbort, { once: true });
  try {
    return await launch(context, record, previous);
  } finally {
    signal?.removeEventListener('abort', onCallerAbort);
  }
}

/** Spawns the reserved record's VMM and waits until it is ready. */
async function launch(context: SupervisorContext, record: SupervisedProcess, previous: SupervisedProcess | undefined): Promise<ProcessSnapshot> {
  const { spec, files } = record;
  const { store, host, layout } = context;
  await context.retention.untilLogsRemoved(spec.sandboxId);

  let handle: ProcessHandle;
  let launchRecord: Recorded;
  try {
    // Recorded before the spawn, so a daemon that dies right after it can still find the reaper.
    // Written is enough for that; the disk sync (against a host crash) overlaps the launch.
    launchRecord = store.launching(spec.sandboxId, { spec, ...files, startedAt: record.startedAt, bootId: context.bootId });
    const [, claimed] = await Promise.all([launchRecord.written, layout.claimSocket(spec.socketPath)]);
    record.claimedSocket(claimed);
    handle = await host.launch(spec, files);
  } catch (error) {
    // Nothing was spawned: release the reservation and bring back the previous record.
    record.spawnFailed();
    context.table.unreserve(record, previous);
    if (previous) context.retention.retain(spec.sandboxId);
    await store.abandoned(spec.sandboxId).catch(() => undefined);
    throw asVmprocError(error, `cannot launch sandbox ${spec.sandboxId}`);
  }
  supervise(context, record, handle);
  // Numbered now, before anything the VMM reports; recorded while the VMM comes up.
  const started = publishEvent(context, record, { kind: 'started', origin: 'daemon' });
  context.observer?.spawned?.(spec.sandboxId, files.logPath);
  context.logger.info({ sandboxId: spec.sandboxId, pid: handle.identity.pid, mode: spec.mode }, 'vmm spawned');
  // The PID is journalled while the VMM comes up; both records are on file before ready.
  const recorded = Promise.all([launchRecord.durable, recordSpawn(context, record, handle), started]).then(() => undefined);
  recorded.catch(() => undefined); // awaited before ready; a failure then abandons the start
  return awaitReady(context, record, spec.readyTimeoutMs, recorded);
}

async function recordSpawn(context: SupervisorContext, record: SupervisedProcess, handle: ProcessHandle): Promise<void> {
  await context.store.spawned(record.sandboxId, handle.identity, handle.logOffset).catch((error: unknown) =>
    context.logger.error({ sandboxId: record.sandboxId, err: error }, 'cannot record the spawned process'));
}

/**
 * Waits for readiness until the first of: ready, exit, timeout, stop, cancel (each interrupts the
 * start with its reason). Also finishes a start a previous daemon began (recovery).
 */
export async function awaitReady(
  context: SupervisorContext,
  record: SupervisedProcess,
  timeoutMs: number,
  recorded: Promise<void> = Promise.resolve(),
): Promise<ProcessSnapshot> {
  const { spec, startSignal } = record;
  const cancelTimer = context.clock.schedule(timeoutMs, () => record.interruptStart({ kind: 'timeout' }));
  record.exited.then(() => record.interruptStart({ kind: 'exited' }));
  try {
    const api = context.vmm;
    const ready = await api.waitReady(spec.socketPath, startSignal);
    const vmState = await prepareVm(context, record);
    if (startSignal.aborted) throw startSignal.reason;
    await recorded;
    if (vmState !== record.vmState) {
      await context.store.vmState(spec.sandboxId, vmState);
      record.setVmState(vmState);
    }
    const socketFiles = await context.layout.socketFiles(spec.socketPath, record.socketFiles);
    const readyAt = context.clock.now();
    await context.store.ready(spec.sandboxId, readyAt, ready.version, socketFiles);
    if (startSignal.aborted) throw startSignal.reason;
    record.markReady(readyAt, ready.version, socketFiles);
    // The answer is the process as it became ready: a stop that comes in while the READY event is
    // recorded must not make a start that succeeded answer STOPPING. (The event is numbered now,
    // before any event of that stop.)
    const snapshot = record.snapshot();
    await publishEvent(context, record, { kind: 'ready', origin: 'daemon' });
    context.logger.info({ sandboxId: spec.sandboxId, pid: record.handle!.identity.pid, vmmVersion: ready.version }, 'vmm ready');
    return snapshot;
  } catch (error) {
    throw await abandonStart(context, record, error);
  } finally {
    cancelTimer();
  }
}

/**
 * What the start does inside the VMM once it answers: restore the snapshot (restore mode), or
 * create and boot the VM (boot mode with a VmConfig), or nothing (a bare VMM). A restarted daemon
 * finishing a start may find it done already, or half done (the ping waited for a restore under way).
 * Returns the VM's state.
 */
async function prepareVm(context: SupervisorContext, record: SupervisedProcess): Promise<VmState> {
  const { spec, startSignal } = record;
  const api = context.vmm;
  if (spec.restore) {
    const existing = await api.vmState(spec.socketPath, startSignal);
    if (existing === undefined) {
      const { sourceUrl, memoryRestoreMode } = spec.restore;
      expectVmmEvent(context, record, 'restored', { kind: 'restore', sourceUrl, ...(memoryRestoreMode ? { memoryRestoreMode } : {}) });
      // Cloud Hypervisor resumes a restored VM itself when asked to (RestoreConfig.resume).
      if (spec.restore.resume) expectVmmEvent(context, record, 'resumed');
      await api.restore(spec.socketPath, spec.restore, startSignal);
      await settleVmmEvent(context, record, spec.restore.resume ? 'resumed' : 'restored');
    }
    return existing === 'Running' || (existing === undefined && spec.restore.resume) ? 'running' : 'paused';
  }
  if (!isVmSpec(spec.vm)) return 'not-created';
  const existing = await api.vmState(spec.socketPath, startSignal);
  if (existing === undefined) {
    // The VMM is in the sandbox's network namespace: its TAPs must be there already (Cloud
    // Hypervisor would make a missing one itself, in a netns nobody configured for it).
    const interfaces = await record.handle!.networkInterfaces();
    const missing = spec.vm.net.find((nic) => !interfaces.includes(nic.tap));
    if (missing) {
      throw new VmprocError(
        'failed-precondition',
        `vm.net ${missing.id}: TAP device ${missing.tap} does not exist in network namespace ${spec.networkNamespace}; ` +
          `create it first (ip netns exec ${spec.networkNamespace} ip tuntap add dev ${missing.tap} mode tap)`,
      );
    }
    await api.createVm(spec.socketPath, spec, startSignal);
  }
  if (existing === undefined || existing === 'Created') {
    expectVmmEvent(context, record, 'vm-booted');
    await api.bootVm(spec.socketPath, startSignal);
    await settleVmmEvent(context, record, 'vm-booted');
  }
  const info = await api.vmInfo(spec.socketPath, startSignal);
  if (info.state !== 'running') {
    throw new VmprocError('failed-precondition', `the VM of sandbox ${spec.sandboxId} is ${info.state} after vm.boot, not running`);
  }
  return 'running';
}

/**
 * How long a start whose VMM stopped answering waits to see whether it is on its way out: a VMM
 * shutting down (a SIGTERM from elsewhere, a guest power-off) removes its API socket before it
 * exits, so the failed call comes first and the exit a moment later.
 */
export const ENDING_VMM_WAIT_MS = 500;

/** Whether the VMM has died, or is dying, under a start step that failed with `error`. */
async function vmmIsEnding(context: SupervisorContext, handle: ProcessHandle, error: unknown): Promise<boolean> {
  if ((await handle.signal(0).catch(() => 'sent')) === 'gone') return true;
  if (!isVmprocError(error, 'unavailable')) return false;
  return (await withinTimeout(context.clock, handle.exited, ENDING_VMM_WAIT_MS)) !== TIMED_OUT;
}

/** Kills what a failed start left, waits for its exit event, and returns the caller's error. */
async function abandonStart(context: SupervisorContext, record: SupervisedProcess, error: unknown): Promise<VmprocError> {
  const { spec, startSignal } = record;
  const handle = record.handle!;
  // A VM call that failed because the VMM died under it (a reset connection, a vanished /proc
  // entry) before its exit was reported: the death is the reason, not the call.
  if (!startSignal.aborted && (await vmmIsEnding(context, handle, error))) record.interruptStart({ kind: 'exited' });
  const aborted = startSignal.aborted ? (startSignal.reason as StartAbortReason) : undefined;
  const failure = describeStartFailure(spec.readyTimeoutMs, aborted, error);
  if (failure.exit && record.abandonStart(failure.exit)) {
    // Nobody else is ending this process: it is ours to kill, and its exit carries our reason.
    await context.store.startFailed(spec.sandboxId, failure.exit).catch(() => undefined);
    await handle.signal('SIGKILL');
  }
  if (aborted?.kind === 'stopped') {
    // The stop owns the process now, with its own grace period and SIGKILL backstop.
    const stopped = await (record.stopInFlight ?? record.exited).then(() => undefined, (stopError: unknown) => stopError);
    return stopped
      ? asVmprocError(stopped, `stopping sandbox ${spec.sandboxId}`)
      : new VmprocError(failure.code, `sandbox ${spec.sandboxId}: ${failure.callerMessage}`, { cause: error });
  }
  const ended = await withinTimeout(context.clock, record.exited, KILL_BACKSTOP_MS);
  if (ended === TIMED_OUT) {
    return new VmprocError(
      'internal',
      `sandbox ${spec.sandboxId} (pid ${handle.identity.pid}) failed to start and survived SIGKILL for ${KILL_BACKSTOP_MS / 1000}s`,
      { cause: error },
    );
  }
  if (aborted?.kind === 'exited') {
    const exit = ended.exit!;
    const how = describeExitStatus({ exitCode: exit.exitCode, signal: exit.signal, coreDumped: false });
    const tail = exit.stderrTail ? `; its stderr ends with:\n${exit.stderrTail}` : '; it wrote nothing to stderr';
    return new VmprocError('failed-precondition', `VMM of sandbox ${spec.sandboxId} exited before it was ready (${how})${tail}`);
  }
  return new VmprocError(failure.code, `sandbox ${spec.sandboxId}: ${failure.callerMessage}`, { cause: error });
}
