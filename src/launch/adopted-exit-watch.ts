import { type FSWatcher, watch } from 'node:fs';
import { dirname } from 'node:path';
import type { ExitStatus } from './exit-status.js';
import { isSameLiveProcess } from './proc-stat.js';
import { readExitStatus } from './vmm-process.js';

/** Identity of an adopted VMM and its reaper (PID plus start time each). */
export interface AdoptedProcess {
  readonly pid: number;
  readonly startTime: bigint;
  readonly reaperPid: number;
  readonly reaperStartTime: bigint;
  readonly statusPath: string;
}

/**
 * How often adopted processes are checked by hand, for the cases inotify cannot see: a reaper
 * killed before it recorded anything, or an event lost to a full inotify queue.
 */
export const ADOPTED_SWEEP_MS = 1_000;

interface Waiter {
  readonly process: AdoptedProcess;
  readonly resolve: (status: ExitStatus | undefined) => void;
  /** Set once the reaper is known to be gone without a record: only the VMM's liveness is left. */
  reaperGone: boolean;
}

/**
 * Learns when VMMs adopted after a daemon restart exit. They are not our children, so there is
 * no exit event: instead their reapers' status files are watched (one inotify watch per exits
 * directory, events dispatched by file name), with a slow sweep as a backstop.
 *
 * Resolves with the recorded status, or undefined when the reaper died without recording and the
 * VMM is gone too (the status is lost).
 */
export class AdoptedExitWatch {
  readonly #waiters = new Map<string, Waiter>();
  readonly #watchers = new Map<string, FSWatcher>();
  #sweep: NodeJS.Timeout | undefined;
  readonly #sweepMs: number;

  constructor(sweepMs = ADOPTED_SWEEP_MS) {
    this.#sweepMs = sweepMs;
  }

  get size(): number {
    return this.#waiters.size;
  }

  wait(process: AdoptedProcess): Promise<ExitStatus | undefined> {
    return new Promise((resolve) => {
      const waiter: Waiter = { process, resolve, reaperGone: false };
      this.#waiters.set(process.statusPath, waiter);
      this.#watchDirectory(dirname(process.statusPath));
      this.#sweep ??= setInterval(() => void this.#sweepAll(), this.#sweepMs).unref();
      // The status may have been written before the watch existed.
      void this.#check(waiter);
    });
  }

  close(): void {
    for (const watcher of this.#watchers.values()) watcher.close();
    this.#watchers.clear();
    clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  #watchDirectory(dir: string): void {
    if (this.#watchers.has(dir)) return;
    const watcher = watch(dir, { persistent: false }, (_event, name) => {
      if (name === null) {
        // The kernel dropped events: look at everything.
        void this.#sweepAll();
        return;
      }
      const waiter = this.#waiters.get(`${dir}/${name}`);
      if (waiter) void this.#check(waiter);
    });
    watcher.on('error', () => {
      // Losing the watch leaves the sweep; nothing is missed, only slower.
      this.#watchers.delete(dir);
    });
    this.#watchers.set(dir, watcher);
  }

  async #sweepAll(): Promise<void> {
    await Promise.all([...this.#waiters.values()].map((waiter) => this.#check(waiter, true)));
  }

  async #check(waiter: Waiter, thorough = false): Promise<void> {
    const { process } = waiter;
    const status = await readExitStatus(process.statusPath).catch(() => undefined);
    if (status) {
      this.#settle(waiter, status);
      return;
    }
    if (!thorough) return;
    if (!waiter.reaperGone && (await isSameLiveProcess(process.reaperPid, process.reaperStartTime))) return;
    // The reaper is gone. It may have written the status just before it ended: look once more.
    const late = await readExitStatus(process.statusPath).catch(() => undefined);
    if (late) {
      this.#settle(waiter, late);
      return;
    }
    waiter.reaperGone = true;
    if (!(await isSameLiveProcess(process.pid, process.startTime))) this.#settle(waiter, undefined);
  }

  #settle(waiter: Waiter, status: ExitStatus | undefined): void {
    const key = waiter.process.statusPath;
    if (this.#waiters.get(key) !== waiter) return;
    this.#waiters.delete(key);
    waiter.resolve(status);
    if (this.#waiters.size === 0) this.close();
  }
}
