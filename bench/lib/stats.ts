/** Percentiles by nearest rank over a sample, in the sample's unit. */
export interface Summary {
  readonly n: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly min: number;
  readonly max: number;
}

export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) throw new Error('no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
  return { n: sorted.length, p50: rank(50), p90: rank(90), p99: rank(99), min: sorted[0]!, max: sorted.at(-1)! };
}

/** Milliseconds since an arbitrary origin, on the system-wide monotonic clock (comparable across processes). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export const fmt = (ms: number, digits = 2): string => ms.toFixed(digits);
export const ratio = (value: number, baseline: number): string => `${(value / baseline).toFixed(2)}x`;
