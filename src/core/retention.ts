import type { Logger } from '../logger.js';
import type { RunLayout } from './ports.js';
import type { ProcessTable } from './process-table.js';

/**
 * Bounded memory of exited processes: the oldest exits are forgotten first once more than
 * `limit` are kept, and a forgotten sandbox's logs go with it. A start of the same ID waits for
 * that removal (untilLogsRemoved), so it never writes into a file about to be removed.
 */
export class ExitedRetention {
  readonly #table: ProcessTable;
  readonly #layout: RunLayout;
  readonly #limit: number;
  readonly #logger: Logger;
  /** Exited sandbox IDs, oldest first. */
  readonly #order = new Set<string>();
  /** Log removals of forgotten sandboxes still in progress, by sandbox ID. */
  readonly #logRemovals = new Map<string, Promise<void>>();

  constructor(table: ProcessTable, layout: RunLayout, limit: number, logger: Logger) {
    this.#table = table;
    this.#layout = layout;
    this.#limit = limit;
    this.#logger = logger;
  }

  /** `sandboxId` has exited (now, or before this daemon started, oldest first). */
  retain(sandboxId: string): void {
    this.#order.add(sandboxId);
    while (this.#order.size > this.#limit) {
      const oldest = this.#order.values().next().value!;
      this.#order.delete(oldest);
      const record = this.#table.get(oldest);
      if (record?.phase !== 'exited') continue;
      this.#table.forget(record);
      const removal = this.#layout
        .removeLogs(record.files.logPath)
        .catch((error: unknown) => this.#logger.warn({ sandboxId: oldest, err: error }, 'cannot remove the logs of a forgotten sandbox'))
        .finally(() => {
          if (this.#logRemovals.get(oldest) === removal) this.#logRemovals.delete(oldest);
        });
      this.#logRemovals.set(oldest, removal);
    }
  }

  /** `sandboxId` is being started again: it is no longer an exited record to forget. */
  release(sandboxId: string): void {
    this.#order.delete(sandboxId);
  }

  /** Resolves once the logs of a forgotten `sandboxId` are gone (at once if none are going). */
  async untilLogsRemoved(sandboxId: string): Promise<void> {
    await this.#logRemovals.get(sandboxId);
  }
}
