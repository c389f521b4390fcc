import { stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { isVmSpec, type StartSpec } from '../core/domain.js';
import { VmprocError } from '../errors.js';
import { type PathPolicy, resolveLeniently } from '../host/path-policy.js';
import { checkSandboxDirCoversNothingNeeded, pathsTheLaunchNeeds, restoreSourceDir, type StartDefaults } from '../validation/start-request.js';

/**
 * Resolves every host path of a start through the path policy and checks what must exist on the
 * host for the launch to succeed. Returns the spec with the resolved paths: what the VMM gets.
 * Throws `permission-denied` for a path outside its roots, `failed-precondition` for what is
 * missing; when several are wrong, the first in the order below.
 */
export async function prepareLaunch(spec: StartSpec, policy: PathPolicy, defaults: StartDefaults): Promise<StartSpec> {
  const results = await Promise.allSettled([
    policy.sandboxDir('sandbox_dir', spec.sandboxDir),
    policy.image('rootfs_path', spec.rootfsPath, 'file'),
    expectExists('network namespace', spec.networkNamespace, posix.join(defaults.netnsDir, spec.networkNamespace),
      `create it with: ip netns add ${spec.networkNamespace}`),
    policy.socket('socket_path', spec.socketPath),
    spec.kernelPath ? policy.image('kernel_path', spec.kernelPath, 'file') : Promise.resolve(undefined),
    spec.restore ? policy.image('restore.source_url', restoreSourceDir(spec.restore.sourceUrl), 'directory') : Promise.resolve(undefined),
  ]);
  // The VM's other files: its initramfs and extra disks, checked like the rootfs.
  const vmFiles = await Promise.allSettled([
    isVmSpec(spec.vm) && spec.vm.initramfsPath ? policy.image('vm.initramfs_path', spec.vm.initramfsPath, 'file') : Promise.resolve(undefined),
    ...(spec.vm?.disks ?? []).map((disk, i) => policy.image(`vm.disks[${i}].path`, disk.path, 'file')),
  ]);
  const failure = [...results, ...vmFiles].find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
  const [initramfs, ...disks] = vmFiles.map((r) => (r as PromiseFulfilledResult<{ path: string } | undefined>).value);
  const [sandboxDir, rootfs, , socket, kernel, restoreDir] = results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [
    string, { path: string }, unknown, { path: string }, { path: string } | undefined, { path: string } | undefined,
  ];
  const resolved: StartSpec = {
    ...spec,
    sandboxDir,
    rootfsPath: rootfs.path,
    socketPath: socket.path,
    ...(kernel ? { kernelPath: kernel.path } : {}),
    ...(spec.restore && restoreDir ? { restore: { ...spec.restore, sourceUrl: `file://${restoreDir.path}` } } : {}),
    ...(spec.vm
      ? {
          vm: {
            ...spec.vm,
            ...(initramfs ? { initramfsPath: initramfs.path } : {}),
            disks: spec.vm.disks.map((disk, i) => ({ ...disk, path: disks[i]!.path })),
          },
        }
      : {}),
  };
  await checkCanonicalSandboxDir(resolved, defaults);
  return resolved;
}

/**
 * The sandbox dir's tmpfs must hide nothing the launch needs, on resolved paths: `/var/run` is a
 * symlink to `/run`, so a sandbox at /run/netns would hide /var/run/netns although the strings differ.
 */
async function checkCanonicalSandboxDir(spec: StartSpec, defaults: StartDefaults): Promise<void> {
  // The socket does not exist yet: its directory does, and covering that is covering the socket.
  const needed = pathsTheLaunchNeeds(spec, defaults).map(([what, path]) =>
    what === 'socket_path' ? ([what, posix.dirname(path)] as const) : ([what, path] as const));
  const resolved = await Promise.all(needed.map(([, path]) => canonicalPath(path, defaults)));
  checkSandboxDirCoversNothingNeeded(spec.sandboxDir, needed.map(([what], i) => [what, resolved[i]!] as const));
}

/**
 * Resolved forms of the configured paths, which every start compares against: resolved once per
 * configuration instead of once per request (a start is on the hot path; the configuration is fixed).
 */
const canonicalDefaults = new WeakMap<StartDefaults, Map<string, Promise<string>>>();

function canonicalPath(path: string, defaults: StartDefaults): Promise<string> {
  const configured = [defaults.runDir, defaults.sandboxDir, defaults.vmmBin, defaults.netnsDir];
  if (!configured.includes(path)) return resolveLeniently(path);
  let cache = canonicalDefaults.get(defaults);
  if (!cache) canonicalDefaults.set(defaults, (cache = new Map()));
  let resolved = cache.get(path);
  if (!resolved) cache.set(path, (resolved = resolveLeniently(path)));
  return resolved;
}

async function expectExists(field: string, name: string, path: string, hint: string): Promise<void> {
  try {
    await stat(path);
  } catch (cause) {
    throw new VmprocError('failed-precondition', `${field} ${name} does not exist (no ${path}); ${hint}`, { cause });
  }
}
