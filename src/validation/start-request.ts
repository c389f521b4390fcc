import { DEFAULT_READY_TIMEOUT_MS, MAX_READY_TIMEOUT_MS } from '../api-defaults.js';
import { VmprocError } from '../errors.js';
import { defaultSocketPath } from '../host/run-layout.js';
import { isVmSpec, type RestoreSpec, type StartRequest, type StartSpec } from '../core/domain.js';
import { validateVm } from './vm-config.js';
import { validateLabels, validateNetworkNamespace, validateSandboxId } from './identifiers.js';
import { MAX_SOCKET_PATH_BYTES, isSameOrUnder, validatePath } from './paths.js';


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

  const socketPath = validatePath('socket_path', request.socketPath || defaultSocketPath(defaults.runDir, sandboxId), {
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

  const vm = request.vm ? validateVm(request.vm, mode) : undefined;

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
    ...(vm ? { vm } : {}),
  };
  checkSandboxDirCoversNothingNeeded(sandboxDir, pathsTheLaunchNeeds(spec, defaults));
  return spec;
}

/** Everything the launch reads or creates outside the sandbox dir, which its tmpfs must not hide. */
export function pathsTheLaunchNeeds(spec: StartSpec, defaults: StartDefaults): Array<readonly [string, string]> {
  return [
    ['socket_path', spec.socketPath],
    ['rootfs_path', spec.rootfsPath],
    ...(spec.kernelPath ? [['kernel_path', spec.kernelPath] as const] : []),
    ...(isVmSpec(spec.vm) && spec.vm.initramfsPath ? [['vm.initramfs_path', spec.vm.initramfsPath] as const] : []),
    ...(spec.vm?.disks ?? []).map((disk, i) => [`vm.disks[${i}].path`, disk.path] as const),
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

export function checkSandboxDirCoversNothingNeeded(sandboxDir: string, needed: ReadonlyArray<readonly [string, string]>): void {
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
