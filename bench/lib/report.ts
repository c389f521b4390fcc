import { readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';

/** One line of a results table: a figure beside its baseline from the same run. */
export interface Row {
  readonly benchmark: string;
  readonly measure: string;
  readonly value: string;
  readonly baseline: string;
  readonly ratio: string;
  readonly target: string;
  readonly met: boolean | undefined;
}

export function renderTable(rows: readonly Row[]): string {
  const header = ['benchmark', 'measure', 'vmprocd', 'baseline', 'ratio', 'target', 'met'];
  return [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${[r.benchmark, r.measure, r.value, r.baseline, r.ratio, r.target, r.met === undefined ? '' : r.met ? 'yes' : 'NO'].join(' | ')} |`),
  ].join('\n');
}

export function machineDescription(): string {
  return `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
}

export const loadAverage = (): string => loadavg().map((load) => load.toFixed(2)).join(' ');

const begin = (key: string) => `<!-- section: ${key} -->`;
const end = (key: string) => `<!-- end section: ${key} -->`;

/**
 * Replaces the section `key` of a Markdown file (between its begin and end markers) with `content`,
 * keeping every other section; a section not there yet goes at the end. So `npm run bench` and
 * `npm run bench:vm` (one section per VMM) each update only what they measured.
 */
export async function updateSection(path: string, key: string, content: string, title = '# Benchmarks'): Promise<void> {
  const text = await readFile(path, 'utf8').catch(() => `${title}\n`);
  const block = `${begin(key)}\n${content.trim()}\n${end(key)}`;
  const start = text.indexOf(begin(key));
  const stop = text.indexOf(end(key));
  const next = start >= 0 && stop > start
    ? text.slice(0, start) + block + text.slice(stop + end(key).length)
    : `${text.trimEnd()}\n\n${block}\n`;
  await writeFile(path, next);
}
