import { safeCell, safeLines } from './terminal-text.js';

/**
 * Plain aligned columns, as `kubectl get` and `docker ps` print them: no borders, so `grep`,
 * `awk '{print $1}'` and `column` keep working. Cells are single-line; the last column is not padded.
 */
export function formatTable(header: readonly string[], unsafeRows: ReadonlyArray<readonly string[]>): string {
  const rows = unsafeRows.map((row) => row.map(safeCell));
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!))).join('   ').trimEnd();
  return [header, ...rows].map(line).join('\n') + '\n';
}

/** `Key:   value` lines with the values aligned; multi-line values are indented under the first line. */
export function formatFields(fields: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...fields.map(([key]) => key.length)) + 2;
  return fields
    .map(([key, value]) => `${`${key}:`.padEnd(width)}${safeLines(value).split('\n').join(`\n${' '.repeat(width)}`)}`)
    .join('\n') + '\n';
}
