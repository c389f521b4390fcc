import { realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { VmprocError } from '../errors.js';
import type { RestoreSpec, StartRequest, StartSpec } from '../supervisor/process-types.js';
import { validateLabels, validateNetworkNamespace, validateSandboxId } from './identifiers.js';
import { MAX_SOCKET_PATH_BYTES, isSameOrUnder, validatePath } from './paths.js';

export const DEFAULT_READY_TIMEOUT_MS = 5_000;
const MAX_READY_TIMEOUT_MS = 10 * 60_000;

/** What the daemon's configuration contributes to every start. */
export interface StartDefaults {
  /** Default socket directory, also where logs and exit records live. */
  readonly runDir: string;
  readonly sandboxDir: string;
  readonly vmmBin: string;
  /** Where `ip netns` keeps named network namespaces. */
  readonly netnsDir: string;
}

/**
 * Directories a sandbox tmpfs must never cover: the VMM's own mount namespace would lose its
 * programs, libraries or kernel interfaces, and the launch would fail in confusing ways.
 */
const SYSTEM_DIRS = ['/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/libx32', '/opt',
  '/proc', '/root', '/run', '/sbin', '/sys', '/tmp', '/usr', '/var', '/var/lib', '/var/run'];
/** Trees no part of which a tmpfs may shadow (a sandbox in /usr/lib would hide the VMM's libraries). */
const SYSTEM_TREES = ['/bin', '/boot', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/libx32', '/proc', '/sbin', '/sys', '/usr'];

/** Checks the request's shape and fills in defaults. Throws `invalid-argument` with the field's name. */
export function validateStartRequest(request: StartRequest, defaults: StartDefaults): StartSpec {
  const sandboxId = validateSandboxId(request.sandboxId);
  const mode = request.mode;
  if (mode === undefined) {
    throw new VmprocError('invalid-argument', 'mode is required: boot (LAUNCH_MODE_BOOT) or restore (LAUNCH_MODE_RESTORE)');
  }
  let kernelPath: string | undefined;
  if (mode === 'boot') {
    if (!request.kernelPath) throw new VmprocError('invalid-argument', 'kernel_path is required in boot mode');
    kernelPath = validatePath('kernel_path', request.kernelPath);
  } else if (request.kernelPath) {
    throw new VmprocError('invalid-argument', 'kernel_path is for boot mode only: a restore takes the kernel from the snapshot');
  }
  if (!request.rootfsPath) throw new VmprocError('invalid-argument', 'rootfs_path is required');
  const rootfsPath = validatePath('rootfs_path', request.rootfsPath);
  const networkNamespace = validateNetworkNamespace(request.networkNamespace);

  const socketPath = validatePath('socket_path', request.socketPath || `${defaults.runDir}/${sandboxId}.sock`, {
    forbidden: { characters: ',=', why: 'the VMM parses --api-socket as comma-separated key=value options' },
  });
  const socketBytes = Buffer.byteLength(socketPath);
  if (socketBytes > MAX_SOCKET_PATH_BYTES) {
    throw new VmprocError(
      'invalid-argument',
      `socket_path ${JSON.stringify(socketPath)} is ${socketBytes} bytes; a unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}`,
    );
  }

  const sandboxDir = validatePath('sandbox_dir', request.sandboxDir || defaults.sandboxDir);

  const readyTimeoutMs = request.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  if (!(readyTimeoutMs > 0) || readyTimeoutMs > MAX_READY_TIMEOUT_MS) {
    throw new VmprocError('invalid-argument', `ready_timeout must be more than 0 and at most ${MAX_READY_TIMEOUT_MS / 1000}s`);
  }

  let restore: RestoreSpec | undefined;
  if (request.restore) {
    if (mode !== 'restore') throw new VmprocError('invalid-argument', 'restore is for restore mode (LAUNCH_MODE_RESTORE) only');
    restore = validateRestore(request.restore);
  }

  const spec: StartSpec = {
    sandboxId,
    mode,
    ...(kernelPath ? { kernelPath } : {}),
    rootfsPath,
    networkNamespace,
    socketPath,
    sandboxDir,
    readyTimeoutMs,
    ...(restore ? { restore } : {}),
    labels: validateLabels(request.labels),
  };
  checkSandboxDirCoversNothingNeeded(sandboxDir, pathsTheLaunchNeeds(spec, defaults));
  return spec;
}

/** Everything the launch reads or creates outside the sandbox dir, which its tmpfs must not hide. */
function pathsTheLaunchNeeds(spec: StartSpec, defaults: StartDefaults): Array<readonly [string, string]> {
  return [
    ['socket_path', spec.socketPath],
    ['rootfs_path', spec.rootfsPath],
    ...(spec.kernelPath ? [['kernel_path', spec.kernelPath] as const] : []),
    ...(spec.restore ? [['the restore snapshot', restoreSourceDir(spec.restore.sourceUrl)] as const] : []),
    ['the VMM binary', defaults.vmmBin],
    ['the network namespace directory', defaults.netnsDir],
    ['the run directory', defaults.runDir],
  ];
}

/** The directory a restore's `file://` URL names. */
export function restoreSourceDir(sourceUrl: string): string {
  return sourceUrl.slice('file://'.length);
}

function validateRestore(restore: RestoreSpec): RestoreSpec {
  if (!restore.sourceUrl) throw new VmprocError('invalid-argument', 'restore.source_url is required');
  if (!restore.sourceUrl.startsWith('file:///')) {
    throw new VmprocError(
      'invalid-argument',
      `restore.source_url ${JSON.stringify(restore.sourceUrl)} must be a file:// URL of a snapshot directory, e.g. file:///var/lib/snapshots/s1`,
    );
  }
  const dir = validatePath('restore.source_url', restoreSourceDir(restore.sourceUrl));
  if (restore.memoryRestoreMode === 'OnDemand' && restore.prefault) {
    throw new VmprocError('invalid-argument', 'restore.prefault cannot be combined with memory_restore_mode ON_DEMAND (pages are loaded lazily)');
  }
  return { ...restore, sourceUrl: `file://${dir}` };
}

function checkSandboxDirCoversNothingNeeded(sandboxDir: string, needed: ReadonlyArray<readonly [string, string]>): void {
  const system = SYSTEM_DIRS.find((dir) => isSameOrUnder(dir, sandboxDir)) ?? SYSTEM_TREES.find((tree) => isSameOrUnder(sandboxDir, tree));
  if (system) {
    throw new VmprocError(
      'invalid-argument',
      `sandbox_dir ${JSON.stringify(sandboxDir)} would cover ${system} in the VMM's mount namespace; use a dedicated directory such as /run/vmprocd/sandbox`,
    );
  }
  for (const [what, path] of needed) {
    if (isSameOrUnder(path, sandboxDir)) {
      throw new VmprocError(
        'invalid-argument',
        `sandbox_dir ${JSON.stringify(sandboxDir)} contains ${what} (${path}), which its tmpfs would hide from the launch`,
      );
    }
  }
}

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
