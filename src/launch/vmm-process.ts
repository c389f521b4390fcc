import { spawn } from 'node:child_process';
import { open, readFile, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { VmprocError } from '../errors.js';
import { type ExitStatus, parseReaperStatus } from './exit-status.js';
import type { LaunchCommand } from './launch-command.js';
import { readProcessStartTime } from './proc-stat.js';

export interface SpawnVmmOptions {
  readonly reaperBin: string;
  readonly command: LaunchCommand;
  readonly env: Readonly<Record<string, string>>;
  /** The VMM's stdout and stderr are appended here. */
  readonly logPath: string;
  /** Where the reaper records the exit status (see native/vmprocd-reaper.c). */
  readonly statusPath: string;
}

/** Stands for the start time of a process that was gone before it could be read. */
export const UNKNOWN_START_TIME = -1n;

/** What the spawn knows about one running VMM. */
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
 * Spawns the launch under a reaper and resolves once the VMM's PID is known.
 *
 * Node's child_process rather than execa: the reaper must get the log file as a raw fd, outlive
 * this daemon (detached, unref'd, no pipes that would die with us), and its end is observed by
 * its `exit` event alone. execa's strengths (buffered output, a result promise, cleanup on our
 * exit) are exactly what a long-lived detached child must not have.
 */
export async function spawnVmm(options: SpawnVmmOptions): Promise<VmmProcess> {
  await rm(options.statusPath, { force: true });
  const log = await open(options.logPath, 'a', 0o640);
  let logOffset: number;
  let child;
  try {
    logOffset = (await log.stat()).size;
    child = spawn(options.reaperBin, [options.statusPath, options.command.file, ...options.command.args], {
      detached: true, // own session: a signal to the daemon's group (Ctrl-C) never reaches a VMM
      stdio: ['ignore', 'pipe', log.fd],
      env: options.env,
    });
  } finally {
    await log.close();
  }

  const reaperExited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const pid = await readReportedPid(child, options.reaperBin);
  child.unref();
  // A launch that fails at once (say, unshare missing) can be over before we look: then there is
  // no start time to match, UNKNOWN_START_TIME never matches one, and nothing is ever signalled.
  const [startTime, reaperStartTime] = await Promise.all([readProcessStartTime(pid), readProcessStartTime(child.pid!)]);
  const exited = reaperExited.then(() => readExitStatus(options.statusPath));
  return {
    pid,
    startTime: startTime ?? UNKNOWN_START_TIME,
    reaperPid: child.pid!,
    reaperStartTime: reaperStartTime ?? UNKNOWN_START_TIME,
    logOffset,
    exited,
  };
}

/**
 * Reads the status the reaper recorded; undefined if there is none (the reaper itself was
 * killed, so nobody saw how the VMM ended).
 */
export async function readExitStatus(statusPath: string): Promise<ExitStatus | undefined> {
  try {
    return parseReaperStatus(await readFile(statusPath, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

function readReportedPid(child: ReturnType<typeof spawn>, reaperBin: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    let settled = false;
    const settle = (outcome: { pid: number } | { error: VmprocError }) => {
      if (settled) return;
      settled = true;
      lines.close();
      child.stdout!.destroy();
      if ('pid' in outcome) resolve(outcome.pid);
      else reject(outcome.error);
    };
    child.once('error', (cause) =>
      settle({ error: new VmprocError('internal', `cannot run the reaper ${reaperBin}: ${cause.message}`, { cause }) }));
    lines.once('line', (line) => {
      const match = /^pid (\d+)$/.exec(line);
      settle(match
        ? { pid: Number(match[1]) }
        : { error: new VmprocError('internal', `the reaper reported ${JSON.stringify(line)} instead of a PID`) });
    });
    lines.once('close', () =>
      settle({ error: new VmprocError('internal', `the reaper ${reaperBin} ended without reporting a PID (see the sandbox log)`) }));
  });
}
