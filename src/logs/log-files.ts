import { unlink } from 'node:fs/promises';
import { removeFile } from '../host/remove-file.js';

/**
 * Removes a sandbox's log and its rotated copies (`<log>.1`, `<log>.2`, ... contiguous from 1, and
 * a rotation's leftover `<log>.1.tmp`): for sandboxes the daemon forgets, whose logs would
 * otherwise pile up in the run dir (usually a tmpfs, that is memory).
 */
export async function removeLogFiles(logPath: string): Promise<void> {
  await Promise.all([removeFile(logPath), removeFile(`${logPath}.1.tmp`)]);
  for (let copy = 1; ; copy++) {
    try {
      await unlink(`${logPath}.${copy}`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
  }
}
