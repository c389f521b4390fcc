import { mkdir, rm } from 'node:fs/promises';
import { posix } from 'node:path';
import type { SnapshotDirs } from '../core/ports.js';
import { VmprocError } from '../errors.js';
import { isSameOrUnder, validatePath } from '../validation/paths.js';
import type { PathPolicy } from './path-policy.js';

/**
 * Snapshot directories under the image roots. The daemon makes each one itself (root's, 0700), so
 * a request can never point Cloud Hypervisor at an existing directory to write into; its parent is
 * resolved and confined like every other path. What remains: the VMM writes by path, so a party
 * that could write inside an image root could swap the directory in between; the daemon refuses
 * image roots anyone but root can write to (path-policy.ts).
 */
export class ImageRootSnapshotDirs implements SnapshotDirs {
  readonly #policy: PathPolicy;

  constructor(policy: PathPolicy) {
    this.#policy = policy;
  }

  async create(field: string, url: string): Promise<{ url: string; path: string }> {
    if (!url.startsWith('file:///')) {
      throw new VmprocError('invalid-argument', `${field} ${JSON.stringify(url)} must be a file:// URL of a directory to create, e.g. file:///srv/vmprocd/snapshots/s1`);
    }
    const path = validatePath(field, url.slice('file://'.length));
    const parent = await this.#policy.directoryForNew(`${field} (its parent directory)`, posix.dirname(path));
    const resolved = posix.join(parent, posix.basename(path));
    const { sandboxDir, sandboxes } = this.#policy.roots;
    if ([sandboxDir, ...sandboxes].some((dir) => isSameOrUnder(resolved, dir) || isSameOrUnder(dir, resolved))) {
      throw new VmprocError('permission-denied', `${field} ${url} is in a sandbox dir, which each VMM sees as its own tmpfs: the snapshot would vanish with the VMM`);
    }
    try {
      await mkdir(resolved, { mode: 0o700 });
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      throw new VmprocError(
        'failed-precondition',
        code === 'EEXIST' ? `${field} ${url} already exists: a snapshot goes into a directory the daemon makes; name a new one` : `${field} ${url} cannot be created (${code})`,
        { cause },
      );
    }
    return { url: `file://${resolved}`, path: resolved };
  }

  async remove(path: string): Promise<void> {
    await rm(path, { recursive: true, force: true });
  }
}
