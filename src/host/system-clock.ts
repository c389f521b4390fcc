import type { Clock } from '../core/ports.js';

/**
 * setTimeout's delay is a signed 32-bit count of milliseconds: a longer one fires at once (with a
 * warning). A grace period of 30 days must still mean 30 days, so long waits are chained.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The host's clock: `new Date()`, and timers that are right for any duration. */
export const systemClock: Clock = {
  now: () => new Date(),
  schedule(ms, callback) {
    let timer: NodeJS.Timeout | undefined;
    let cancelled = false;
    const dueAt = Date.now() + Math.max(0, ms);
    const arm = (remaining: number) => {
      timer = setTimeout(() => {
        if (cancelled) return;
        const left = dueAt - Date.now();
        if (left > 0) arm(left);
        else callback();
      }, Math.min(remaining, MAX_TIMER_MS));
    };
    arm(Math.max(0, ms));
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  },
};
