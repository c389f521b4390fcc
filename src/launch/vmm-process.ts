import { readFile } from 'node:fs/promises';
import { type ExitStatus, parseReaperStatus } from './exit-status.js';

/** Stands for the start time of a process that was gone before it could be read. */
export const UNKNOWN_START_TIME = -1n;

/** What the daemon knows about one VMM it supervises. */
export interface VmmProcess {
  /** The VMM's own PID, also its process group ID. */
  readonly pid: number;
  /** /proc/PID/stat start time: PID plus start time identify this process for good. */
  readonly startTime: bigint;
  /** The reaper that is the VMM's parent and records its exit status. */
  readonly reaperPid: number;
  readonly reaperStartTime: bigint;
  /** Byte offset in the log where this run's output begins. */
  readonly logOffset: number;
  /** Settles once, when the process has ended. `undefined` when nobody could see how it ended. */
  readonly exited: Promise<ExitStatus | undefined>;
}

/**
 * Reads the status a reaper recorded; undefined if there is none (yet, or ever: a reaper killed
 * before it recorded).
 */
export async function readExitStatus(statusPath: string): Promise<ExitStatus | undefined> {
  try {
    return parseReaperStatus(await readFile(statusPath, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
