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
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export class Journal {
  readonly path: string;
  readonly #options: JournalOptions;
  #handle: FileHandle;
  #queue: PendingAppend[] = [];
  /** The drain in progress, if any. */
  #draining: Promise<void> | undefined;
  /** Set while compaction swaps files: appends queue up and wait. */
  #paused = false;
  #recordCount: number;
  #closed = false;

  private constructor(path: string, options: JournalOptions, handle: FileHandle, recordCount: number) {
    this.path = path;
    this.#options = options;
    this.#handle = handle;
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
    return { journal: new Journal(path, options, handle, loaded.records.length), loaded };
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
    if (this.#closed) return Promise.reject(new VmprocError('unavailable', `journal ${this.path} is closed`));
    return new Promise((resolve, reject) => {
      this.#queue.push({ line: encodeRecord(record), sync: options.sync === true || this.#options.syncAll, resolve, reject });
      this.#recordCount++;
      this.#kick();
    });
  }

  /**
   * Replaces the journal with `snapshot()` (the current state), atomically. The snapshot is taken
   * once earlier appends are written; appends made meanwhile land in the new file after it.
   */
  async compact(snapshot: () => unknown[]): Promise<void> {
    this.#paused = true;
    try {
      await this.#idle();
      const records = snapshot();
      const tmp = `${this.path}.compact`;
      const out = await open(tmp, 'w', 0o600);
      try {
        await out.writeFile(records.map(encodeRecord).join(''));
        await out.sync();
      } finally {
        await out.close();
      }
      await rename(tmp, this.path);
      await syncDirectory(dirname(this.path));
      await this.#handle.close();
      this.#handle = await open(this.path, 'a', 0o600);
      this.#recordCount = records.length + this.#queue.length;
    } finally {
      this.#paused = false;
      this.#kick();
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#idle();
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

  /** Writes everything queued, one batch per write, until the queue is empty. */
  async #drain(): Promise<void> {
    while (this.#queue.length > 0 && !this.#paused) {
      const batch = this.#queue;
      this.#queue = [];
      try {
        await this.#handle.write(batch.map((p) => p.line).join(''));
        if (batch.some((p) => p.sync)) await this.#handle.datasync();
        for (const pending of batch) pending.resolve();
      } catch (error) {
        const failure = new VmprocError('internal', `cannot write to the state journal ${this.path}: ${(error as Error).message}`, { cause: error });
        for (const pending of batch) pending.reject(failure);
      }
    }
  }
}

export function encodeRecord(record: unknown): string {
  const json = JSON.stringify(record);
  return `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`;
}

/** Parses a journal file; a missing file is an empty journal. */
export async function readJournal(path: string): Promise<LoadedJournal> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], droppedTailBytes: 0 };
    throw error;
  }
  const records: unknown[] = [];
  let offset = 0;
  let lineNumber = 0;
  while (offset < text.length) {
    lineNumber++;
    const end = text.indexOf('\n', offset);
    // Only a last record without its newline can be a torn write: appends write whole lines, so a
    // complete line that fails its checksum was damaged afterwards, which is corruption.
    if (end === -1) return { records, droppedTailBytes: Buffer.byteLength(text.slice(offset)) };
    const record = decodeRecord(text.slice(offset, end));
    if (record === undefined) {
      throw new VmprocError(
        'failed-precondition',
        `state journal ${path} is corrupt at line ${lineNumber} (byte ${Buffer.byteLength(text.slice(0, offset))}): ` +
          'the record does not match its checksum. Move the file aside to start with an empty state ' +
          '(VMMs it recorded will then not be re-adopted), or restore it from a backup.',
      );
    }
    records.push(record.value);
    offset = end + 1;
  }
  return { records, droppedTailBytes: 0 };
}

function decodeRecord(line: string): { value: unknown } | undefined {
  const match = /^([0-9a-f]{8}) (.*)$/.exec(line);
  if (!match || crc32(match[2]!).toString(16).padStart(8, '0') !== match[1]) return undefined;
  try {
    return { value: JSON.parse(match[2]!) };
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
