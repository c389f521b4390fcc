import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import type { LaunchFiles } from '../core/domain.js';

/**
 * The run dir, spelled out once:
 *   <run-dir>/<sandbox_id>.sock                 default API socket
 *   <run-dir>/logs/<sandbox_id>.log             the sandbox's VMM log (every run appends)
 *   <run-dir>/exits/<sandbox_id>.<launch>.status   a launch's exit record, written by its reaper,
 *                                               with `.pids` and `.tmp` siblings, and `.events`:
 *                                               the VMM's event monitor (--event-monitor)
 *   <run-dir>/exit-sequence-floor               the last exit sequence published but not journalled
 *                                               (src/store/sequence-floor.ts), while there is one
 */
export function logsDir(runDir: string): string {
  return posix.join(runDir, 'logs');
}

export function exitsDir(runDir: string): string {
  return posix.join(runDir, 'exits');
}

/** Outside exits/, whose files are swept as orphans at start-up: this one must outlive a restart. */
export function sequenceFloorPath(runDir: string): string {
  return posix.join(runDir, 'exit-sequence-floor');
}

/** Where a launch's VMM writes its events (Cloud Hypervisor's `--event-monitor path=`). */
export function eventMonitorPathOf(files: LaunchFiles): string {
  return `${files.statusPath}.events`;
}

export function defaultSocketPath(runDir: string, sandboxId: string): string {
  return posix.join(runDir, `${sandboxId}.sock`);
}

export function logPathOf(runDir: string, sandboxId: string): string {
  return posix.join(logsDir(runDir), `${sandboxId}.log`);
}

/** The files of one launch: a status name of its own, so a relaunch never meets the last run's. */
export function newLaunchFiles(runDir: string, sandboxId: string): LaunchFiles {
  return {
    logPath: logPathOf(runDir, sandboxId),
    statusPath: posix.join(exitsDir(runDir), `${sandboxId}.${randomBytes(4).toString('hex')}.status`),
  };
}
