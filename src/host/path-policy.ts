import { lstat, realpath, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { posix } from 'node:path';
import { VmprocError } from '../errors.js';
import { isSameOrUnder } from '../validation/paths.js';

/**
 * Where the host paths a request names may lead. vmprocd runs as root, so every path from a
 * request is resolved (symlinks followed, `..` gone) and must lie under a root the operator
 * configured; the daemon's own files are never a target (a confused deputy: containerd
 * CVE-2022-23648, runc CVE-2021-30465, libvirt CVE-2015-5313).
 */
export interface PathRoots {
  /** Kernels, root file systems, disks, initramfs, snapshot sources and destinations (--image-root). */
  readonly images: readonly string[];
  /** Where API sockets may be (--socket-root; the run dir by default). */
  readonly sockets: readonly string[];
  /** The configured sandbox dir (--sandbox-dir): always allowed. */
  readonly sandboxDir: string;
  /** Other places a sandbox dir may be (--sandbox-root). */
  readonly sandboxes: readonly string[];
  /** Block devices as disks only when the operator says so (--allow-block-devices). */
  readonly allowBlockDevices: boolean;
  /** The daemon's own files (listening sockets) and directories (state dir, logs, exit records). */
  readonly reservedFiles: readonly string[];
  readonly reservedDirs: readonly string[];
}

/** A host path as checked: resolved, and the root it lies under. */
export interface ConfinedPath {
  readonly path: string;
  readonly root: string;
}

export type ImageKind = 'file' | 'directory';

/** One mapping for every refusal: the field, what it resolved to, and what would be allowed. */
function denied(field: string, given: string, resolved: string, why: string): VmprocError {
  const subject = given === resolved ? `${field} ${given}` : `${field} ${given} resolves to ${resolved}, which`;
  return new VmprocError('permission-denied', `${subject} ${why}`);
}

export class PathPolicy {
  readonly roots: PathRoots;

  private constructor(roots: PathRoots) {
    this.roots = roots;
  }

  /**
   * Resolves the configured roots once (they must exist) and checks that nobody but root can
   * write to an image or socket root: whoever can write inside one could swap a directory
   * between the daemon's check and the VMM's use. Throws `invalid-argument` naming the flag.
   */
  static async create(roots: PathRoots): Promise<PathPolicy> {
    const resolveRoot = async (flag: string, dir: string, writableCheck: boolean): Promise<string> => {
      let resolved: string;
      let stats: Stats;
      try {
        resolved = await realpath(dir);
        stats = await stat(resolved);
      } catch (cause) {
        throw new VmprocError('invalid-argument', `${flag} ${dir} does not exist or cannot be read (${(cause as NodeJS.ErrnoException).code}); create it first`, { cause });
      }
      if (!stats.isDirectory()) throw new VmprocError('invalid-argument', `${flag} ${dir} is not a directory`);
      if (writableCheck && (stats.uid !== 0 || (stats.mode & 0o022) !== 0)) {
        throw new VmprocError(
          'invalid-argument',
          `${flag} ${dir} can be written by others than root (owner uid ${stats.uid}, mode ${(stats.mode & 0o7777).toString(8)}): ` +
            'anyone who can write there could swap a file between the daemon\'s check and the VMM\'s use; make it root\'s, mode 0755 or stricter',
        );
      }
      return resolved;
    };
    const many = (flag: string, dirs: readonly string[], writableCheck: boolean) => Promise.all(dirs.map((dir) => resolveRoot(flag, dir, writableCheck)));
    return new PathPolicy({
      ...roots,
      images: await many('--image-root', roots.images, process.getuid?.() === 0),
      sockets: await many('--socket-root', roots.sockets, false),
      sandboxes: await many('--sandbox-root', roots.sandboxes, false),
      sandboxDir: await resolveLeniently(roots.sandboxDir),
      reservedFiles: await Promise.all(roots.reservedFiles.map(resolveLeniently)),
      reservedDirs: await Promise.all(roots.reservedDirs.map(resolveLeniently)),
    });
  }

  /**
   * An image (kernel, rootfs, disk, initramfs) or a snapshot directory a request names. Throws
   * `failed-precondition` when it does not exist or is of the wrong kind, `permission-denied` when
   * it leads outside the image roots, into the daemon's own files, or to a block device the
   * operator did not allow.
   */
  async image(field: string, given: string, kind: ImageKind): Promise<ConfinedPath> {
    let resolved: string;
    try {
      resolved = await realpath(given);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      throw new VmprocError('failed-precondition', `${field} ${given} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}`, { cause });
    }
    const root = this.#confine(field, given, resolved, this.roots.images, 'the image roots', '--image-root');
    const stats = await stat(resolved);
    if (kind === 'directory') {
      if (!stats.isDirectory()) throw new VmprocError('failed-precondition', `${field} ${given} is not a directory`);
    } else if (stats.isBlockDevice()) {
      if (!this.roots.allowBlockDevices) {
        throw denied(field, given, resolved, 'is a block device; the daemon hands block devices to a VMM only with --allow-block-devices');
      }
    } else if (!stats.isFile()) {
      throw new VmprocError('failed-precondition', `${field} ${given} is not a regular file or block device`);
    }
    return { path: resolved, root };
  }

  /**
   * A directory under an image root to make something in (a snapshot's parent): like image(), but
   * the image root itself is allowed.
   */
  async directoryForNew(field: string, given: string): Promise<string> {
    let resolved: string;
    try {
      resolved = await realpath(given);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      throw new VmprocError('failed-precondition', `${field} ${given} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}`, { cause });
    }
    const root = longestRoot(resolved, this.roots.images);
    if (root === undefined) {
      throw denied(field, given, resolved, `is outside the image roots (${this.roots.images.join(', ') || 'none configured'}); put it under one, or configure one with --image-root`);
    }
    this.#refuseReserved(field, given, resolved);
    if (!(await stat(resolved)).isDirectory()) throw new VmprocError('failed-precondition', `${field} ${given} is not a directory`);
    return resolved;
  }

  /**
   * An API socket path (it need not exist yet): its directory is resolved and must lie under a
   * socket root; neither the socket nor its `<socket>.lock` may be one of the daemon's files.
   */
  async socket(field: string, given: string): Promise<ConfinedPath> {
    const dir = posix.dirname(given);
    const name = posix.basename(given);
    let resolvedDir: string;
    try {
      resolvedDir = await realpath(dir);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      throw new VmprocError('failed-precondition', `${field} directory ${dir} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}`, { cause });
    }
    if (!(await stat(resolvedDir)).isDirectory()) throw new VmprocError('failed-precondition', `${field} directory ${dir} is not a directory`);
    const resolved = posix.join(resolvedDir, name);
    const root = this.#confine(field, given, resolved, this.roots.sockets, 'the socket roots', '--socket-root');
    for (const path of [resolved, `${resolved}.lock`]) {
      if (this.roots.reservedFiles.includes(path)) throw denied(field, given, resolved, `is (or would put ${path} over) one of the daemon's own files`);
    }
    // Whatever is at the path must be a socket (a stale one, or none): never a file to unlink.
    const existing = await lstat(resolved).catch(() => undefined);
    if (existing && !existing.isSocket()) {
      throw new VmprocError('failed-precondition', `${field} ${given} exists and is not a socket; remove it or choose another path`);
    }
    return { path: resolved, root };
  }

  /** A sandbox dir: the configured one, or one under a sandbox root. */
  async sandboxDir(field: string, given: string): Promise<string> {
    const resolved = await resolveLeniently(given);
    if (resolved === this.roots.sandboxDir) return resolved;
    if (this.roots.sandboxes.some((root) => isSameOrUnder(resolved, root) && resolved !== root)) {
      this.#refuseReserved(field, given, resolved);
      return resolved;
    }
    const allowed = [this.roots.sandboxDir, ...this.roots.sandboxes.map((root) => `${root}/...`)].join(', ');
    throw denied(field, given, resolved, `is neither the configured sandbox dir nor under a sandbox root (allowed: ${allowed}; see --sandbox-dir, --sandbox-root)`);
  }

  /** The image root `path` (already resolved) lies under. */
  imageRootOf(path: string): string | undefined {
    return longestRoot(path, this.roots.images);
  }

  #confine(field: string, given: string, resolved: string, roots: readonly string[], what: string, flag: string): string {
    const root = longestRoot(resolved, roots);
    if (root === undefined || root === resolved) {
      throw denied(field, given, resolved, `is outside ${what} (${roots.length > 0 ? roots.join(', ') : 'none configured'}); put it under one, or configure one with ${flag}`);
    }
    this.#refuseReserved(field, given, resolved);
    return root;
  }

  #refuseReserved(field: string, given: string, resolved: string): void {
    if (this.roots.reservedFiles.includes(resolved) || this.roots.reservedDirs.some((dir) => isSameOrUnder(resolved, dir) || isSameOrUnder(dir, resolved))) {
      throw denied(field, given, resolved, "is the daemon's own (its state, logs, exit records or listening sockets) and never a request's target");
    }
  }
}

function longestRoot(path: string, roots: readonly string[]): string | undefined {
  return roots.filter((root) => isSameOrUnder(path, root)).sort((a, b) => b.length - a.length)[0];
}

/** realpath of the longest existing prefix, with the rest appended: works for paths not yet created. */
export async function resolveLeniently(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (error) {
    const parent = posix.dirname(path);
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === path) return path;
    return posix.join(await resolveLeniently(parent), posix.basename(path));
  }
}
