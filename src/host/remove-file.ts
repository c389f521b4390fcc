import { unlink } from 'node:fs/promises';

/**
 * unlink(2), where one that is already gone is fine. Not fs.rm: that looks before it removes,
 * one more trip through the thread pool on the way of every exit.
 */
export async function removeFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
