import type { Clock } from './ports.js';

export const TIMED_OUT: unique symbol = Symbol('timed out');

/** Waits for `promise` at most `ms` on `clock`; the timer never outlives the wait. */
export async function withinTimeout<T>(clock: Clock, promise: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let cancel: (() => void) | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    cancel = clock.schedule(ms, () => resolve(TIMED_OUT));
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    cancel?.();
  }
}

/** Rejects with the signal's reason as soon as it aborts; otherwise settles as `promise`. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
