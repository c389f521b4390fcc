import { type FileHandle, open, readFile, rename, rm, stat, truncate } from 'node:fs/promises';
import { dirname } from 'node:path';
import { crc32 } from 'node:zlib';
import { VmprocError } from '../errors.js';

/**
 * An append-only journal of JSON records, one per line, each prefixed by its CRC-32:
 *
 *   0a1b2c3d {"k":"exit",...}\n
 *
 * Why a journal and not a database: every write is an append, so an interrupted write can only
 * damage the last line, which the CRC (or a missing newline) exposes; recovery drops that torn
 * tail and nothing else. A bad line anywhere before the tail is real corruption and stops the
 * load with its position, rather than silently skipping history. Compaction writes a fresh file
 * and renames it over the old one (atomic), after an fsync of the file and its directory.
 *
 * Appends are group-committed: all records queued while a write is in flight go out in the next
 * single write (followed by one fdatasync if any of them asked for it), and callers resolve in
 * append order.
 *
 * A batch is in the file whole or not at all: short writes are continued, and a write that fails
 * (a full disk) is undone by truncating the file back to where the batch began, so a failure never
 * leaves a torn record for later appends to bury (a complete line failing its checksum is
 * corruption, which stops the next start). The end of the file is tracked, not asked for: the
 * file is the daemon's alone while it runs (the state-dir lock).
 */
export interface JournalOptions {
  /** fdatasync every group of appends, whatever each asks (survives a host crash, not only a daemon crash). */
  readonly syncAll: boolean;
}

export interface LoadedJournal {
  readonly records: unknown[];
  /** Bytes of a torn final record that were dropped, 0 when the file ended cleanly. */
  readonly droppedTailBytes: number;
}

interface PendingAppend {
  readonly line: string;
  readonly sync: boolean;
  readonly written: Settle;
  readonly durable: Settle;
}

interface Settle {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** An append's two moments: in the file (survives a crash of this process), and on disk. */
export interface Appended {
  readonly written: Promise<void>;
  /** Settles with `written` for a record that need not be synced. */
  readonly durable: Promise<void>;
}

export class Journal {
  readonly path: string;
  readonly #options: JournalOptions;
  #handle: FileHandle;
  /** Where the last whole batch ends: a failed write is truncated back to it. */
  #size: number;
  /** A failed write could not be truncated away: do it before the next write. */
  #tornTail = false;
  #queue: PendingAppend[] = [];
  /** The drain in progress, if any. */
  #draining: Promise<void> | undefined;
  /** Set while compaction swaps files: appends queue up and wait. */
  #paused = false;
  #recordCount: number;
  #closed = false;
  /** The fdatasync in flight, and the appends waiting for the next one. */
  #syncing: Promise<void> | undefined;
  readonly #awaitingSync: Settle[] = [];

  private constructor(path: string, options: JournalOptions, handle: FileHandle, size: number, recordCount: number) {
    this.path = path;
    this.#options = options;
    this.#handle = handle;
    this.#size = size;
    this.#recordCount = recordCount;
  }

  /**
   * Reads the journal (creating it if absent), drops a torn tail, and opens it for appending.
   * Throws `failed-precondition` when a record before the tail is corrupt.
   */
  static async open(path: string, options: JournalOptions): Promise<{ journal: Journal; loaded: LoadedJournal }> {
    const loaded = await readJournal(path);
    if (loaded.droppedTailBytes > 0) await truncate(path, (await stat(path)).size - loaded.droppedTailBytes);
    await rm(`${path}.compact`, { force: true });
    const handle = await open(path, 'a', 0o600);
    const { size } = await handle.stat();
    return { journal: new Journal(path, options, handle, size, loaded.records.length), loaded };
  }

  /** Records in the file now (appended or compacted), to decide when to compact. */
  get recordCount(): number {
    return this.#recordCount;
  }

  /**
   * Resolves once the record is in the file: in the page cache, which survives any crash of this
   * process, and on disk too when `sync` (or `syncAll`) is set.
   */
  append(record: unknown, options: { sync?: boolean } = {}): Promise<void> {
    return this.appendStaged(record, options).durable;
  }

  /**
   * Like append(), with the two moments apart, so a caller can go on once the record is written
   * and wait for the disk only when it must (the fdatasync of a launch record overlaps the launch).
   */
  appendStaged(record: unknown, options: { sync?: boolean } = {}): Appended {
    if (this.#closed) {
      const closed = Promise.reject(new VmprocError('unavailable', `journal ${this.path} is closed`));
      closed.catch(() => undefined);
      return { written: closed, durable: closed };
    }
    const sync = options.sync === true || this.#options.syncAll;
    let written!: Settle;
    let durable!: Settle;
    const writtenPromise = new Promise<void>((resolve, reject) => {
      written = { resolve, reject };
    });
    const durablePromise = sync
      ? new Promise<void>((resolve, reject) => {
          durable = { resolve, reject };
        })
      : writtenPromise;
    durable ??= { resolve: () => {}, reject: () => {} };
    // A caller that waits on one moment only must not see the other's failure as unhandled.
    writtenPromise.catch(() => undefined);
    durablePromise.catch(() => undefined);
    this.#queue.push({ line: encodeRecord(record), sync, written, durable });
    this.#recordCount++;
    this.#kick();
    return { written: writtenPromise, durable: durablePromise };
  }

  /**
   * Replaces the journal with `snapshot()`, atomically. The snapshot is taken at once, when
   * compact() is called, and must hold every record appended until then (JournalStateStore's state
   * does: it applies each record as it appends it); those still waiting to be written are not
   * written again but settle with the snapshot. Appends made afterwards land in the new file, after
   * the snapshot.
   */
  async compact(snapshot: () => unknown[]): Promise<void> {
    const records = snapshot();
    const included = this.#queue.splice(0);
    this.#paused = true;
    try {
      await this.#idle();
      await this.#syncing;
      const tmp = `${this.path}.compact`;
      try {
        const out = await open(tmp, 'w', 0o600);
        try {
          await out.writeFile(records.map(encodeRecord).join(''));
          await out.sync();
        } finally {
          await out.close();
        }
        await rename(tmp, this.path);
      } catch (error) {
        // Most likely a full disk: the half-written copy must not hold on to the space.
        await rm(tmp, { force: true }).catch(() => undefined);
        throw error;
      }
      await syncDirectory(dirname(this.path));
      await this.#handle.close();
      this.#handle = await open(this.path, 'a', 0o600);
      this.#size = (await this.#handle.stat()).size;
      this.#tornTail = false;
      this.#recordCount = records.length + this.#queue.length;
      for (const pending of included) {
        pending.written.resolve();
        pending.durable.resolve();
      }
    } catch (error) {
      // The old journal is still in place: the records the snapshot held go to it as usual.
      this.#queue.unshift(...included);
      throw error;
    } finally {
      this.#paused = false;
      this.#kick();
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#idle();
    await this.#syncing;
    await this.#handle.close();
  }

  #kick(): void {
    if (this.#draining || this.#paused || this.#queue.length === 0) return;
    this.#draining = this.#drain().finally(() => {
      this.#draining = undefined;
      this.#kick();
    });
  }

  async #idle(): Promise<void> {
    while (this.#draining) await this.#draining;
  }

  /**
   * Writes everything queued, one batch per write, until the queue is empty. Syncs run beside the
   * writes: a batch waiting for the disk does not hold up the next batch's write.
   */
  async #drain(): Promise<void> {
    while (this.#queue.length > 0 && !this.#paused) {
      const batch = this.#queue;
      this.#queue = [];
      try {
        await this.#writeWhole(Buffer.from(batch.map((p) => p.line).join('')));
      } catch (error) {
        const failure = this.#failure('write to', error);
        for (const pending of batch) {
          pending.written.reject(failure);
          pending.durable.reject(failure);
        }
        continue;
      }
      for (const pending of batch) pending.written.resolve();
      const toSync = batch.filter((p) => p.sync).map((p) => p.durable);
      if (toSync.length > 0) this.#sync(toSync);
    }
  }

  /**
   * Appends all of `bytes`, or leaves the file as it was: a write may be short (continued), and
   * one that fails after part of the batch is in is undone by truncating back to the batch's start.
   * A truncation that fails is retried before the next write, which must not follow a torn tail.
   */
  async #writeWhole(bytes: Buffer): Promise<void> {
    if (this.#tornTail) {
      await this.#handle.truncate(this.#size);
      this.#tornTail = false;
    }
    let written = 0;
    try {
      while (written < bytes.length) {
        const { bytesWritten } = await this.#handle.write(bytes, written, bytes.length - written);
        if (bytesWritten <= 0) throw Object.assign(new Error('the write made no progress'), { code: 'EIO' });
        written += bytesWritten;
      }
    } catch (error) {
      try {
        await this.#handle.truncate(this.#size);
      } catch {
        this.#tornTail = true;
      }
      throw error;
    }
    this.#size += bytes.length;
  }

  /** fdatasync for records already written; one sync at a time, later ones join the next. */
  #sync(waiting: Settle[]): void {
    this.#awaitingSync.push(...waiting);
    if (this.#syncing) return;
    const round = this.#awaitingSync.splice(0);
    this.#syncing = this.#handle
      .datasync()
      .then(
        () => round.forEach((w) => w.resolve()),
        (error: unknown) => {
          const failure = this.#failure('sync', error);
          round.forEach((w) => w.reject(failure));
        },
      )
      .finally(() => {
        this.#syncing = undefined;
        if (this.#awaitingSync.length > 0) this.#sync([]);
      });
  }

  #failure(what: string, error: unknown): VmprocError {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      const [full, fix] = code === 'ENOSPC' ? ['the state disk is full', 'Free space'] : ['the state disk quota is used up', 'Free space, or raise the quota,'];
      return new VmprocError(
        'resource-exhausted',
        `${full}: cannot ${what} the state journal ${this.path} (${code}). ${fix} on the file system ` +
          `that holds ${dirname(this.path)}; until then no VMM can be started, and exits are published but not recorded`,
        { cause: error },
      );
    }
    return new VmprocError('internal', `cannot ${what} the state journal ${this.path}: ${(error as Error).message}`, { cause: error });
  }
}

export function encodeRecord(record: unknown): string {
  const json = JSON.stringify(record);
  return `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`;
}

/** Parses a journal file; a missing file is an empty journal. */
export async function readJournal(path: string): Promise<LoadedJournal> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], droppedTailBytes: 0 };
    throw error;
  }
  // Lines are found in the bytes, not in decoded text: a write torn inside a multi-byte character
  // must cost exactly its own bytes, never the newline of the record before it.
  const records: unknown[] = [];
  let offset = 0;
  let lineNumber = 0;
  while (offset < bytes.length) {
    lineNumber++;
    const end = bytes.indexOf(0x0a, offset);
    // Only a last record without its newline can be a torn write: appends write whole lines, so a
    // complete line that fails its checksum was damaged afterwards, which is corruption.
    if (end === -1) return { records, droppedTailBytes: bytes.length - offset };
    const record = decodeRecord(bytes.toString('utf8', offset, end));
    if (record === undefined) {
      throw new VmprocError(
        'failed-precondition',
        `state journal ${path} is corrupt at line ${lineNumber} (byte ${offset}): ` +
          'the record does not match its checksum. Move the file aside to start with an empty state ' +
          '(VMMs it recorded will then not be re-adopted), or restore it from a backup.',
      );
    }
    records.push(record.value);
    offset = end + 1;
  }
  return { records, droppedTailBytes: 0 };
}

/** `<8 hex digits of CRC-32> <JSON>`; JSON may hold any character but a newline (U+2028 included). */
function decodeRecord(line: string): { value: unknown } | undefined {
  const crc = line.slice(0, 8);
  const json = line.slice(9);
  if (line[8] !== ' ' || !/^[0-9a-f]{8}$/.test(crc) || crc32(json).toString(16).padStart(8, '0') !== crc) return undefined;
  try {
    return { value: JSON.parse(json) };
  } catch {
    return undefined;
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
