import { readFile, writeFile } from 'node:fs/promises';

/**
 * The "## Soak" section of BENCHMARKS.md: written by `npm run soak -- --record`, and carried over
 * as it is when `npm run bench` rewrites the rest of the file.
 */
const HEADING = '## Soak';

/** The section as the file has it now (heading included), or '' when it has none. */
export async function soakSection(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const start = text.indexOf(`\n${HEADING}\n`);
  if (start < 0) return '';
  const next = text.indexOf('\n## ', start + 1);
  return text.slice(start + 1, next < 0 ? undefined : next + 1).trimEnd();
}

/** Puts `section` in place of the file's Soak section, or at its end. */
export async function writeSoakSection(file: string, section: string): Promise<void> {
  const text = await readFile(file, 'utf8');
  const old = await soakSection(file);
  const next = old ? text.replace(old, section.trimEnd()) : `${text.trimEnd()}\n\n${section.trimEnd()}\n`;
  await writeFile(file, next.endsWith('\n') ? next : `${next}\n`);
}
