import { isVmprocError, type VmprocError } from '../errors.js';
import { describeExitStatus, type ExitReason, type ExitStatus, type StartFailure } from './domain.js';
import type { StartAbortReason } from './lifecycle.js';
import type { SupervisedProcess } from './supervised-process.js';

/** The reason and account an exit is published with, from what the daemon knew of the process. */
export function classifyExit(
  record: SupervisedProcess,
  status: ExitStatus | undefined,
  lostBecause?: string,
): { reason: ExitReason; message: string } {
  const how = status ? describeExitStatus(status) : 'an unknown status';
  if (record.stopRequested) {
    const after = record.stopSnapshotUrl ? ` after a snapshot to ${record.stopSnapshotUrl}` : '';
    return { reason: 'stopped', message: `stopped${after} (${how}${!status && lostBecause ? `: ${lostBecause}` : ''})` };
  }
  if (!status && lostBecause) return { reason: 'lost', message: lostBecause };
  if (record.startFailure) return { reason: record.startFailure.reason, message: record.startFailure.message };
  if (record.phase === 'starting') return { reason: 'start-failed', message: `exited before it was ready (${how})` };
  if (!status) return { reason: 'lost', message: 'the exit status could not be observed: its reaper ended without recording it' };
  if (status.signal) return { reason: 'signaled', message: `killed by ${how}` };
  return { reason: 'exited', message: `exited on its own (${how})` };
}

export interface DescribedFailure {
  readonly code: VmprocError['code'];
  readonly callerMessage: string;
  /** Set when the start path itself must end the process, with the reason its exit will carry. */
  readonly exit?: StartFailure;
}

/** What a start that did not reach ready tells its caller, and whether it must kill the VMM. */
export function describeStartFailure(readyTimeoutMs: number, aborted: StartAbortReason | undefined, error: unknown): DescribedFailure {
  switch (aborted?.kind) {
    case 'exited':
      // The caller's message is built from the exit itself (start-process.ts); none is needed here.
      return { code: 'failed-precondition', callerMessage: '' };
    case 'stopped':
      return { code: 'aborted', callerMessage: 'stopped by StopProcess while starting' };
    case 'timeout': {
      const message = `not ready within ${readyTimeoutMs}ms`;
      return {
        code: 'deadline-exceeded',
        callerMessage: `VMM was ${message} (its API socket did not answer GET /api/v1/vmm.ping, or the restore did not finish); it was killed`,
        exit: { reason: 'start-timeout', message },
      };
    }
    case 'cancelled':
      return {
        code: 'cancelled',
        callerMessage: 'start cancelled by the client; the VMM was killed',
        exit: { reason: 'start-failed', message: 'start cancelled by the client' },
      };
    case 'shutdown':
      return {
        code: 'unavailable',
        callerMessage: 'the daemon is shutting down; the VMM was killed before it was ready',
        exit: { reason: 'start-failed', message: 'daemon shut down during the start' },
      };
    case undefined: {
      // The VMM failed a call of the start (a refused restore, a VMM API that reset): the VMM
      // adapter has mapped it to its code already.
      const detail = error instanceof Error ? error.message : String(error);
      const code = isVmprocError(error) ? error.code : 'internal';
      return { code, callerMessage: detail, exit: { reason: 'start-failed', message: detail } };
    }
  }
}
