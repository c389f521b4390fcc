import { EventKind, type ProcessEvent } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';

/**
 * Every event from sequence 1 on, recorded in the background (progress markers apart), so a suite
 * can check at its end that it saw sequences 1..n exactly once and an EXITED event for every exit.
 * It reconnects as a real watcher would (a suite with a tiny --watch-buffer cuts it off in bursts;
 * RESOURCE_EXHAUSTED is resumable), so what it checks is the stream's guarantee across reconnects.
 */
export class EventRecorder {
  readonly events: ProcessEvent[] = [];
  readonly markers: bigint[] = [];
  error: unknown;
  readonly done: Promise<void>;
  readonly #abort = new AbortController();

  readonly #client: VmProcessClient;

  /**
   * On a connection of its own (grpc-js shares one per target otherwise): while the daemon is away
   * this watcher's reconnects keep that connection in backoff, which would fail other clients'
   * calls fast against the next daemon.
   */
  constructor(address: string) {
    const client = new VmProcessClient(address, { channelOptions: { 'grpc.use_local_subchannel_pool': 1 } });
    this.#client = client;
    this.done = (async () => {
      try {
        const events = client.watchEventsReconnecting({ startAfter: 0n, progress: true, signal: this.#abort.signal, backoff: { initialDelayMs: 10, maxDelayMs: 200 } });
        for await (const event of events) {
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
    this.#client.close();
    return this.error;
  }
}
