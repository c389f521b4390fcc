import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The package's root directory, found from this file whether it runs compiled (dist/src/) or
 * from source (src/, as under jest), so bundled native helpers are found either way.
 */
export const packageRoot: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('vmprocd: cannot find the package root above ' + import.meta.url);
    dir = parent;
  }
  return dir;
})();

/** Native helpers built by `npm run build` (native/Makefile). */
export const nativeBin = (name: 'vmprocd-reaper' | 'standin-vmm' | 'tiny-guest.elf'): string => join(packageRoot, 'build', 'native', name);
