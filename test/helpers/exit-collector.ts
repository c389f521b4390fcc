import type { ProcessExit } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { VmProcessClient } from '../../src/client/vm-process-client.js';
import { WAIT_MS } from './wait.js';

/**
 * Consumes an exit iterable in the background, recording every exit and how iteration ended, so
 * a test can wait for "the exit of X" or "N exits" without sleeping. For reading a stream step by
 * step (a watcher that deliberately falls behind), see ExitStream in test/grpc/support.ts.
 */
export class ExitCollector {
  readonly exits: ProcessExit[] = [];
  /** What ended iteration, unless close() did. */
  error: unknown;
  ended = false;
  readonly done: Promise<void>;
  readonly #abort = new AbortController();
  readonly #waiters = new Set<() => void>();

  /**
   * `source` is an iterable, or a function that makes one for an AbortSignal (close() aborts it).
   * `onExit` returning true stops the iteration after that exit (leaving the loop cancels the call).
   */
  constructor(source: AsyncIterable<ProcessExit> | ((signal: AbortSignal) => AsyncIterable<ProcessExit>), onExit?: (exit: ProcessExit) => boolean | void) {
    const exits = typeof source === 'function' ? source(this.#abort.signal) : source;
    this.done = (async () => {
      try {
        for await (const exit of exits) {
          this.exits.push(exit);
          this.#wake();
          if (onExit?.(exit) === true) break;
        }
      } catch (error) {
        if (!this.#abort.signal.aborted) this.error = error;
      } finally {
        this.ended = true;
        this.#wake();
      }
    })();
  }

  /** Every exit of one WatchExits call of `client`. */
  static watch(client: VmProcessClient, request: Parameters<VmProcessClient['watchExits']>[0] = {}): ExitCollector {
    return new ExitCollector((signal) => client.watchExits(request, { signal }));
  }

  get lastSequence(): bigint {
    return this.exits.at(-1)?.sequence ?? 0n;
  }

  exitsOf(sandboxId: string): ProcessExit[] {
    return this.exits.filter((e) => e.sandboxId === sandboxId);
  }

  /** Resolves once `done(exits)` holds; rejects if iteration ends first, or after `timeoutMs`. */
  async until(done: (exits: ProcessExit[]) => boolean, timeoutMs = WAIT_MS, what = 'the expected exits'): Promise<ProcessExit[]> {
    await this.#until(() => done(this.exits) || this.ended, timeoutMs, what);
    if (!done(this.exits)) {
      throw new Error(`the exit stream ended (${this.error === undefined ? 'normally' : String(this.error)}) before ${what}; got ${describeExits(this.exits)}`);
    }
    return this.exits;
  }

  /** The first exit matching `match`, waiting for it if need be. */
  async waitFor(match: (e: ProcessExit) => boolean, timeoutMs = WAIT_MS, what = 'a matching exit'): Promise<ProcessExit> {
    await this.until((exits) => exits.some(match), timeoutMs, what);
    return this.exits.find(match)!;
  }

  /** The exit of `sandboxId` with a sequence after `afterSequence`. */
  exitOf(sandboxId: string, afterSequence = 0n, timeoutMs = WAIT_MS): Promise<ProcessExit> {
    return this.waitFor((e) => e.sandboxId === sandboxId && e.sequence > afterSequence, timeoutMs, `exit of ${sandboxId}`);
  }

  /** The first `count` exits. */
  async waitForCount(count: number, timeoutMs = WAIT_MS): Promise<ProcessExit[]> {
    await this.until((exits) => exits.length >= count, timeoutMs, `${count} exits`);
    return this.exits.slice(0, count);
  }

  /** Resolves once iteration has ended (with or without an error). */
  async waitForEnd(timeoutMs = WAIT_MS): Promise<void> {
    await this.#until(() => this.ended, timeoutMs, 'the end of iteration');
  }

  /** Ends the iteration (cancelling the call) and returns whatever broke it before, if anything. */
  async close(): Promise<unknown> {
    this.#abort.abort();
    await this.done;
    return this.error;
  }

  #until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (!check()) return;
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`no ${what} within ${timeoutMs}ms; got ${describeExits(this.exits)}${this.error === undefined ? '' : ` (stream error: ${String(this.error)})`}`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

function describeExits(exits: readonly ProcessExit[]): string {
  return exits.length === 0 ? 'none' : exits.map((e) => `#${e.sequence} ${e.sandboxId}`).join(', ');
}

/** Sequences as numbers, for readable diffs. */
export function sequencesOf(exits: readonly ProcessExit[]): number[] {
  return exits.map((e) => Number(e.sequence));
}
