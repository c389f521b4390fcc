import { readFile } from 'node:fs/promises';

/**
 * A process's start time in clock ticks since boot (/proc/PID/stat field 22). A PID can be
 * reused once its process is reaped; PID plus start time identifies one process for good.
 * Undefined when no such process exists.
 */
export async function readProcessStartTime(pid: number): Promise<bigint | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (error) {
    if (isNoSuchProcess(error)) return undefined;
    throw error;
  }
  return parseStartTime(stat);
}

/** Field 2 (comm) may contain spaces and parentheses, so fields are counted after the last ')'. */
export function parseStartTime(stat: string): bigint | undefined {
  const afterComm = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // afterComm[0] is field 3 (state), so field 22 is afterComm[19].
  const field = afterComm[19];
  return field !== undefined && /^\d+$/.test(field) ? BigInt(field) : undefined;
}

function isNoSuchProcess(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}
