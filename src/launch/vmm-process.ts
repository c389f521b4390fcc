import { open } from 'node:fs/promises';
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
  let handle;
  try {
    handle = await open(statusPath, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  // One read of a file the reaper keeps under 5 KiB, instead of readFile's stat-then-read: this
  // is on the exit's way to every watcher. Closing need not hold it up.
  try {
    const buffer = Buffer.allocUnsafe(STATUS_FILE_MAX_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return parseReaperStatus(buffer.toString('utf8', 0, bytesRead));
  } finally {
    void handle.close().catch(() => undefined);
  }
}

/** A status line plus a 4 KiB log tail, with room to spare. */
const STATUS_FILE_MAX_BYTES = 8192;
