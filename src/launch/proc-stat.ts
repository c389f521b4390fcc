import { readFile } from 'node:fs/promises';

export interface ProcessStat {
  /** One letter: R, S, D, Z (zombie: dead, not yet reaped), T, ... */
  readonly state: string;
  readonly parentPid: number;
  /** Clock ticks since boot (field 22): PID plus start time identify one process for good. */
  readonly startTime: bigint;
}

/** /proc/PID/stat's state and start time; undefined when no such process exists. */
export async function readProcessStat(pid: number): Promise<ProcessStat | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (error) {
    if (isNoSuchProcess(error)) return undefined;
    throw error;
  }
  return parseStat(stat);
}

/** True while `pid` is still the process that started at `startTime` and has not died (zombie). */
export async function isSameLiveProcess(pid: number, startTime: bigint): Promise<boolean> {
  const stat = await readProcessStat(pid);
  return stat !== undefined && stat.startTime === startTime && stat.state !== 'Z';
}

/** Field 2 (comm) may contain spaces and parentheses, so fields are counted after the last ')'. */
export function parseStat(stat: string): ProcessStat | undefined {
  const afterComm = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // afterComm[0] is field 3 (state), so field 22 is afterComm[19].
  const state = afterComm[0];
  const field = afterComm[19];
  if (!state || field === undefined || !/^\d+$/.test(field)) return undefined;
  return { state, parentPid: Number(afterComm[1]), startTime: BigInt(field) };
}

function isNoSuchProcess(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/** This boot of the host: PIDs and start times only identify a process within one boot. */
export async function readBootId(): Promise<string> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
}
