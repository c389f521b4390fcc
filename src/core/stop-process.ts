import { DEFAULT_STOP_GRACE_MS, KILL_BACKSTOP_MS, MAX_STOP_GRACE_MS } from '../api-defaults.js';
import { VmprocError } from '../errors.js';
import type { SupervisorContext } from './context.js';
import type { ProcessSnapshot } from './domain.js';
import type { SupervisedProcess } from './supervised-process.js';
import { TIMED_OUT, withinTimeout } from './timing.js';


/**
 * StopProcess: SIGTERM to the process group, SIGKILL after `graceMs`, resolved once the exit is
 * observed. Concurrent stops share one; stopping an exited process returns its record. A start in
 * progress is interrupted (its caller gets ABORTED).
 */
export function stopProcess(context: SupervisorContext, sandboxId: string, graceMs: number = DEFAULT_STOP_GRACE_MS): Promise<ProcessSnapshot> {
  const record = context.table.find(sandboxId);
  if (record.phase === 'exited') return Promise.resolve(record.snapshot());
  if (record.stopInFlight) return record.stopInFlight;
  if (!(graceMs >= 0)) throw new VmprocError('invalid-argument', 'grace_period must not be negative');
  if (graceMs > MAX_STOP_GRACE_MS) {
    throw new VmprocError('invalid-argument', `grace_period must be at most ${MAX_STOP_GRACE_MS / 1000}s (got ${graceMs / 1000}s)`);
  }
  record.requestStop();
  context.logger.info({ sandboxId, pid: record.handle?.identity.pid, graceMs }, 'stopping vmm');
  // A failed stop (process stuck after SIGKILL) may be retried by a later StopProcess.
  return record.trackStop(terminate(context, record, new Date(context.clock.now().getTime() + graceMs)));
}

/**
 * SIGTERM now, SIGKILL at `killAt` (at once if that has passed), then wait for the exit. Also
 * resumes a stop a previous daemon began, with its original deadline (recovery).
 */
export async function terminate(context: SupervisorContext, record: SupervisedProcess, killAt: Date): Promise<ProcessSnapshot> {
  const handle = await record.spawned;
  if (!handle) throw new VmprocError('not-found', `sandbox ${record.sandboxId} never got a process: its launch failed`);
  const { pid } = handle.identity;
  // A stop must not wait for the state disk: stopping VMMs may be how an operator frees it. Not
  // recorded, only a stop interrupted by a daemon crash suffers: it is not resumed after a restart.
  await context.store.stopping(record.sandboxId, killAt, record.stopSnapshotUrl).catch((error: unknown) =>
    context.logger.error({ sandboxId: record.sandboxId, err: error }, 'cannot record the stop; stopping anyway'));
  // Operations queued for this sandbox fail; the one in progress (a snapshot being written) may
  // finish, within the grace period.
  const closing = record.lane.close(new VmprocError('failed-precondition', `sandbox ${record.sandboxId} is being stopped`));
  const waitMs = killAt.getTime() - context.clock.now().getTime();
  if (waitMs > 0 && record.lane.current !== undefined) await withinTimeout(context.clock, closing, waitMs);
  const graceMs = killAt.getTime() - context.clock.now().getTime();
  if (graceMs > 0) {
    await handle.signal('SIGTERM');
    const ended = await withinTimeout(context.clock, record.exited, graceMs);
    if (ended !== TIMED_OUT) return ended;
    context.logger.warn({ sandboxId: record.sandboxId, pid, graceMs }, 'vmm ignored SIGTERM; sending SIGKILL');
  }
  await handle.signal('SIGKILL');
  const ended = await withinTimeout(context.clock, record.exited, KILL_BACKSTOP_MS);
  if (ended !== TIMED_OUT) return ended;
  throw new VmprocError(
    'internal',
    `sandbox ${record.sandboxId} (pid ${pid}) survived SIGKILL for ${KILL_BACKSTOP_MS / 1000}s; it may be stuck in the kernel (state D)`,
  );
}
