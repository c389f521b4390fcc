import type { BigIntStats } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import { createConnection } from 'node:net';
import type { SocketFiles } from '../core/domain.js';
import { VmprocError } from '../errors.js';

/**
 * A VMM's API socket and the `<socket>.lock` Cloud Hypervisor v53+ takes an OFD lock on (and never
 * deletes). The daemon removes only what its own VMM made: the files it recorded by device and
 * inode, never whatever happens to be at the path by then.
 */

/**
 * `<dev>:<ino>:<ctime ns>` of what is at `path` now (not following a symlink), if it is of `kind`.
 * The change time is part of it because file systems hand a freed inode number to the next file
 * at once: a socket recreated at the same path must not pass for the one recorded.
 */
async function identityOf(path: string, kind: 'socket' | 'lock'): Promise<string | undefined> {
  let stats: BigIntStats;
  try {
    stats = await lstat(path, { bigint: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const matches = kind === 'socket' ? stats.isSocket() : stats.isFile() && stats.size === 0n;
  return matches ? identity(stats) : undefined;
}

function identity(stats: BigIntStats): string {
  return `${stats.dev}:${stats.ino}:${stats.ctimeNs}`;
}

/** True when something accepts connections on the socket. */
function isListening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/**
 * Makes `socketPath` ready for a new VMM: a socket a dead VMM left is removed (one that still
 * answers belongs to a live process and is refused), and a `<socket>.lock` beside it must be
 * Cloud Hypervisor's kind of lock file (empty and regular; it is left for the VMM to take). Returns
 * what was there before, so the exit never takes a lock file that predates the VMM for its own.
 */
export async function claimSocket(socketPath: string): Promise<SocketFiles> {
  const existing = await lstat(socketPath).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (existing && !existing.isSocket()) {
    throw new VmprocError('failed-precondition', `socket_path ${socketPath} exists and is not a socket; remove it or choose another path`);
  }
  if (existing) {
    if (await isListening(socketPath)) {
      throw new VmprocError('failed-precondition', `socket_path ${socketPath} belongs to a process that still listens on it; stop it or choose another path`);
    }
    await unlinkQuietly(socketPath);
  }
  const lockPath = `${socketPath}.lock`;
  const lock = await lstat(lockPath, { bigint: true }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (lock && !(lock.isFile() && lock.size === 0n)) {
    const what = lock.isFile() ? `a file of ${lock.size} bytes` : lock.isDirectory() ? 'a directory' : lock.isSymbolicLink() ? 'a symlink' : 'not a regular file';
    throw new VmprocError(
      'failed-precondition',
      `${lockPath} exists and is not Cloud Hypervisor's lock file (${what}); the VMM would take it: remove it or choose another socket_path`,
    );
  }
  return lock ? { lockBefore: identity(lock) } : {};
}

/** The socket and lock file the VMM has made, once it answers on its socket. */
export async function socketFilesOf(socketPath: string, claimed: SocketFiles): Promise<SocketFiles> {
  const [socket, lock] = await Promise.all([identityOf(socketPath, 'socket'), identityOf(`${socketPath}.lock`, 'lock')]);
  return { ...claimed, ...(socket ? { socket } : {}), ...(lock && lock !== claimed.lockBefore ? { lock } : {}) };
}

/**
 * After the VMM's exit: removes its socket and lock file, but only those it made. When their
 * identities were never recorded (it died before it answered), a socket nothing listens on is
 * removed, and a lock file only if it appeared during the run.
 */
export async function releaseSocket(socketPath: string, known: SocketFiles): Promise<void> {
  const lockPath = `${socketPath}.lock`;
  const [socket, lock] = await Promise.all([identityOf(socketPath, 'socket'), identityOf(lockPath, 'lock')]);
  const removals: Array<Promise<void>> = [];
  if (socket !== undefined && (known.socket !== undefined ? socket === known.socket : !(await isListening(socketPath)))) {
    removals.push(unlinkQuietly(socketPath));
  }
  if (lock !== undefined && (known.lock !== undefined ? lock === known.lock : known.lockBefore === undefined || lock !== known.lockBefore)) {
    removals.push(unlinkQuietly(lockPath));
  }
  await Promise.all(removals);
}

async function unlinkQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
