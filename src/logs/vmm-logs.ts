import { VmprocError } from '../errors.js';
import { LogRotator, type LogRotatorOptions } from './log-rotation.js';
import { readLog, type ReadLogOptions } from './log-reader.js';

export const DEFAULT_LOG_MAX_BYTES = 16 * 1024 * 1024;
export const DEFAULT_LOG_KEEP = 1;
export const DEFAULT_LOG_CHECK_INTERVAL_MS = 15_000;

/**
 * The daemon's side of VMM logs: size-capping the logs of live VMMs (LogRotator) and reading them
 * for StreamLogs (readLog), with every open read known so that a stopping daemon can end them.
 * It knows paths and processes' ends, not gRPC: the RPC edge hands it a log path and the
 * process's `exited` promise, and relays the chunks.
 */
export class VmmLogs {
  readonly rotator: LogRotator;
  readonly #keep: number;
  readonly #reads = new Set<AbortController>();
  #closedWith: VmprocError | undefined;

  constructor(options: LogRotatorOptions) {
    this.rotator = new LogRotator(options);
    this.#keep = options.keep;
  }

  /** StreamLogs reads in progress. */
  get readCount(): number {
    return this.#reads.size;
  }

  /**
   * Reads one log (see readLog). Aborting `signal` ends the read quietly; `close()` ends it with
   * `unavailable`. Throws `unavailable` once closed.
   */
  read(options: Omit<ReadLogOptions, 'rotations' | 'maxPendingRotations'>): AsyncGenerator<Buffer, void, undefined> {
    if (this.#closedWith) throw this.#closedWith;
    const controller = new AbortController();
    const { signal } = options;
    const onAbort = () => controller.abort(signal?.reason);
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.#reads.add(controller);
    const reads = this.#reads;
    const rotator = this.rotator;
    // A reader behind by more rotations than are kept on disk loses the oldest: it never pins more.
    const maxPendingRotations = this.#keep;
    return (async function* tracked() {
      try {
        yield* readLog({ ...options, signal: controller.signal, maxPendingRotations, rotations: (path, listener) => rotator.watch(path, listener) });
      } finally {
        reads.delete(controller);
        signal?.removeEventListener('abort', onAbort);
      }
    })();
  }

  /** Stops rotating and ends every read with `unavailable` (the daemon is stopping). */
  close(): void {
    this.#closedWith ??= new VmprocError('unavailable', 'vmprocd is shutting down; reconnect to read the log again');
    this.rotator.close();
    for (const read of this.#reads) read.abort(this.#closedWith);
  }
}
