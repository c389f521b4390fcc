import { copyFile, mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { LaunchMode } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { nativeBin } from '../../src/package-paths.js';
import { validateVm } from '../../src/validation/vm-config.js';
import { vmConfigBody } from '../../src/vmm/vm-config-body.js';
import type { VmSpec } from '../../src/core/domain.js';
import { pingUntilReady, spawnBare, type BareVmm } from './bare-launch.js';
import type { BenchEnv } from './bench-env.js';
import { FIRST_GUEST_LINE, lineOn } from './console-line.js';
import { rawCall } from './raw-ch.js';

/**
 * What every VM benchmark shares: the bench env, the tiny guest as the kernel, a 1 MiB rootfs (the
 * guest reads no disk; another for the bare VMs), two TAPs in the env's netns (the daemon's VM on one, the bare VM on the
 * other, so both can live at once) and a directory for snapshots under the image root.
 */
export interface VmBench {
  readonly env: BenchEnv;
  readonly kernelPath: string;
  readonly rootfsPath: string;
  /** The bare VMs' own rootfs: Cloud Hypervisor write-locks a disk image, so two live VMs cannot share one. */
  readonly bareRootfsPath: string;
  readonly snapsDir: string;
  readonly cmdline: string;
  /** How long to wait for the guest's first console line before saying the VMM prints none. */
  readonly consoleTimeoutMs: number;
}

export const DAEMON_TAP = 'tap0';
export const BARE_TAP = 'tap1';

export async function createVmBench(env: BenchEnv, cmdline: string, consoleTimeoutMs: number): Promise<VmBench> {
  const kernelPath = join(env.root, 'tiny-guest.elf');
  await copyFile(nativeBin('tiny-guest.elf'), kernelPath);
  const rootfsPath = join(env.root, 'disk');
  const bareRootfsPath = join(env.root, 'disk-bare');
  for (const disk of [rootfsPath, bareRootfsPath]) {
    await writeFile(disk, '');
    await truncate(disk, 1 << 20);
  }
  const snapsDir = join(env.root, 'snaps');
  await mkdir(snapsDir);
  for (const tap of [DAEMON_TAP, BARE_TAP]) {
    await execa('ip', ['netns', 'exec', env.netns, 'ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    await execa('ip', ['netns', 'exec', env.netns, 'ip', 'link', 'set', tap, 'up']);
  }
  return { env, kernelPath, rootfsPath, bareRootfsPath, snapsDir, cmdline, consoleTimeoutMs };
}

/** The VmConfig of a start: one vCPU, the tiny guest's command line, one NIC. */
export function vmConfig(bench: VmBench, memoryMib: number, tap: string) {
  return { vcpus: 1, memoryMib: BigInt(memoryMib), cmdline: bench.cmdline, net: [{ id: 'net0', tap }] };
}

/** StartProcess in boot mode with that VM. */
export function bootRequest(bench: VmBench, sandboxId: string, memoryMib: number) {
  return {
    sandboxId,
    mode: LaunchMode.BOOT,
    kernelPath: bench.kernelPath,
    rootfsPath: bench.rootfsPath,
    networkNamespace: bench.env.netns,
    readyTimeout: { seconds: 120n },
    vm: vmConfig(bench, memoryMib, DAEMON_TAP),
  };
}

/** The very vm.create body the daemon sends for that VM (validated and built by the daemon's own code). */
export function createBody(bench: VmBench, memoryMib: number, tap: string): Record<string, unknown> {
  const spec = validateVm(
    { vcpus: 1, maxVcpus: 0, memoryMib, maxMemoryMib: 0, cmdline: bench.cmdline, initramfsPath: '', rootfsReadonly: false, disks: [], net: [{ id: 'net0', tap, mac: '' }], pvpanic: false },
    'boot',
  ) as VmSpec;
  return vmConfigBody(spec, bench.env.sandboxDir);
}

export function bareSetup(bench: VmBench) {
  const { env } = bench;
  return { runDir: env.bareRunDir, sandboxDir: env.sandboxDir, kernelPath: bench.kernelPath, rootfsPath: bench.bareRootfsPath, netns: env.netns, vmmBin: env.vmmBin };
}

export interface BareVm {
  readonly vmm: BareVmm;
  /** Settles with the guest's first console line on the VMM's stdout, or a NoConsoleLineError. */
  readonly firstLine: Promise<string>;
}

/**
 * The baseline boot: the same launch script, then vm.create with the same body and vm.boot,
 * straight on the VMM's socket. Resolves once vm.boot has answered.
 */
export async function bootBare(bench: VmBench, id: string, memoryMib: number, tap = BARE_TAP): Promise<BareVm> {
  const vmm = spawnBare(bareSetup(bench), id, { stdout: 'pipe' });
  const firstLine = lineOn(vmm.child.stdout!, FIRST_GUEST_LINE, bench.consoleTimeoutMs);
  firstLine.catch(() => undefined);
  try {
    await pingUntilReady(vmm.socketPath, 30_000);
    await rawCall(vmm.socketPath, 'PUT', 'vm.create', createBody(bench, memoryMib, tap));
    await rawCall(vmm.socketPath, 'PUT', 'vm.boot');
  } catch (error) {
    process.kill(-vmm.pid, 'SIGKILL');
    await vmm.exited;
    throw error;
  }
  return { vmm, firstLine };
}
