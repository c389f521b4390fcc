import { lstat } from 'node:fs/promises';
import { VmprocError } from '../errors.js';
import { removeFile } from './remove-file.js';

/** Removes a socket left by a dead VMM; anything else at that path is the caller's mistake. */
export async function removeStaleSocket(socketPath: string): Promise<void> {
  let stats;
  try {
    stats = await lstat(socketPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!stats.isSocket()) {
    throw new VmprocError('failed-precondition', `socket_path ${socketPath} exists and is not a socket; remove it or choose another path`);
  }
  await removeSocketFiles(socketPath);
}

/** The socket and the `<socket>.lock` Cloud Hypervisor v53+ leaves beside it. */
export async function removeSocketFiles(socketPath: string): Promise<void> {
  await Promise.all([removeFile(socketPath), removeFile(`${socketPath}.lock`)]);
}
