/**
 * A level-triggered wake-up for one waiter: a notify() before the sleep is not lost, and any
 * number of notifies while nobody sleeps count as one. Cheaper and simpler than an emitter for
 * "something may have changed, look again" (a log was appended to, a socket appeared).
 */
export class Wakeup {
  #pending = false;
  #wake: ((how: 'event') => void) | undefined;

  notify(): void {
    if (this.#wake === undefined) this.#pending = true;
    else this.#wake('event');
  }

  /**
   * Resolves at the next notify ('event', at once if one came since the last sleep), after `ms`
   * ('timer'), or when `signal` aborts ('stopped').
   */
  sleep(ms: number, signal?: AbortSignal): Promise<'event' | 'timer' | 'stopped'> {
    if (signal?.aborted) return Promise.resolve('stopped');
    if (this.#pending) {
      this.#pending = false;
      return Promise.resolve('event');
    }
    return new Promise((resolve) => {
      const finish = (how: 'event' | 'timer' | 'stopped') => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onStop);
        this.#wake = undefined;
        resolve(how);
      };
      const onStop = () => finish('stopped');
      const timer = setTimeout(() => finish('timer'), ms);
      signal?.addEventListener('abort', onStop, { once: true });
      this.#wake = finish;
    });
  }
}
