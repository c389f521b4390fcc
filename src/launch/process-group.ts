import { isSameLiveProcess } from './proc-stat.js';

/**
 * Signals a VMM's process group, but only after checking that PID still names the process we
 * started (same start time): a PID or group ID is reused once its process is reaped, and a
 * signal must never reach a stranger. Returns 'gone' when our process no longer exists or is
 * already dead (a zombie).
 */
export async function signalProcessGroup(pid: number, startTime: bigint, signal: NodeJS.Signals | number): Promise<'sent' | 'gone'> {
  if (!(await isSameLiveProcess(pid, startTime))) return 'gone';
  try {
    process.kill(-pid, signal);
    return 'sent';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return 'gone';
    throw error;
  }
}
