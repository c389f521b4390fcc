import { open } from 'node:fs/promises';

export interface TailOptions {
  readonly maxLines: number;
  readonly maxBytes: number;
}

export const DEFAULT_TAIL: TailOptions = { maxLines: 20, maxBytes: 4096 };

/**
 * The last lines written to a log since byte `fromOffset` (where this run began), at most
 * `maxLines` lines and `maxBytes` bytes. An absent log gives an empty tail.
 */
export async function readLogTail(path: string, fromOffset: number, options: TailOptions = DEFAULT_TAIL): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw error;
  }
  try {
    const { size } = await handle.stat();
    const start = Math.max(fromOffset, size - options.maxBytes);
    if (size <= start) return '';
    const buffer = Buffer.alloc(size - start);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, start);
    let text = buffer.subarray(0, bytesRead).toString('utf8');
    // Cut back to a line boundary when the byte limit landed mid-line.
    if (start > fromOffset) text = text.slice(text.indexOf('\n') + 1);
    const lines = text.replace(/\n$/, '').split('\n');
    return lines.slice(-options.maxLines).join('\n');
  } finally {
    await handle.close();
  }
}
