import type { Row } from './report.js';
import type { Summary } from './stats.js';

const ms = (value: number) => `${value.toFixed(2)} ms`;

/** What a figure must meet beside its baseline: a ratio, or at most so many ms more. */
export type Goal = { readonly ratio: number } | { readonly plusMs: number } | undefined;

/** p50 and p99 beside the baseline's, with the ratio, the difference, and whether the p50 meets the goal. */
export function latencyRows(benchmark: string, daemon: Summary, baseline: Summary, goal: Goal): Row[] {
  const diff = daemon.p50 - baseline.p50;
  const meets = goal === undefined ? undefined : 'ratio' in goal ? daemon.p50 / baseline.p50 <= goal.ratio : diff <= goal.plusMs;
  const target = goal === undefined ? '' : 'ratio' in goal ? `<= ${goal.ratio}x` : `<= raw + ${goal.plusMs} ms`;
  return [
    { benchmark, measure: `p50 (n=${daemon.n})`, value: ms(daemon.p50), baseline: ms(baseline.p50), ratio: `${(daemon.p50 / baseline.p50).toFixed(2)}x, ${diff >= 0 ? '+' : ''}${diff.toFixed(2)} ms`, target, met: meets },
    { benchmark, measure: 'p99', value: ms(daemon.p99), baseline: ms(baseline.p99), ratio: `${(daemon.p99 / baseline.p99).toFixed(2)}x, ${daemon.p99 - baseline.p99 >= 0 ? '+' : ''}${(daemon.p99 - baseline.p99).toFixed(2)} ms`, target: '', met: undefined },
  ];
}

/** A figure with no baseline (one sample, or what was seen). */
export function infoRow(benchmark: string, measure: string, value: string): Row {
  return { benchmark, measure, value, baseline: '', ratio: '', target: '', met: undefined };
}

/** Something that could not be measured, said loudly in the table rather than left out or faked. */
export function notMeasuredRow(benchmark: string, why: string): Row {
  return { benchmark, measure: '**NOT MEASURED**', value: why.replaceAll('|', '\\|').replaceAll('\n', ' '), baseline: '', ratio: '', target: '', met: undefined };
}
