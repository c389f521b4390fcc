import type { Duration } from '@bufbuild/protobuf/wkt';
import { UsageError } from './exit-codes.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const DURATION = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/;
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;

/** Milliseconds of a Go-style duration: `500ms`, `5s`, `2m`, `1h30m`, `1.5s`; `0` alone is allowed. */
export function parseDuration(flag: string, text: string): number {
  if (text === '0') return 0;
  if (!DURATION.test(text)) {
    throw new UsageError(`${flag} ${JSON.stringify(text)} is not a duration; write it with a unit, e.g. 500ms, 5s, 2m or 1h30m`);
  }
  let ms = 0;
  for (const [, amount, unit] of text.matchAll(PART)) ms += Number(amount) * UNIT_MS[unit!]!;
  return ms;
}

/** A google.protobuf.Duration (init form) of `ms` milliseconds. */
export function durationOf(ms: number): Pick<Duration, 'seconds' | 'nanos'> {
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/** `850ms`, `12s`, `5m`, `3h`, `2d`: the largest whole unit, as `kubectl` shows ages. */
export function formatAge(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Math.floor(ms / 1_000)}s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m`;
  if (ms < 86_400_000) return `${Math.floor(ms / 3_600_000)}h`;
  return `${Math.floor(ms / 86_400_000)}d`;
}
