import type {
  ListProcessesRequestSchema,
  ListProcessesResponse,
  ProcessExit,
  WatchExitsRequestSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { ExitHistoryGapError } from './rpc-error.js';
import type { Init, RpcOptions, StreamOptions } from './call-options.js';
import { ReconnectingWatch, type ReconnectingOptions } from './reconnecting-watch.js';

export type { ReconnectEvent } from './reconnecting-watch.js';

export interface ReconnectingWatchOptions extends ReconnectingOptions {
  /** Only exits of these sandboxes (all when empty). */
  readonly sandboxIds?: readonly string[];
  /**
   * Deliver exits with a sequence greater than this one (e.g. a cursor saved earlier, or a
   * ListProcesses `exitSequence`). Default: the daemon's latest sequence when iteration starts,
   * taken with ListProcesses, so that even the first reconnect resumes without a gap.
   */
  readonly startAfter?: bigint;
}

/** What the watcher needs from a client (VmProcessClient has it). */
export interface ExitWatchSource {
  watchExits(request: Init<typeof WatchExitsRequestSchema>, options: StreamOptions): AsyncIterable<ProcessExit>;
  /** One ListProcesses call (one page). */
  listProcessesPage(request: Init<typeof ListProcessesRequestSchema>, options?: RpcOptions): Promise<ListProcessesResponse>;
}

/**
 * WatchExits that survives connection loss and daemon restarts (ReconnectingWatch): every exit
 * exactly once. When the daemon no longer retains exits after the cursor, iteration throws
 * ExitHistoryGapError: resync with ListProcesses.
 */
export class ReconnectingExitWatch extends ReconnectingWatch<ProcessExit> {
  constructor(source: ExitWatchSource, options: ReconnectingWatchOptions = {}) {
    const sandboxIds = [...(options.sandboxIds ?? [])];
    super(
      {
        name: 'WatchExits',
        // The latest sequence: one page of one process carries it.
        latest: async (callOptions) => (await source.listProcessesPage({ pageSize: 1 }, callOptions)).exitSequence,
        open: (cursor, streamOptions) => source.watchExits({ sandboxIds, afterSequence: cursor }, streamOptions),
        sequenceOf: (exit) => exit.sequence,
        delivers: () => true,
        gap: (cursor, error) => new ExitHistoryGapError(cursor, error),
      },
      options,
      options.startAfter,
    );
  }
}
