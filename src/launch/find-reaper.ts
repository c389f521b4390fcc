import { readdir, readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { readProcessStat } from './proc-stat.js';

export interface FoundReaper {
  readonly reaperPid: number;
  readonly reaperStartTime: bigint;
  /** The reaper's child (the VMM), if it still has one. */
  readonly child?: { readonly pid: number; readonly startTime: bigint };
}

/**
 * Finds the reaper that writes `statusPath`, for a launch the daemon recorded but died before
 * learning its PID. The status path is unique per sandbox and is the reaper's first argument.
 */
export async function findReaperByStatusPath(statusPath: string): Promise<FoundReaper | undefined> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
    } catch {
      continue;
    }
    if (basename(argv[0] ?? '') !== 'vmprocd-reaper' || argv[1] !== statusPath) continue;
    const reaperPid = Number(entry);
    const reaper = await readProcessStat(reaperPid);
    if (reaper === undefined) return undefined;
    const children = await readFile(`/proc/${entry}/task/${entry}/children`, 'utf8').catch(() => '');
    const childPid = Number(children.trim().split(' ')[0]);
    const child = childPid > 0 ? await readProcessStat(childPid) : undefined;
    return {
      reaperPid,
      reaperStartTime: reaper.startTime,
      ...(child ? { child: { pid: childPid, startTime: child.startTime } } : {}),
    };
  }
  return undefined;
}
