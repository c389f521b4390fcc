import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { FoundLaunch } from '../core/ports.js';
import { readProcessStat } from './proc-stat.js';

/**
 * Finds the reaper and VMM of a launch the daemon recorded but died before learning the PIDs of:
 * the reaper writes them to `<status>.pids` before it answers. Both are checked against /proc (the
 * reaper is a live vmprocd-reaper; the VMM is its child), so a reused PID is never taken for ours.
 */
export async function findLaunchByStatusPath(statusPath: string): Promise<FoundLaunch | undefined> {
  const text = await readFile(`${statusPath}.pids`, 'utf8').catch(() => '');
  const [reaperPid, vmmPid] = text.trim().split(' ').map(Number);
  if (!reaperPid || !vmmPid) return undefined;
  const reaper = await readProcessStat(reaperPid);
  const reaperArgv0 = (await readFile(`/proc/${reaperPid}/cmdline`, 'utf8').catch(() => '')).split('\0')[0] ?? '';
  if (!reaper || reaper.state === 'Z' || basename(reaperArgv0) !== 'vmprocd-reaper') return undefined;
  const vmm = await readProcessStat(vmmPid);
  return {
    reaper: { pid: reaperPid, startTime: reaper.startTime },
    ...(vmm && vmm.parentPid === reaperPid ? { vmm: { pid: vmmPid, startTime: vmm.startTime } } : {}),
  };
}
