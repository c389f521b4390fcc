import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../../src/package-paths.js';

/**
 * The fenced code block right after `<!-- ci: NAME -->` in README.md, exactly as written: the
 * suites that run a README session run this text, so the README cannot drift from what works.
 */
export async function readmeBlock(name: string): Promise<string> {
  const readme = await readFile(join(packageRoot, 'README.md'), 'utf8');
  const marker = `<!-- ci: ${name} -->`;
  const at = readme.indexOf(marker);
  if (at < 0 || readme.indexOf(marker, at + 1) >= 0) throw new Error(`README.md must have exactly one ${marker}`);
  const block = /^\s*```[a-z]*\n([\s\S]*?)\n```/.exec(readme.slice(at + marker.length));
  if (!block) throw new Error(`README.md: no fenced code block right after ${marker}`);
  return `${block[1]}\n`;
}
