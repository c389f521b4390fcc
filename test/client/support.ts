/** Shared by the client suites: an exit collector over any exit iterable, and small process helpers. */
import { existsSync } from 'node:fs';
import type { ProcessExit } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { eventually } from '../helpers/process-scan.js';

/** Generous bound for anything event-driven on a noisy 2-core machine. */
export const WAIT_MS = 15_000;

/**
 * Consumes an exit iterable in the background, recording every exit and how iteration ended, and
 * lets a test wait for "N exits" without sleeping.
 */
export class ExitCollector {
  readonly exits: ProcessExit[] = [];
  error: unknown;
  ended = false;
  readonly done: Promise<void>;
  readonly #waiters = new Set<() => void>();

  constructor(exits: AsyncIterable<ProcessExit>, onExit?: (exit: ProcessExit) => boolean | void) {
    this.done = (async () => {
      try {
        for await (const exit of exits) {
          this.exits.push(exit);
          this.#wake();
          if (onExit?.(exit) === true) break;
        }
      } catch (error) {
        this.error = error;
      } finally {
        this.ended = true;
        this.#wake();
      }
    })();
  }

  /** Resolves once `count` exits were collected; rejects if iteration ended first, or after `timeoutMs`. */
  async waitForCount(count: number, timeoutMs = WAIT_MS): Promise<ProcessExit[]> {
    await this.#until(() => this.exits.length >= count || this.ended, timeoutMs, `${count} exits (have ${this.exits.length})`);
    if (this.exits.length < count) throw new Error(`iteration ended after ${this.exits.length} exits: ${String(this.error)}`);
    return this.exits.slice(0, count);
  }

  /** Resolves once iteration has ended (with or without an error). */
  async waitForEnd(timeoutMs = WAIT_MS): Promise<void> {
    await this.#until(() => this.ended, timeoutMs, 'the end of iteration');
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
        reject(new Error(`no ${what} within ${timeoutMs}ms`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

/** Kills a VMM behind the daemon's back (as a crash would) and resolves once its PID is gone. */
export async function killBehindDaemon(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  await eventually(() => !existsSync(`/proc/${pid}`), WAIT_MS);
}

export const sequencesOf = (exits: readonly ProcessExit[]): number[] => exits.map((e) => Number(e.sequence));
