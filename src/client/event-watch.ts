import {
  EventKind,
  type GetLatestSequenceRequestSchema,
  type GetLatestSequenceResponse,
  type ProcessEvent,
  type WatchEventsRequestSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { Init, RpcOptions, StreamOptions } from './call-options.js';
import { ReconnectingWatch, type ReconnectingOptions } from './reconnecting-watch.js';
import { EventHistoryGapError } from './rpc-error.js';

export interface ReconnectingEventWatchOptions extends ReconnectingOptions {
  /** Only events of these sandboxes (all when empty). */
  readonly sandboxIds?: readonly string[];
  /** Only events of these kinds (all when empty). */
  readonly kinds?: readonly EventKind[];
  /**
   * Deliver events with a sequence greater than this one (a cursor saved earlier, or a
   * ListProcesses `eventSequence`). Default: the daemon's latest event sequence when iteration
   * starts (GetLatestSequence), so that even the first reconnect resumes without a gap.
   */
  readonly startAfter?: bigint;
  /** Yield PROGRESS markers too (the cursor follows them either way). */
  readonly progress?: boolean;
}

/** What the watcher needs from a client (VmProcessClient has it). */
export interface EventWatchSource {
  watchEvents(request: Init<typeof WatchEventsRequestSchema>, options: StreamOptions): AsyncIterable<ProcessEvent>;
  getLatestSequence(request?: Init<typeof GetLatestSequenceRequestSchema>, options?: RpcOptions): Promise<GetLatestSequenceResponse>;
}

/**
 * WatchEvents that survives connection loss and daemon restarts (ReconnectingWatch): every event
 * exactly once. Its cursor follows progress markers too, so a filtered watcher resumes from where
 * the stream had got to, not from its last wanted event. When the daemon no longer retains an
 * event this watcher would have received, iteration throws EventHistoryGapError: resync with
 * ListProcesses and watch from its eventSequence.
 */
export class ReconnectingEventWatch extends ReconnectingWatch<ProcessEvent> {
  constructor(source: EventWatchSource, options: ReconnectingEventWatchOptions = {}) {
    const request = { sandboxIds: [...(options.sandboxIds ?? [])], kinds: [...(options.kinds ?? [])] };
    super(
      {
        name: 'WatchEvents',
        latest: async (callOptions) => (await source.getLatestSequence({}, callOptions)).latestEventSequence,
        open: (cursor, streamOptions) => source.watchEvents({ ...request, afterSequence: cursor }, streamOptions),
        sequenceOf: (event) => event.sequence,
        delivers: (event) => options.progress === true || event.kind !== EventKind.PROGRESS,
        gap: (cursor, error) => new EventHistoryGapError(cursor, error),
      },
      options,
      options.startAfter,
    );
  }
}
