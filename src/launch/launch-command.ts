/**
 * The launch, as a pure function from validated values to argv. Nothing here touches the
 * system, so the exact command a VMM runs under can be unit-tested without root.
 *
 * The script text is a constant: every request value reaches bash as a positional argument
 * and is only ever expanded inside double quotes, so no value can become code,
 * whatever it contains (validation rejects hostile values earlier anyway).
 */
import type { LaunchMode, StartSpec } from '../core/domain.js';
import { sandboxFilesOf } from '../core/sandbox-files.js';

export type { LaunchMode };

/**
 * A file the VMM gets in its sandbox: `<sandbox_dir>/<name>`, a symlink to the descriptor the VMM's
 * own process opened `path` as, beneath `root` (openat2 RESOLVE_BENEATH; native/vmprocd-reaper.c).
 * So the VMM gets exactly the file checked under its image root, and a path swapped after the
 * check can never lead it anywhere else.
 */
export interface SandboxLink {
  /** One file name: `vmlinux`, `rootfs.ext4`, `disk-<id>` (core/sandbox-files.ts). */
  readonly name: string;
  /** The image root `path` lies under (resolved). */
  readonly root: string;
  /** The file as the daemon resolved and checked it. */
  readonly path: string;
  /** A block device is acceptable too (`--allow-block-devices`). */
  readonly allowBlock: boolean;
}

/** The descriptor link i is opened as, in the VMM's process and across its exec. */
export const FIRST_LINK_FD = 3;

export interface LaunchPlan {
  /** Where the VMM sees its kernel and rootfs: a tmpfs private to its mount namespace. */
  readonly sandboxDir: string;
  readonly links: readonly SandboxLink[];
  readonly networkNamespace: string;
  /** From the daemon's configuration, never from a request. */
  readonly vmmBin: string;
  readonly socketPath: string;
  /** Where the VMM writes its events (`--event-monitor path=`), in the daemon's run dir. */
  readonly eventMonitorPath: string;
}

/** The links of a start (sandbox-files.ts), each under the image root it was checked beneath. */
export function sandboxLinks(spec: StartSpec, rootOf: (path: string) => string, allowBlock: boolean): SandboxLink[] {
  return sandboxFilesOf(spec).map((file) => ({ name: file.name, root: rootOf(file.path), path: file.path, allowBlock: file.disk && allowBlock }));
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
 * After the five fixed arguments come pairs of a link's name and the descriptor its file is open as.
 */
export const LAUNCH_SCRIPT = [
  'set -euo pipefail',
  'sandbox_dir=$1 netns=$2 vmm=$3 socket=$4 events=$5',
  'shift 5',
  // unshare -m made a new mount namespace; keep every mount made below out of the host's.
  'mount --make-rprivate /',
  'mkdir -p -- "$sandbox_dir"',
  'mount -t tmpfs -o mode=0755,size=16m vmprocd-sandbox "$sandbox_dir"',
  // BASHPID is this process, which the execs below turn into the VMM: /proc/<VMM pid>/fd/<fd>.
  'while [[ $# -gt 0 ]]; do ln -s -- "/proc/$BASHPID/fd/$2" "$sandbox_dir/$1"; shift 2; done',
  'exec ip netns exec "$netns" "$vmm" --api-socket "path=$socket" --event-monitor "path=$events"',
].join('\n');

/** `unshare -m -- bash -c <script> vmprocd-launch <sandbox_dir> <netns> <vmm> <socket> <events> [<name> <fd>]...` */
export function buildLaunchCommand(plan: LaunchPlan): LaunchCommand {
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
      plan.networkNamespace,
      plan.vmmBin,
      plan.socketPath,
      plan.eventMonitorPath,
      ...plan.links.flatMap((link, i) => [link.name, String(FIRST_LINK_FD + i)]),
    ],
  };
}

/**
 * How a VMM gets into its sandbox:
 * - `script`: `unshare -m -- bash -c <LAUNCH_SCRIPT> ...`, whose last step is
 *   `exec ip netns exec <netns> <vmm>`: the reference launch, eight fork/execs.
 * - `native`: the same steps in the VMM's own process before it execs the VMM
 *   (native/vmprocd-reaper.c, setup_sandbox): same namespaces, mounts, links and PID.
 * Either way the VMM's process opens the links' files beneath their roots before anything else.
 */
export type LaunchStrategy = 'script' | 'native';

export interface SandboxSetup {
  readonly dir: string;
  readonly netnsPath: string;
  readonly netnsName: string;
}

/** What the spawner runs: a command as it is, or the VMM after setting up its sandbox; both with their links. */
export type LaunchProgram =
  | { readonly kind: 'exec'; readonly links: readonly SandboxLink[]; readonly file: string; readonly args: readonly string[] }
  | { readonly kind: 'sandbox'; readonly links: readonly SandboxLink[]; readonly sandbox: SandboxSetup; readonly file: string; readonly args: readonly string[] };

/** The VMM's own command line, the same for both strategies. */
export function vmmArgs(socketPath: string, eventMonitorPath: string): string[] {
  return ['--api-socket', `path=${socketPath}`, '--event-monitor', `path=${eventMonitorPath}`];
}

export function planLaunch(plan: LaunchPlan, strategy: LaunchStrategy, netnsDir: string): LaunchProgram {
  if (strategy === 'script') return { kind: 'exec', links: plan.links, ...buildLaunchCommand(plan) };
  return {
    kind: 'sandbox',
    links: plan.links,
    sandbox: {
      dir: plan.sandboxDir,
      netnsPath: `${netnsDir}/${plan.networkNamespace}`,
      netnsName: plan.networkNamespace,
    },
    file: plan.vmmBin,
    args: vmmArgs(plan.socketPath, plan.eventMonitorPath),
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
