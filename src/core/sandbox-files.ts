import { isVmSpec, type StartSpec } from './domain.js';

/**
 * The names a VM's files have in its sandbox dir: the same in every VMM, so Cloud Hypervisor's
 * config (and a snapshot's config.json) names the same paths wherever the VM runs, and a snapshot
 * restores in any sandbox (E2B's design). The launch links each host file here; vm.create names
 * them here.
 */
export const SANDBOX_NAMES = {
  kernel: 'vmlinux',
  initramfs: 'initramfs',
  rootfs: 'rootfs.ext4',
  disk: (id: string) => `disk-${id}`,
  /** The host side of a vsock device: a socket Cloud Hypervisor binds inside the sandbox. */
  vsock: 'vsock.sock',
} as const;

/** A host file the VMM gets in its sandbox dir. */
export interface SandboxFile {
  readonly name: string;
  /** The host path (resolved by prepareLaunch). */
  readonly path: string;
  /** Disks may be block devices (when the operator allows them); kernels and initramfs not. */
  readonly disk: boolean;
}

/** Every file of a start, in link order: kernel and initramfs (boot mode), rootfs, extra disks. */
export function sandboxFilesOf(spec: StartSpec): SandboxFile[] {
  const files: SandboxFile[] = [];
  if (spec.mode === 'boot' && spec.kernelPath) files.push({ name: SANDBOX_NAMES.kernel, path: spec.kernelPath, disk: false });
  if (isVmSpec(spec.vm) && spec.vm.initramfsPath) files.push({ name: SANDBOX_NAMES.initramfs, path: spec.vm.initramfsPath, disk: false });
  files.push({ name: SANDBOX_NAMES.rootfs, path: spec.rootfsPath, disk: true });
  for (const disk of spec.vm?.disks ?? []) files.push({ name: SANDBOX_NAMES.disk(disk.id), path: disk.path, disk: true });
  return files;
}

/** Where a file of the sandbox is, as the VMM sees it. */
export function inSandbox(spec: Pick<StartSpec, 'sandboxDir'>, name: string): string {
  return `${spec.sandboxDir}/${name}`;
}
