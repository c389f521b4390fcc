import { basename, dirname } from 'node:path';
import type { ExitStatus, ProcessIdentity } from '../core/domain.js';
import { parseReaperStatus, readExitStatus } from './exit-status.js';
import { isSameLiveProcess } from './proc-stat.js';
import { watchDirectoryEntry } from '../util/directory-watch.js';

/** A VMM and its reaper, and where the reaper records the VMM's end. */
export interface WatchedProcess {
  readonly identity: ProcessIdentity;
  readonly statusPath: string;
}

/**
 * How often orphaned processes are checked by hand: those whose reaper is not a child of our
 * spawner (adopted after a restart) or has died without a record. Nothing else is polled.
 */
export const ORPHAN_SWEEP_MS = 1_000;
/** Every this many sweeps, orphans get the full check even when their process seems to exist. */
const THOROUGH_EVERY = 30;

/** kill(pid, 0): true while a process (possibly a zombie) has that PID. */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface Waiter {
  readonly process: WatchedProcess;
  readonly resolve: (status: ExitStatus | undefined) => void;
  /** Nobody will tell us when its reaper ends: the sweep must look. */
  orphan: boolean;
  /** The reaper is known to be gone without a record: only the VMM's own liveness is left. */
  reaperGone: boolean;
  /** Ends its subscription to the status file's directory. */
  unwatch: () => void;
}

/**
 * Learns how VMMs ended, from their reapers' status files. The one inotify watch per exits
 * directory sees each status file appear (events dispatched by file name); the spawner's
 * `reaped` notices, passed to reaped(), cover a reaper that died without writing one; a slow
 * sweep covers orphans, whose reapers nobody reports on.
 *
 * Resolves with the recorded status, or undefined when the reaper ended without recording and
 * the VMM is gone too: then the status is lost.
 */
export class ExitWatch {
  readonly #waiters = new Map<string, Waiter>();
  readonly #byReaper = new Map<number, Waiter>();
  readonly #sweepMs: number;
  #sweep: NodeJS.Timeout | undefined;
  #sweeps = 0;

  constructor(sweepMs = ORPHAN_SWEEP_MS) {
    this.#sweepMs = sweepMs;
  }

  get size(): number {
    return this.#waiters.size;
  }

  /** `orphan`: the reaper is not our spawner's child, so its end is never reported to us. */
  wait(process: WatchedProcess, options: { orphan: boolean }): Promise<ExitStatus | undefined> {
    return new Promise((resolve) => {
      const waiter: Waiter = { process, resolve, orphan: options.orphan, reaperGone: false, unwatch: () => {} };
      this.#waiters.set(process.statusPath, waiter);
      this.#byReaper.set(process.identity.reaperPid, waiter);
      // One inotify watch per directory, shared by every waiter in it; events come by file name.
      // Without the watch, the sweep must cover this waiter: slower, but nothing is missed.
      waiter.unwatch = watchDirectoryEntry(dirname(process.statusPath), basename(process.statusPath), () => void this.#check(waiter, false), () => {
        waiter.orphan = true;
        this.#startSweep();
      });
      if (waiter.orphan) this.#startSweep();
      // The status may have been written before the watch existed.
      void this.#check(waiter, false);
    });
  }

  /**
   * A reaper reported its VMM's end: with the status file's content when it came along (no need
   * to read the file), else the file is there to read.
   */
  reported(statusPath: string, statusFile: string | undefined): void {
    const waiter = this.#waiters.get(statusPath);
    if (!waiter) return;
    const status = statusFile === undefined ? undefined : parseReaperStatus(statusFile);
    if (status) this.#settle(waiter, status);
    else void this.#check(waiter, false);
  }

  /** The spawner reports that a reaper ended: its status file is final. */
  reaped(reaperPid: number): void {
    const waiter = this.#byReaper.get(reaperPid);
    if (waiter) void this.#check(waiter, true);
  }

  /** The spawner is gone: no reaper's end will be reported any more. */
  orphanAll(): void {
    for (const waiter of this.#waiters.values()) waiter.orphan = true;
    if (this.#waiters.size > 0) this.#startSweep();
  }

  close(): void {
    for (const waiter of this.#waiters.values()) waiter.unwatch();
    clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  #startSweep(): void {
    this.#sweep ??= setInterval(() => {
      const thorough = ++this.#sweeps % THOROUGH_EVERY === 0;
      for (const waiter of this.#waiters.values()) {
        if (!waiter.orphan) continue;
        // Cheap first: a signal-0 probe is one syscall, no thread pool, no file read. Only a
        // process that is gone (or every THOROUGH_EVERY sweeps, for a zombie or a reused PID) gets
        // the full look at its status file and /proc. A thousand adopted VMMs cost ~nothing idle.
        const watched = waiter.reaperGone ? waiter.process.identity.pid : waiter.process.identity.reaperPid;
        if (!thorough && processExists(watched)) continue;
        void this.#check(waiter, true);
      }
    }, this.#sweepMs).unref();
  }

  async #check(waiter: Waiter, thorough: boolean): Promise<void> {
    const { identity, statusPath } = waiter.process;
    const status = await readExitStatus(statusPath).catch(() => undefined);
    if (status) return this.#settle(waiter, status);
    if (!thorough) return;
    if (!waiter.reaperGone && (await isSameLiveProcess(identity.reaperPid, identity.reaperStartTime))) return;
    // The reaper is gone. It may have recorded just before it ended: look once more.
    const late = await readExitStatus(statusPath).catch(() => undefined);
    if (late) return this.#settle(waiter, late);
    waiter.reaperGone = true;
    if (!(await isSameLiveProcess(identity.pid, identity.startTime))) return this.#settle(waiter, undefined);
    // The VMM outlived its reaper: only the sweep can see it end now.
    waiter.orphan = true;
    this.#startSweep();
  }

  #settle(waiter: Waiter, status: ExitStatus | undefined): void {
    const { statusPath } = waiter.process;
    const { reaperPid } = waiter.process.identity;
    if (this.#waiters.get(statusPath) !== waiter) return;
    this.#waiters.delete(statusPath);
    waiter.unwatch();
    if (this.#byReaper.get(reaperPid) === waiter) this.#byReaper.delete(reaperPid);
    waiter.resolve(status);
    if (![...this.#waiters.values()].some((w) => w.orphan)) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }
}
