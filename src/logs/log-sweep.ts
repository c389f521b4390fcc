import { readdir, rm } from 'node:fs/promises';
import { posix } from 'node:path';

/** `<id>.log`, its rotated copies `<id>.log.<n>` and a rotation's leftover `<id>.log.1.tmp`. */
const LOG_FILE = /^(.+)\.log(?:\.\d+|\.1\.tmp)?$/;

/**
 * Removes the logs of sandboxes the daemon no longer knows (records forgotten past the exit
 * history), so that a host running many short-lived sandboxes does not fill its run dir (a
 * tmpfs, i.e. memory) with them. Only at start-up, before anything is served: a start of the
 * same sandbox ID cannot race with it then. Resolves with the number of files removed.
 */
export async function sweepForgottenLogs(logsDir: string, knownSandboxIds: ReadonlySet<string>): Promise<number> {
  let names: string[];
  try {
    names = await readdir(logsDir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    const sandboxId = LOG_FILE.exec(name)?.[1];
    if (sandboxId === undefined || knownSandboxIds.has(sandboxId)) continue;
    await rm(posix.join(logsDir, name), { force: true });
    removed++;
  }
  return removed;
}
