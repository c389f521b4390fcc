import { describe, expect, it } from '@jest/globals';
import { MAX_TIMER_MS, systemClock } from '../../../src/host/system-clock.js';

describe('systemClock.schedule', () => {
  it('fires after the delay', async () => {
    const fired = await new Promise<number>((resolve) => {
      const at = Date.now();
      systemClock.schedule(20, () => resolve(Date.now() - at));
    });
    expect(fired).toBeGreaterThanOrEqual(19);
  });

  it('does not fire early for a delay beyond setTimeout\'s 2^31-1 ms (which fires at once)', async () => {
    let fired = 0;
    const cancels = [MAX_TIMER_MS + 1, 30 * 24 * 3600 * 1000, 2 ** 40].map((ms) => systemClock.schedule(ms, () => fired++));
    await new Promise((resolve) => setTimeout(resolve, 50));
    cancels.forEach((cancel) => cancel());
    expect(fired).toBe(0);
  });

  it('cancel stops it', async () => {
    let fired = false;
    const cancel = systemClock.schedule(5, () => (fired = true));
    cancel();
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(fired).toBe(false);
  });

  it('a zero or negative delay fires on the next turn', async () => {
    await new Promise<void>((resolve) => systemClock.schedule(-5, resolve));
  });
});
