import { open } from 'node:fs/promises';

/** How many of the log's last lines an exit carries. */
export const TAIL_LINES = 20;

/** The last `count` lines of `text`, without the final newline. */
export function lastLines(text: string, count: number): string {
  const lines = text.replace(/\n$/, '').split('\n');
  return lines.slice(-count).join('\n');
}

export interface TailOptions {
  readonly maxLines: number;
  readonly maxBytes: number;
}

export const DEFAULT_TAIL: TailOptions = { maxLines: TAIL_LINES, maxBytes: 4096 };

/**
 * The last lines written to a log since byte `fromOffset` (where this run began), at most
 * `maxLines` lines and `maxBytes` bytes. An absent log gives an empty tail. Normally the reaper
 * reads the tail at the exit (it comes with the status); this is for exits nobody recorded.
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
    // Smaller than where this run began: the log was rotated (copy-truncate, src/logs) during the
    // run, so everything in it is this run's.
    if (size < fromOffset) fromOffset = 0;
    const start = Math.max(fromOffset, size - options.maxBytes);
    if (size <= start) return '';
    // One byte more than the tail, to see whether the cut falls at a line start.
    const readFrom = start > fromOffset ? start - 1 : start;
    const buffer = Buffer.alloc(size - readFrom);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, readFrom);
    let text = buffer.subarray(0, bytesRead).toString('utf8');
    // Drop the partial line the byte limit cut into (none when the byte before the cut is a newline).
    if (readFrom < start) text = text.slice(text.indexOf('\n') + 1);
    return lastLines(text, options.maxLines);
  } finally {
    await handle.close();
  }
}
