import { type FSWatcher, type Stats, watch } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { VmprocError } from '../errors.js';
import type { Rotation, RotationListener } from './log-rotation.js';
import { tailOffset } from './log-tail-offset.js';
import { Wakeup } from '../util/wakeup.js';

/** The largest piece read and handed on at once: what one stream holds in memory. */
export const LOG_CHUNK_BYTES = 64 * 1024;

/** With an inotify watch on the log, a look now and then anyway (belt and braces); without, often. */
const POLL_WATCHED_MS = 2_000;
const POLL_UNWATCHED_MS = 250;

export interface ReadLogOptions {
  readonly path: string;
  /** Start this many lines before the end; 0 for the beginning of the file. */
  readonly tailLines: number;
  /** Go on with what is appended, until `writerGone` settles (then drain) or `signal` aborts. */
  readonly follow: boolean;
  /** Settles once nothing more will be written to the log (its VMM exited). */
  readonly writerGone?: Promise<unknown>;
  /**
   * Ends the read: normally (the consumer went away), or by throwing the abort reason when it is
   * a VmprocError (e.g. `unavailable` when the daemon stops).
   */
  readonly signal?: AbortSignal;
  /** Where rotations of the log are announced before they begin (LogRotator.watch). */
  readonly rotations?: (path: string, listener: RotationListener) => () => void;
  /**
   * Rotations a reader may be behind on: each pins its copy (the disk or tmpfs space of a whole
   * log) until read. Past this, the oldest is dropped, and what the reader had not read of it is
   * skipped. Default 2.
   */
  readonly maxPendingRotations?: number;
  readonly chunkBytes?: number;
}

/**
 * Reads a VMM's log as a sequence of chunks (at most `chunkBytes` each, never empty), pulled one at
 * a time: nothing is read ahead of the consumer, so a slow consumer holds at most one chunk here.
 *
 * Without `follow`, it reads what the log holds when called and ends. With it, it then waits for
 * appends (an inotify watch on the file, with a slow poll as backstop) until the writer is gone
 * and the log drained. A rotation (copy-truncate, see log-rotation.ts) is announced before it
 * begins: a reader that had not reached the end reads the rest from the copy, then goes on at
 * the start of the truncated log. A truncation nobody announced (someone else's) restarts the
 * read at offset 0.
 */
export async function* readLog(options: ReadLogOptions): AsyncGenerator<Buffer, void, undefined> {
  const { path, follow, signal } = options;
  const chunkBytes = options.chunkBytes ?? LOG_CHUNK_BYTES;
  const wakeup = new Wakeup();
  const rotations: Array<Promise<Rotation | undefined>> = [];
  /** Rotations announced so far: a read during which this changed may have read the truncated log. */
  let announced = 0;
  /** Where the next read starts in the log (the rotation listener resets it too). */
  let offset = 0;
  let writerGone = false;
  let watcher: FSWatcher | undefined;
  let pollMs = POLL_UNWATCHED_MS;
  const onAbort = () => wakeup.notify();
  signal?.addEventListener('abort', onAbort);
  options.writerGone?.then(
    () => {
      writerGone = true;
      wakeup.notify();
    },
    () => {
      writerGone = true;
      wakeup.notify();
    },
  );
  const maxPending = Math.max(1, options.maxPendingRotations ?? 2);
  const unsubscribe = options.rotations?.(path, (rotation) => {
    rotations.push(rotation);
    announced++;
    if (rotations.length > maxPending) {
      // Too far behind: give up the rest of the oldest copy; the next one is read from its start.
      release(rotations.shift()!);
      offset = 0;
    }
    wakeup.notify();
  }) ?? (() => {});
  /** True when the read must end now; throws when it must end with an error. */
  const stopped = (): boolean => {
    if (!signal?.aborted) return false;
    if (signal.reason instanceof VmprocError) throw signal.reason;
    return true;
  };

  let log: FileHandle | undefined;
  try {
    log = await openLog(path);
    // A live VMM's log exists from its spawn on; before that (or for a log removed by hand) a
    // follower waits for it, anyone else gets an empty stream.
    while (!log) {
      if (!follow || writerGone || stopped()) return;
      await wakeup.sleep(POLL_UNWATCHED_MS);
      log = await openLog(path);
    }
    const size = await sizeOf(log, path);
    offset = options.tailLines > 0 ? await tailOffset(log, size, options.tailLines) : 0;
    /** Where the read ends, in the log as it is now; undefined while following. */
    let endAt: number | undefined = follow ? undefined : size;
    if (follow) {
      try {
        watcher = watch(path, { persistent: false }, () => wakeup.notify());
        watcher.on('error', () => {
          watcher?.close();
          pollMs = POLL_UNWATCHED_MS;
        });
        pollMs = POLL_WATCHED_MS;
      } catch {
        // No inotify watch to be had (e.g. fs.inotify.max_user_watches): poll often instead.
      }
    }

    for (;;) {
      if (stopped()) return;
      const rotation = rotations.shift();
      if (rotation) {
        const done = await rotation;
        if (!done) continue; // failed: the log may or may not be truncated; sizes below tell
        try {
          const copyEnd = endAt === undefined ? done.copiedBytes : Math.min(done.copiedBytes, endAt);
          for (let from = offset; from < copyEnd && done.copy; ) {
            const chunk = Buffer.allocUnsafe(Math.min(chunkBytes, copyEnd - from));
            const { bytesRead } = await done.copy.read(chunk, from).catch((error: unknown) => {
              throw cannotRead(done.copyPath, error);
            });
            if (bytesRead === 0 || stopped()) break;
            from += bytesRead;
            yield bytesRead === chunk.length ? chunk : chunk.subarray(0, bytesRead);
          }
        } finally {
          done.copy?.release();
        }
        if (stopped()) return;
        offset = 0;
        // A bounded read (not following, or the writer gone) ended in the copy.
        if (endAt !== undefined) return;
        continue;
      }
      if (follow && writerGone && endAt === undefined) endAt = await sizeOf(log, path);
      const announcedBefore = announced;
      const current = await sizeOf(log, path);
      // Smaller than what was read already, and no rotation announced: someone else truncated it.
      if (current < offset && rotations.length === 0) offset = 0;
      const end = endAt === undefined ? current : Math.min(current, endAt);
      if (offset < end) {
        const chunk = Buffer.allocUnsafe(Math.min(chunkBytes, end - offset));
        const { bytesRead } = await readAt(log, path, chunk, offset);
        // A rotation announced meanwhile may have truncated the log, and appends refilled it past
        // `offset` before this read: these may be the new bytes. Read them from the copy instead.
        if (announced !== announcedBefore) continue;
        if (bytesRead > 0) {
          offset += bytesRead;
          yield bytesRead === chunk.length ? chunk : chunk.subarray(0, bytesRead);
          continue;
        }
      }
      if (endAt !== undefined && (offset >= endAt || current < endAt)) return;
      await wakeup.sleep(pollMs);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    unsubscribe();
    for (const rotation of rotations.splice(0)) release(rotation);
    watcher?.close();
    await log?.close().catch(() => undefined);
  }
}

/** Releases a rotation's copy once the rotation is done, for a reader that will not read it. */
function release(rotation: Promise<Rotation | undefined>): void {
  void rotation.then((done) => done?.copy?.release());
}

async function openLog(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw cannotRead(path, error);
  }
}

async function statOf(file: FileHandle, path: string): Promise<Stats> {
  try {
    return await file.stat();
  } catch (error) {
    throw cannotRead(path, error);
  }
}

async function sizeOf(file: FileHandle, path: string): Promise<number> {
  return (await statOf(file, path)).size;
}

async function readAt(file: FileHandle, path: string, buffer: Buffer, offset: number): Promise<{ bytesRead: number }> {
  try {
    return await file.read(buffer, 0, buffer.length, offset);
  } catch (error) {
    throw cannotRead(path, error);
  }
}

function cannotRead(path: string, cause: unknown): VmprocError {
  return new VmprocError('internal', `cannot read the log ${path}: ${(cause as Error).message}`, { cause });
}
