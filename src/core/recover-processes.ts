import type { SupervisorContext } from './context.js';
import { type ExitStatus, type LaunchFiles, type ProcessIdentity, type SocketFiles, UNKNOWN_START_TIME } from './domain.js';
import type { PersistedProcess, PersistedState, ProcessHandle } from './ports.js';
import { supervise } from './record-exit.js';
import { awaitReady } from './start-process.js';
import { terminate } from './stop-process.js';
import { SupervisedProcess } from './supervised-process.js';

/**
 * Takes over what a previous daemon left (see src/store): exited records come back for Get and
 * Wait; live ones are re-adopted if their VMM still runs (same PID and start time), or get the exit
 * their reaper recorded, or a `lost` exit when nothing was recorded. A start the previous daemon
 * did not finish is finished now, within its original ready timeout, or killed; a stop it began
 * goes on with its original SIGKILL deadline. Resolves once every record is settled or supervised
 * again: nothing is served before that.
 */
export async function recoverProcesses(context: SupervisorContext, state: PersistedState): Promise<void> {
  const exited: SupervisedProcess[] = [];
  const socketFilesOf = new Map<SupervisedProcess, SocketFiles>();
  const resumed: Array<Promise<void>> = [];
  // The files of every launch picked up again, ended meanwhile or not: an exit found now removes
  // its own once the journal has it (record-exit), and one the journal could not take (a full
  // state disk) must keep its reaper's record for the next daemon.
  const kept: LaunchFiles[] = [];
  for (const persisted of state.processes.values()) {
    const record = new SupervisedProcess(persisted.spec, { logPath: persisted.logPath, statusPath: persisted.statusPath }, persisted.startedAt);
    context.table.restore(record, !persisted.exit);
    if (persisted.exit) {
      record.restoreExited(persisted.exit);
      exited.push(record);
      socketFilesOf.set(record, persisted.socketFiles ?? {});
      continue;
    }
    resumed.push(
      readopt(context, record, persisted).then(
        (outcome) => {
          if (outcome !== 'dropped') kept.push(record.files);
        },
        (error: unknown) => {
          kept.push(record.files);
          context.logger.error({ sandboxId: record.sandboxId, err: error }, 'cannot re-adopt vmm');
        },
      ),
    );
  }
  // Retention forgets the oldest exits first, so they go in in the order they exited.
  exited.sort((a, b) => a.exit!.sequence - b.exit!.sequence);
  for (const record of exited) context.retention.retain(record.sandboxId);
  await Promise.all(resumed);
  await releaseUnfinishedSockets(context, exited, socketFilesOf, kept);
  await context.layout.removeOrphanLaunchFiles(kept);
}

/**
 * An exit removes its socket and lock file while the journal records it, and its reaper's status
 * file once both are done: a daemon killed in between leaves the journalled exit, the status file,
 * and maybe the socket or lock file. Those are released now (only what that VMM made, and only
 * where no live process has the socket path by now), before the status files go.
 */
async function releaseUnfinishedSockets(
  context: SupervisorContext,
  exited: readonly SupervisedProcess[],
  socketFilesOf: ReadonlyMap<SupervisedProcess, SocketFiles>,
  kept: readonly LaunchFiles[],
): Promise<void> {
  const orphans = await context.layout.orphanStatusPaths(kept);
  const unfinished = exited.filter((record) => orphans.has(record.files.statusPath) && context.table.socketOwner(record.spec.socketPath) === undefined);
  await Promise.all(unfinished.map((record) =>
    context.layout.releaseSocket(record.spec.socketPath, socketFilesOf.get(record) ?? {}).catch((error: unknown) =>
      context.logger.warn({ sandboxId: record.sandboxId, err: error }, 'cannot remove the socket files of an exit recorded before the restart'))));
}

/**
 * Picks one live record up again. Resolves once it is either supervised again or, when it ended
 * while nobody watched, once its exit is published; with 'dropped' when it never had a process.
 */
async function readopt(context: SupervisorContext, record: SupervisedProcess, persisted: PersistedProcess): Promise<'dropped' | undefined> {
  const { sandboxId, files } = record;
  const { host, store } = context;
  // Where it was in its lifecycle first: an exit found now is classified by it.
  record.resume({
    ...(persisted.readyAt ? { readyAt: persisted.readyAt, vmmVersion: persisted.vmmVersion } : {}),
    stopping: persisted.stopKillAt !== undefined,
    ...(persisted.startFailure ? { startFailure: persisted.startFailure } : {}),
    signalsSent: persisted.signalsSent,
    ...(persisted.socketFiles ? { socketFiles: persisted.socketFiles } : {}),
    ...(persisted.vmState ? { vmState: persisted.vmState } : {}),
    ...(persisted.stopSnapshotUrl ? { stopSnapshotUrl: persisted.stopSnapshotUrl } : {}),
  });
  const settle = async (pid: number, status: ExitStatus | undefined, lostBecause?: string): Promise<undefined> => {
    supervise(context, record, endedProcess(pid, persisted.logOffset ?? 0, status), lostBecause, persisted.monitorOffset ?? 0);
    await record.exited;
    return undefined;
  };
  let identity: ProcessIdentity | undefined = persisted.identity;
  if (persisted.bootId !== context.bootId) {
    // The host rebooted: whatever the PID names now is not ours.
    return settle(identity?.pid ?? 0, undefined, 'the host rebooted while vmprocd was down; the VMM ended with it');
  }
  if (!identity) {
    // The previous daemon died between spawning and recording the PID: find the reaper.
    const found = await host.findLaunch(files);
    if (found?.vmm) {
      identity = { pid: found.vmm.pid, startTime: found.vmm.startTime, reaperPid: found.reaper.pid, reaperStartTime: found.reaper.startTime };
      // Supervised whether or not this is recorded (a full state disk): the next daemon finds it again.
      await store.spawned(sandboxId, identity, 0).catch((error: unknown) =>
        context.logger.error({ sandboxId, err: error }, 'cannot record the re-found process; supervising it anyway'));
    } else {
      const status = await host.recordedExit(files);
      if (status) return settle(status.pid, status);
      // It never got as far as a process: nothing ran, so there is no exit to publish.
      context.table.forget(record);
      await store.abandoned(sandboxId);
      context.logger.warn({ sandboxId }, 'dropped a launch that never produced a process');
      return 'dropped';
    }
  }
  // Ended while nobody watched: its reaper recorded how, or (reaper gone too) nobody knows.
  const status = await host.recordedExit(files);
  if (status) return settle(identity.pid, status);
  if (!(await host.isAlive(identity.pid, identity.startTime)) && !(await host.isAlive(identity.reaperPid, identity.reaperStartTime))) {
    // The reaper records the exit and only then ends: it may have done both since the look above.
    const late = await host.recordedExit(files);
    if (late) return settle(identity.pid, late);
    return settle(identity.pid, undefined, 'it ended while vmprocd was down, and its reaper left no status');
  }

  const handle = host.adopt(identity, files, persisted.logOffset ?? 0);
  supervise(context, record, handle, 'its reaper ended without recording the exit status', persisted.monitorOffset ?? 0);
  context.logger.info({ sandboxId, pid: identity.pid, state: record.state }, 're-adopted vmm');

  if (record.phase === 'stopping') {
    record.trackStop(terminate(context, record, persisted.stopKillAt!))
      .catch((error: unknown) => context.logger.error({ sandboxId, err: error }, 'resumed stop failed'));
  } else if (record.phase === 'abandoning') {
    // The previous daemon was already abandoning this start: finish killing it.
    await handle.signal('SIGKILL');
  } else if (record.phase === 'starting') {
    // Finish the start the previous daemon began, within what is left of its ready timeout.
    const remainingMs = record.startedAt.getTime() + record.spec.readyTimeoutMs - context.clock.now().getTime();
    if (remainingMs <= 0) record.interruptStart({ kind: 'timeout' });
    awaitReady(context, record, Math.max(remainingMs, 1)).catch((error: unknown) =>
      context.logger.warn({ sandboxId, err: error }, 'interrupted start did not complete'));
  }
}

/** A process known only by PID that has already ended: never signalled, its end already known. */
function endedProcess(pid: number, logOffset: number, status: ExitStatus | undefined): ProcessHandle {
  return {
    identity: { pid, startTime: UNKNOWN_START_TIME, reaperPid: 0, reaperStartTime: UNKNOWN_START_TIME },
    logOffset,
    exited: Promise.resolve(status),
    signal: async () => 'gone',
    networkInterfaces: async () => [],
  };
}
