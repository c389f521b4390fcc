import { type FSWatcher, watch } from 'node:fs';
import { copyFile, type FileHandle, open, rename, stat } from 'node:fs/promises';
import { type Logger, silentLogger } from '../logger.js';

/** One copy-truncate rotation that happened. */
export interface Rotation {
  /** The log that was rotated. */
  readonly path: string;
  /** Where its content went: `<path>.1`. */
  readonly copyPath: string;
  /** The copy holds the log's bytes [0, copiedBytes) as they were before the truncation. */
  readonly copiedBytes: number;
  /**
   * The copy, open for the readers that were told of this rotation (LogRotator.watch); each must
   * release it once. Through this handle, never by name: later rotations rename the copy to `.2`
   * and on, or delete it, and a new copy may even get its inode number.
   */
  readonly copy?: RotatedCopy;
}

/** A rotated copy shared by the readers told of its rotation; closed when the last one releases it. */
export class RotatedCopy {
  readonly #handle: FileHandle;
  #references: number;

  constructor(handle: FileHandle, references: number) {
    this.#handle = handle;
    this.#references = references;
  }

  read(buffer: Buffer, position: number): Promise<{ bytesRead: number }> {
    return this.#handle.read(buffer, 0, buffer.length, position);
  }

  release(): void {
    if (--this.#references === 0) void this.#handle.close().catch(() => undefined);
  }
}

/** How much a rotation copies after the first pass, at most, before it truncates anyway. */
const CATCH_UP_LIMIT_BYTES = 64 * 1024 * 1024;
const CATCH_UP_CHUNK_BYTES = 1024 * 1024;

/**
 * Copy-truncate rotation of a log that its writers append to (O_APPEND) and never reopen: the
 * VMM's stdout and stderr, whose only descriptor the VMM holds, so that renaming the log (and
 * having the writer reopen it) is not open to us. Shifts `<path>.1` .. `<path>.<keep-1>` up one,
 * copies the log to a temporary file, catches up with what was appended meanwhile, truncates the
 * log, and renames the copy to `<path>.1` (replacing the previous one when keep is 1). The
 * writers' next appends land at the log's new end, offset 0.
 *
 * Lossy at the boundary, by nature: bytes appended between the last catch-up read and the
 * truncation are in neither file. That window is one read and one ftruncate wide (microseconds),
 * but a VMM writing at that instant loses a few bytes, possibly mid-line.
 */
export async function rotateLog(path: string, keep: number, readers = 0): Promise<Rotation> {
  const copyPath = `${path}.1`;
  const temporary = `${path}.1.tmp`;
  for (let generation = keep - 1; generation >= 1; generation--) {
    await rename(`${path}.${generation}`, `${path}.${generation + 1}`).catch(ignoreMissing);
  }
  // The kernel copies the bulk (copy_file_range), up to the size the log had when it started.
  await copyFile(path, temporary);
  let copied = (await stat(temporary)).size;
  const log = await open(path, 'r+');
  try {
    const copy = await open(temporary, 'a');
    try {
      const chunk = Buffer.allocUnsafe(CATCH_UP_CHUNK_BYTES);
      for (let caughtUp = 0; caughtUp < CATCH_UP_LIMIT_BYTES; ) {
        const { bytesRead } = await log.read(chunk, 0, chunk.length, copied);
        if (bytesRead === 0) break;
        await copy.write(chunk, 0, bytesRead);
        copied += bytesRead;
        caughtUp += bytesRead;
      }
    } finally {
      await copy.close();
    }
    // Right after the last read: this is the window in which appended bytes are lost.
    await log.truncate(0);
  } finally {
    await log.close();
  }
  // Opened before the rename, so it is this copy whatever happens to the names later.
  const copy = readers > 0 ? new RotatedCopy(await open(temporary, 'r'), readers) : undefined;
  await rename(temporary, copyPath);
  return { path, copyPath, copiedBytes: copied, ...(copy ? { copy } : {}) };
}

function ignoreMissing(error: unknown): void {
  if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
}

export interface LogRotatorOptions {
  /** A live VMM's log larger than this is rotated at the next check. */
  readonly maxBytes: number;
  /** Rotated copies kept: `<log>.1` (the newest) .. `<log>.<keep>`. At least 1. */
  readonly keep: number;
  /** Time between two checks while any VMM is live. */
  readonly checkIntervalMs: number;
  /** The logs of the VMMs live now: the only logs rotated (an exited VMM's log no longer grows). */
  readonly liveLogs: () => readonly string[];
  readonly logger?: Logger;
  /** Called after each rotation (metrics). */
  readonly onRotated?: (rotation: Rotation) => void;
  /** Called after each failed rotation (metrics). */
  readonly onRotationFailed?: (path: string, error: unknown) => void;
}

/**
 * Told before a rotation of the log it watches begins; the promise settles when it is done
 * (undefined if it failed). The listener must release the rotation's copy once, read or not.
 */
export type RotationListener = (rotation: Promise<Rotation | undefined>) => void;

/** How many logs are stat'ed at once during a check. */
const CHECK_CONCURRENCY = 16;

/** A log written to since it was last looked at (or never looked at): the next check stats it. */
const DIRTY = 'dirty';

/**
 * Keeps live VMMs' logs under `maxBytes`: one timer for all logs, which rotates the logs that
 * grew past the cap. Only logs written to since the last check are looked at: each live log has
 * a one-shot inotify watch, which marks it dirty at the first write and is then dropped, and
 * re-armed when the next check has looked at the log. So a quiet VMM costs nothing, and a
 * chatty one one event, one stat and one re-arm per interval however much it writes. (A log
 * that cannot be watched, e.g. past fs.inotify.max_user_watches, is stat'ed at every check.)
 *
 * The timer runs only while VMMs are live: a check that finds none does not schedule the next
 * one, and `wake()` (called when a VMM is spawned) starts it again. An idle daemon has no timer.
 * Measured costs are in README.md ("VMM logs").
 *
 * Readers following a log (StreamLogs) hear of each rotation before it begins, so that a reader
 * that is behind can finish from the rotated copy instead of losing what it had not read yet.
 */
export class LogRotator {
  readonly #options: LogRotatorOptions;
  readonly #logger: Logger;
  readonly #listeners = new Map<string, Set<RotationListener>>();
  /** Live logs: an armed watch (quiet since last looked at), or DIRTY. */
  readonly #watches = new Map<string, FSWatcher | typeof DIRTY>();
  #lastChecked = 0;
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<void> | undefined;
  #closed = false;

  constructor(options: LogRotatorOptions) {
    if (!(options.maxBytes > 0) || !(options.keep >= 1) || !(options.checkIntervalMs > 0)) {
      throw new RangeError('maxBytes, keep and checkIntervalMs must be positive');
    }
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
  }

  /** Whether the check timer is armed (for tests and the idle-cost claim). */
  get scheduled(): boolean {
    return !this.#closed && (this.#timer !== undefined || this.#checking !== undefined);
  }

  /** Starts the periodic check if it is not running (a VMM was spawned). */
  wake(): void {
    if (this.#closed || this.scheduled) return;
    this.#schedule();
  }

  /** How many logs the last check stat'ed (the dirty ones). */
  get lastChecked(): number {
    return this.#lastChecked;
  }

  /**
   * Looks at every live log written to since the last check (all of them the first time), now,
   * and rotates those over the cap. Resolves with the number of live logs.
   */
  async checkNow(): Promise<number> {
    const live = this.#options.liveLogs();
    const liveSet = new Set(live);
    for (const [path, entry] of this.#watches) {
      if (liveSet.has(path)) continue;
      if (entry !== DIRTY) entry.close();
      this.#watches.delete(path);
    }
    const due = live.filter((path) => (this.#watches.get(path) ?? DIRTY) === DIRTY);
    this.#lastChecked = due.length;
    for (let index = 0; index < due.length && !this.#closed; index += CHECK_CONCURRENCY) {
      const batch = due.slice(index, index + CHECK_CONCURRENCY);
      // Armed before the stat: a write after the stat is an event, never missed.
      for (const path of batch) this.#arm(path);
      const sizes = await Promise.all(batch.map((path) => stat(path).then((s) => s.size, () => 0)));
      for (let i = 0; i < batch.length; i++) {
        if (sizes[i]! > this.#options.maxBytes && !this.#closed) await this.rotate(batch[i]!);
      }
    }
    return live.length;
  }

  /** Watches `path` until its next write, which marks it dirty. */
  #arm(path: string): void {
    if (this.#closed) return;
    const dirty = () => {
      watcher?.close();
      if (this.#watches.get(path) === watcher) this.#watches.set(path, DIRTY);
    };
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(path, { persistent: false }, dirty);
      watcher.on('error', dirty);
      this.#watches.set(path, watcher);
    } catch {
      // Not there yet, or no watch to be had: looked at again at the next check.
      this.#watches.set(path, DIRTY);
    }
  }

  /** Rotates one log now, telling its readers first. Never throws: a failure is logged. */
  async rotate(path: string): Promise<Rotation | undefined> {
    const listeners = [...(this.#listeners.get(path) ?? [])];
    const rotation = rotateLog(path, this.#options.keep, listeners.length).then(
      (done) => {
        this.#options.onRotated?.(done);
        this.#logger.info({ log: path, bytes: done.copiedBytes }, 'rotated vmm log');
        return done;
      },
      (error: unknown) => {
        this.#options.onRotationFailed?.(path, error);
        this.#logger.warn({ log: path, err: error }, 'cannot rotate vmm log');
        return undefined;
      },
    );
    for (const listener of listeners) listener(rotation);
    return rotation;
  }

  /** Calls `listener` before each rotation of `path`; returns the unsubscribe. */
  watch(path: string, listener: RotationListener): () => void {
    let listeners = this.#listeners.get(path);
    if (!listeners) this.#listeners.set(path, (listeners = new Set()));
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0 && this.#listeners.get(path) === listeners) this.#listeners.delete(path);
    };
  }

  /** Stops checking; a check under way finishes its current log. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const entry of this.#watches.values()) if (entry !== DIRTY) entry.close();
    this.#watches.clear();
  }

  #schedule(): void {
    const timer = setTimeout(() => {
      this.#timer = undefined;
      const checking = this.checkNow().then(
        (live) => live,
        (error: unknown) => {
          this.#logger.warn({ err: error }, 'log size check failed');
          return 1;
        },
      );
      this.#checking = checking.then((live) => {
        this.#checking = undefined;
        if (live > 0 && !this.#closed) this.#schedule();
      });
    }, this.#options.checkIntervalMs);
    // The daemon's listeners keep it alive; this timer alone must not.
    timer.unref();
    this.#timer = timer;
  }
}
