import { EventKind, type ProcessEvent } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { VmProcessClient } from '../../src/client/vm-process-client.js';

/**
 * Every event of one WatchEvents{after_sequence: 0} call, recorded in the background (progress
 * markers apart), so a suite can check at its end that it saw sequences 1..n exactly once and an
 * EXITED event for every exit.
 */
export class EventRecorder {
  readonly events: ProcessEvent[] = [];
  readonly markers: bigint[] = [];
  error: unknown;
  readonly done: Promise<void>;
  readonly #abort = new AbortController();

  constructor(client: VmProcessClient) {
    this.done = (async () => {
      try {
        for await (const event of client.watchEvents({ afterSequence: 0n }, { signal: this.#abort.signal })) {
          if (event.kind === EventKind.PROGRESS) this.markers.push(event.sequence);
          else this.events.push(event);
        }
      } catch (error) {
        if (!this.#abort.signal.aborted) this.error = error;
      }
    })();
  }

  /** Ends the stream; resolves with what ended it before, if anything did. */
  async close(): Promise<unknown> {
    this.#abort.abort();
    await this.done;
    return this.error;
  }
}
