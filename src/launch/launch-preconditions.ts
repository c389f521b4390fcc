import { realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { StartSpec } from '../core/domain.js';
import { VmprocError } from '../errors.js';
import { checkSandboxDirCoversNothingNeeded, pathsTheLaunchNeeds, restoreSourceDir, type StartDefaults } from '../validation/start-request.js';

/**
 * Checks what must exist on the host for the launch to succeed. Throws `failed-precondition`:
 * the request is well-formed but the host is not ready for it.
 */
export async function checkStartPreconditions(spec: StartSpec, defaults: StartDefaults): Promise<void> {
  const checks: Array<Promise<void>> = [
    checkCanonicalSandboxDir(spec, defaults),
    expectFile('rootfs_path', spec.rootfsPath),
    expectExists('network namespace', spec.networkNamespace, posix.join(defaults.netnsDir, spec.networkNamespace),
      `create it with: ip netns add ${spec.networkNamespace}`),
    expectDirectory('socket_path directory', posix.dirname(spec.socketPath)),
  ];
  if (spec.kernelPath) checks.push(expectFile('kernel_path', spec.kernelPath));
  if (spec.restore) checks.push(expectDirectory('restore.source_url', restoreSourceDir(spec.restore.sourceUrl)));
  const results = await Promise.allSettled(checks);
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
}

/**
 * The same coverage rules on resolved paths: `/var/run` is a symlink to `/run`, so a sandbox at
 * /run/netns would hide /var/run/netns although the strings differ.
 */
async function checkCanonicalSandboxDir(spec: StartSpec, defaults: StartDefaults): Promise<void> {
  // The socket does not exist yet: its directory does, and covering that is covering the socket.
  const needed = pathsTheLaunchNeeds(spec, defaults).map(([what, path]) =>
    what === 'socket_path' ? ([what, posix.dirname(path)] as const) : ([what, path] as const));
  const [sandboxDir, ...resolved] = await Promise.all([
    canonicalPath(spec.sandboxDir, defaults),
    ...needed.map(([, path]) => canonicalPath(path, defaults)),
  ]);
  checkSandboxDirCoversNothingNeeded(sandboxDir!, needed.map(([what], i) => [what, resolved[i]!] as const));
}

/**
 * Resolved forms of the configured paths, which every start compares against: resolved once per
 * configuration instead of once per request (a start is on the hot path; the configuration is fixed).
 */
const canonicalDefaults = new WeakMap<StartDefaults, Map<string, Promise<string>>>();

function canonicalPath(path: string, defaults: StartDefaults): Promise<string> {
  const configured = [defaults.runDir, defaults.sandboxDir, defaults.vmmBin, defaults.netnsDir];
  if (!configured.includes(path)) return resolveCanonical(path);
  let cache = canonicalDefaults.get(defaults);
  if (!cache) canonicalDefaults.set(defaults, (cache = new Map()));
  let resolved = cache.get(path);
  if (!resolved) cache.set(path, (resolved = resolveCanonical(path)));
  return resolved;
}

/** realpath of the longest existing prefix, with the rest appended: works for paths not yet created. */
async function resolveCanonical(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (error) {
    const parent = posix.dirname(path);
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === path) return path;
    return posix.join(await resolveCanonical(parent), posix.basename(path));
  }
}

async function expectFile(field: string, path: string): Promise<void> {
  const stats = await statOrThrow(field, path);
  if (!stats.isFile() && !stats.isBlockDevice()) {
    throw new VmprocError('failed-precondition', `${field} ${path} is not a regular file or block device`);
  }
}

async function expectDirectory(field: string, path: string): Promise<void> {
  const stats = await statOrThrow(field, path);
  if (!stats.isDirectory()) throw new VmprocError('failed-precondition', `${field} ${path} is not a directory`);
}

async function expectExists(field: string, name: string, path: string, hint: string): Promise<void> {
  try {
    await stat(path);
  } catch (cause) {
    throw new VmprocError('failed-precondition', `${field} ${name} does not exist (no ${path}); ${hint}`, { cause });
  }
}

async function statOrThrow(field: string, path: string) {
  try {
    return await stat(path);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const problem = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`;
    throw new VmprocError('failed-precondition', `${field} ${path} ${problem}`, { cause });
  }
}
