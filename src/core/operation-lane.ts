import { VmprocError } from '../errors.js';

interface Queued {
  readonly what: string;
  readonly work: () => Promise<unknown>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * One sandbox's operations (VM operations and signals), one at a time, in the order they came: two
 * of them never talk to the VMM at once (Cloud Hypervisor serves one request at a time anyway, and
 * a pause racing a snapshot would leave the VM in a state nobody asked for). A stop closes the lane:
 * it waits for the operation in progress and fails those still queued.
 */
export class OperationLane {
  readonly #queue: Queued[] = [];
  #running: Promise<void> | undefined;
  #closedWith: VmprocError | undefined;

  /** The operation running now, if any. */
  current: string | undefined;

  /** Runs `work` once every operation queued before it has finished. */
  run<T>(what: string, work: () => Promise<T>): Promise<T> {
    if (this.#closedWith) return Promise.reject(this.#closedWith);
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ what, work, resolve: resolve as (value: unknown) => void, reject });
      this.#drain();
    });
  }

  /**
   * Takes no more operations (they fail with `reason`), fails those queued with it, and resolves
   * once the one in progress has finished.
   */
  async close(reason: VmprocError): Promise<void> {
    this.#closedWith ??= reason;
    for (const queued of this.#queue.splice(0)) queued.reject(this.#closedWith);
    await this.#running;
  }

  #drain(): void {
    if (this.#running) return;
    const next = this.#queue.shift();
    if (!next) return;
    this.current = next.what;
    this.#running = next
      .work()
      .then(next.resolve, next.reject)
      .finally(() => {
        this.current = undefined;
        this.#running = undefined;
        this.#drain();
      });
  }
}
