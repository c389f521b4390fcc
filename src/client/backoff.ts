/** How a reconnecting watcher spaces its attempts (as gRPC's connection backoff, with shorter bounds). */
export interface BackoffOptions {
  /** Delay before the first retry. Default 250 ms. */
  readonly initialDelayMs?: number;
  /** No delay exceeds this. Default 5 s. */
  readonly maxDelayMs?: number;
  /** Each consecutive failure multiplies the delay by this. Default 1.6. */
  readonly multiplier?: number;
  /** Each delay is randomised by up to ± this fraction, so clients do not retry in lockstep. Default 0.2. */
  readonly jitter?: number;
  /** Consecutive failed attempts before giving up with the last error. Default unlimited. */
  readonly maxAttempts?: number;
}

/** Bounded, jittered exponential backoff. reset() after a success starts over from initialDelayMs. */
export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #multiplier: number;
  readonly #jitter: number;
  readonly #maxAttempts: number;
  readonly #random: () => number;
  #attempts = 0;

  constructor(options: BackoffOptions = {}, random: () => number = Math.random) {
    this.#initial = options.initialDelayMs ?? 250;
    this.#max = options.maxDelayMs ?? 5_000;
    this.#multiplier = options.multiplier ?? 1.6;
    this.#jitter = options.jitter ?? 0.2;
    this.#maxAttempts = options.maxAttempts ?? Infinity;
    this.#random = random;
    if (!(this.#initial >= 0) || !(this.#max >= this.#initial) || !(this.#multiplier >= 1) || !(this.#jitter >= 0 && this.#jitter <= 1)) {
      throw new RangeError('backoff: need 0 <= initialDelayMs <= maxDelayMs, multiplier >= 1 and 0 <= jitter <= 1');
    }
  }

  /** Consecutive failures since the last reset. */
  get attempts(): number {
    return this.#attempts;
  }

  /** The delay before the next attempt, or undefined once maxAttempts failures happened in a row. */
  next(): number | undefined {
    if (this.#attempts >= this.#maxAttempts) return undefined;
    const base = Math.min(this.#max, this.#initial * this.#multiplier ** this.#attempts);
    this.#attempts++;
    const jittered = base * (1 + this.#jitter * (2 * this.#random() - 1));
    return Math.round(Math.min(this.#max, Math.max(0, jittered)));
  }

  reset(): void {
    this.#attempts = 0;
  }
}

/** Resolves after `ms`, or early (with false) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
