import { updateSection } from './report.js';

/**
 * The soak's section of BENCHMARKS.md, written by `npm run soak -- --record`; every other section
 * (npm run bench, bench:vm, bench:events) is left as it is.
 */
export function writeSoakSection(file: string, section: string): Promise<void> {
  return updateSection(file, 'soak', section);
}
