import type { BigIntStats } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A listing of parts of the host's file system (type, inode, size, mode, owner, mtime, ctime of
 * every entry), taken before and after a hostile request: the two must be equal, or the request
 * made the daemon create, remove or change something outside the places it owns.
 */
export interface AuditTree {
  readonly path: string;
  /** 1: the entries directly in `path`; Infinity: the whole tree. */
  readonly depth: number;
  /** Absolute paths left out, with everything under them (the daemon's own run dir). */
  readonly exclude?: readonly string[];
  /**
   * For a directory other work on this shared machine fills and empties at any time (/tmp): the
   * names directly in `path` to watch (those the requests aim at), and not `path`'s own times.
   */
  readonly only?: RegExp;
}

export type HostListing = ReadonlyMap<string, string>;

function describe(stats: BigIntStats): string {
  const kind = stats.isDirectory() ? 'dir' : stats.isSymbolicLink() ? 'link' : stats.isSocket() ? 'socket' : stats.isFile() ? 'file' : 'other';
  return `${kind} ino=${stats.ino} size=${stats.size} mode=${(stats.mode & 0o7777n).toString(8)} uid=${stats.uid} mtime=${stats.mtimeNs} ctime=${stats.ctimeNs}`;
}

async function walk(tree: AuditTree, dir: string, depth: number, into: Map<string, string>): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return; // gone, or not a directory we may read: its own entry says what it is
  }
  for (const name of names) {
    if (dir === tree.path && tree.only && !tree.only.test(name)) continue;
    const path = join(dir, name);
    if (tree.exclude?.some((excluded) => path === excluded || path.startsWith(`${excluded}/`))) continue;
    let stats: BigIntStats;
    try {
      stats = await lstat(path, { bigint: true });
    } catch {
      continue; // removed while we looked
    }
    into.set(path, describe(stats));
    if (stats.isDirectory() && depth > 1) await walk(tree, path, depth - 1, into);
  }
}

/** One listing of every tree. */
export async function listHost(trees: readonly AuditTree[]): Promise<HostListing> {
  const listing = new Map<string, string>();
  for (const tree of trees) {
    const stats = await lstat(tree.path, { bigint: true }).catch(() => undefined);
    if (stats === undefined) {
      listing.set(tree.path, 'absent');
      continue;
    }
    // A directory shared with other work changes its times with every file they make.
    if (!tree.only) listing.set(tree.path, describe(stats));
    if (stats.isDirectory()) await walk(tree, tree.path, tree.depth, listing);
  }
  return listing;
}

/** What differs between two listings, one line per path: `created`, `removed` or `changed`. */
export function diffListings(before: HostListing, after: HostListing): string[] {
  const differences: string[] = [];
  for (const [path, was] of before) {
    const now = after.get(path);
    if (now === undefined) differences.push(`removed ${path} (${was})`);
    else if (now !== was) differences.push(`changed ${path}: ${was} -> ${now}`);
  }
  for (const [path, now] of after) if (!before.has(path)) differences.push(`created ${path} (${now})`);
  return differences;
}
