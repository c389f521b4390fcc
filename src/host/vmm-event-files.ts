import { closeSync, type FSWatcher, openSync, readSync, watch } from 'node:fs';
import type { LaunchFiles } from '../core/domain.js';
import type { VmmEvent, VmmEventFeed, VmmEventSource } from '../core/ports.js';
import { type Logger, silentLogger } from '../logger.js';
import { ChEventStream } from '../vmm/ch-event-stream.js';
import { eventMonitorPathOf } from './run-layout.js';

/** A missed inotify event (or a watch the kernel refused) costs at most this much delay. */
const POLL_MS = 1000;
const READ_CHUNK = 64 * 1024;

/**
 * VMM events from each launch's event monitor file (`<status>.events` in the run dir, which the
 * launch names in `--event-monitor path=`), read as Cloud Hypervisor appends to it: woken by
 * inotify on the file, with a slow poll behind it.
 */
export class VmmEventFiles implements VmmEventSource {
  readonly #logger: Logger;

  constructor(logger: Logger = silentLogger) {
    this.#logger = logger;
  }

  follow(files: LaunchFiles, fromOffset: number, onEvents: (events: readonly VmmEvent[]) => Promise<void>): VmmEventFeed {
    return new EventFileFeed(eventMonitorPathOf(files), fromOffset, onEvents, this.#logger);
  }
}

class EventFileFeed implements VmmEventFeed {
  readonly #path: string;
  readonly #stream: ChEventStream;
  readonly #onEvents: (events: readonly VmmEvent[]) => Promise<void>;
  readonly #logger: Logger;
  /** Where the next read starts: every byte before it went into the stream. */
  #position: number;
  /**
   * Read synchronously: the file is small, local and only ever appended to, so a read costs
   * microseconds, less than the thread-pool round trip of an asynchronous one (event latency).
   */
  #fd: number | undefined;
  #watcher: FSWatcher | undefined;
  readonly #timer: NodeJS.Timeout;
  /** Reads run one at a time, in order; a read asked for while one is queued joins it. */
  #chain: Promise<void> = Promise.resolve();
  #queued = false;
  #closed = false;
  monitored = false;

  constructor(path: string, fromOffset: number, onEvents: (events: readonly VmmEvent[]) => Promise<void>, logger: Logger) {
    this.#path = path;
    this.#position = fromOffset;
    this.#stream = new ChEventStream(fromOffset);
    this.#onEvents = onEvents;
    this.#logger = logger;
    this.#timer = setInterval(() => void this.drain(), POLL_MS).unref();
    void this.drain();
  }

  drain(): Promise<void> {
    if (this.#queued) return this.#chain;
    this.#queued = true;
    this.#chain = this.#chain
      .then(() => {
        this.#queued = false;
        return this.#readToEnd();
      })
      .catch((error: unknown) => this.#logger.warn({ path: this.#path, err: error }, 'cannot read the vmm event monitor'));
    return this.#chain;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#watcher?.close();
    void this.#chain.then(() => {
      if (this.#fd !== undefined) closeSync(this.#fd);
      this.#fd = undefined;
    });
  }

  async #readToEnd(): Promise<void> {
    if (this.#closed || !this.#open()) return;
    for (;;) {
      const chunk = Buffer.allocUnsafe(READ_CHUNK);
      const bytesRead = readSync(this.#fd!, chunk, 0, READ_CHUNK, this.#position);
      if (bytesRead === 0) return;
      this.#position += bytesRead;
      const { events, malformed } = this.#stream.push(chunk.subarray(0, bytesRead));
      for (const text of malformed) this.#logger.warn({ path: this.#path, text: text.slice(0, 200) }, 'skipped a vmm event that is not one');
      if (events.length > 0) await this.#onEvents(events);
      if (this.#closed) return;
    }
  }

  /** Opens the file once it exists (the VMM creates it as it starts); false until then. */
  #open(): boolean {
    if (this.#fd !== undefined) return true;
    try {
      this.#fd = openSync(this.#path, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw error;
    }
    this.monitored = true;
    try {
      this.#watcher = watch(this.#path, { persistent: false }, () => void this.drain());
      this.#watcher.on('error', () => this.#watcher?.close());
    } catch (error) {
      this.#logger.warn({ path: this.#path, err: error }, `cannot watch the vmm event monitor; polling it every ${POLL_MS} ms`);
    }
    return true;
  }
}
