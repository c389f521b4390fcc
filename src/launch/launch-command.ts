/**
 * The launch, as a pure function from validated values to argv. Nothing here touches the
 * system, so the exact command a VMM runs under can be unit-tested without root.
 *
 * The script text is a constant: every request value reaches bash as a positional argument
 * ("$1".."$6") and is only ever expanded inside double quotes, so no value can become code,
 * whatever it contains (validation rejects hostile values earlier anyway).
 */
import type { LaunchMode } from '../core/domain.js';

export type { LaunchMode };

export interface LaunchPlan {
  readonly mode: LaunchMode;
  /** Where the VMM sees its kernel and rootfs: a tmpfs private to its mount namespace. */
  readonly sandboxDir: string;
  /** Boot mode only. */
  readonly kernelPath?: string;
  readonly rootfsPath: string;
  readonly networkNamespace: string;
  /** From the daemon's configuration, never from a request. */
  readonly vmmBin: string;
  readonly socketPath: string;
}

export interface LaunchCommand {
  readonly file: string;
  readonly args: readonly string[];
}

/** `$0` of the launch script, as seen in `ps` while the script runs (before the exec). */
export const LAUNCH_SCRIPT_NAME = 'vmprocd-launch';

/**
 * Every step either configures the private mount namespace or execs, so the process that
 * runs this script becomes the VMM itself (same PID, same process group).
 */
export const LAUNCH_SCRIPT = [
  'set -euo pipefail',
  'sandbox_dir=$1 kernel=$2 rootfs=$3 netns=$4 vmm=$5 socket=$6',
  // unshare -m made a new mount namespace; keep every mount made below out of the host's.
  'mount --make-rprivate /',
  'mkdir -p -- "$sandbox_dir"',
  'mount -t tmpfs -o mode=0755,size=16m vmprocd-sandbox "$sandbox_dir"',
  'if [[ -n $kernel ]]; then ln -s -- "$kernel" "$sandbox_dir/vmlinux"; fi',
  'ln -s -- "$rootfs" "$sandbox_dir/rootfs.ext4"',
  'exec ip netns exec "$netns" "$vmm" --api-socket "path=$socket"',
].join('\n');

/** `unshare -m -- bash -c <script> vmprocd-launch <sandbox_dir> <kernel|""> <rootfs> <netns> <vmm> <socket>` */
export function buildLaunchCommand(plan: LaunchPlan): LaunchCommand {
  const kernel = plan.mode === 'boot' ? (plan.kernelPath ?? '') : '';
  return {
    file: 'unshare',
    args: [
      '-m',
      '--',
      'bash',
      '-c',
      LAUNCH_SCRIPT,
      LAUNCH_SCRIPT_NAME,
      plan.sandboxDir,
      kernel,
      plan.rootfsPath,
      plan.networkNamespace,
      plan.vmmBin,
      plan.socketPath,
    ],
  };
}

/**
 * How a VMM gets into its sandbox:
 * - `script`: `unshare -m -- bash -c <LAUNCH_SCRIPT> ...`, whose last step is
 *   `exec ip netns exec <netns> <vmm>`: the reference launch, eight fork/execs.
 * - `native`: the same steps in the VMM's own process before it execs the VMM
 *   (native/vmprocd-reaper.c, setup_sandbox): same namespaces, mounts, links and PID.
 */
export type LaunchStrategy = 'script' | 'native';

export interface SandboxSetup {
  readonly dir: string;
  /** Empty in restore mode: no vmlinux link. */
  readonly kernel: string;
  readonly rootfs: string;
  readonly netnsPath: string;
  readonly netnsName: string;
}

/** What the spawner runs: a command as it is, or the VMM after setting up its sandbox. */
export type LaunchProgram =
  | { readonly kind: 'exec'; readonly file: string; readonly args: readonly string[] }
  | { readonly kind: 'sandbox'; readonly sandbox: SandboxSetup; readonly file: string; readonly args: readonly string[] };

/** The VMM's own command line, the same for both strategies. */
export function vmmArgs(socketPath: string): string[] {
  return ['--api-socket', `path=${socketPath}`];
}

export function planLaunch(plan: LaunchPlan, strategy: LaunchStrategy, netnsDir: string): LaunchProgram {
  if (strategy === 'script') return { kind: 'exec', ...buildLaunchCommand(plan) };
  return {
    kind: 'sandbox',
    sandbox: {
      dir: plan.sandboxDir,
      kernel: plan.mode === 'boot' ? (plan.kernelPath ?? '') : '',
      rootfs: plan.rootfsPath,
      netnsPath: `${netnsDir}/${plan.networkNamespace}`,
      netnsName: plan.networkNamespace,
    },
    file: plan.vmmBin,
    args: vmmArgs(plan.socketPath),
  };
}

/**
 * The VMM's environment: a fixed PATH (the daemon's own environment is not the VMM's business)
 * and where its sandbox is, for wrappers and the stand-in VMM.
 */
export function buildLaunchEnvironment(sandboxId: string, sandboxDir: string): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    VMPROCD_SANDBOX_ID: sandboxId,
    VMPROCD_SANDBOX_DIR: sandboxDir,
  };
}
