import { copyFile, mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PathPolicy, type PathRoots } from '../../src/host/path-policy.js';
import { nativeBin } from '../../src/package-paths.js';
import { makeStandinSnapshot, type StandinSnapshotOptions } from './standin-snapshot.js';

const ROOTFS_BYTES = 1 << 20;

/** Stand-in VMM knobs, written into the rootfs file the launch links into the sandbox dir. */
export type StandinKnobs = Partial<{
  version: string;
  build_version: string;
  socket_delay_ms: number;
  no_socket: 1;
  exit_before_socket: number;
  crash_after_ms: number;
  crash_exit_code: number;
  crash_signal: string;
  ignore_sigterm: 1;
  sigterm_delay_ms: number;
  restore_delay_ms: number;
  restore_error: string;
  ping_delay_ms: number;
  stderr_lines: number;
  shutdown_no_reply: 1;
}>;

/**
 * A scratch tree for one suite: run dir, sandbox dir, a kernel file, snapshot dirs and rootfs
 * files carrying stand-in knobs. Kept short: unix socket paths must fit in 107 bytes.
 */
export interface SandboxFixture {
  readonly root: string;
  readonly runDir: string;
  readonly sandboxDir: string;
  readonly kernelPath: string;
  /** A rootfs file whose content sets the stand-in's behaviour for the VMM that gets it. */
  rootfs(name: string, knobs?: StandinKnobs): Promise<string>;
  /** A snapshot the stand-in made of the paused tiny guest (see makeStandinSnapshot), as `file://` URL. */
  snapshot(name: string, options?: StandinSnapshotOptions): Promise<string>;
  remove(): Promise<void>;
}

/** The path policy of a daemon on `fixture`: images anywhere in its root, sockets in its run dir. */
export function fixturePathPolicy(fixture: SandboxFixture, overrides: Partial<PathRoots> = {}): Promise<PathPolicy> {
  return PathPolicy.create({
    images: [fixture.root],
    sockets: [fixture.runDir],
    sandboxDir: fixture.sandboxDir,
    sandboxes: [],
    allowBlockDevices: false,
    reservedFiles: [],
    reservedDirs: [join(fixture.runDir, 'logs'), join(fixture.runDir, 'exits')],
    ...overrides,
  });
}

export async function createSandboxFixture(): Promise<SandboxFixture> {
  const root = await mkdtemp(join(tmpdir(), 'vmpt-'));
  const runDir = join(root, 'run');
  const sandboxDir = join(root, 'sbx');
  const kernelPath = join(root, 'vmlinux');
  await mkdir(runDir);
  // The tiny guest (native/tiny-guest): a VM booted with it runs in the stand-in as in Cloud Hypervisor.
  await copyFile(nativeBin('tiny-guest.elf'), kernelPath);
  return {
    root,
    runDir,
    sandboxDir,
    kernelPath,
    async rootfs(name, knobs = {}) {
      const path = join(root, `${name}.rootfs`);
      const lines = Object.entries(knobs).map(([key, value]) => `standin.${key}=${value}`);
      await writeFile(path, `# stand-in VMM knobs\n${lines.join('\n')}\n`);
      // A real Cloud Hypervisor reads a disk's first sectors to tell its image type; a sparse
      // 1 MiB keeps the same file usable by both VMMs (the stand-in ignores lines that are not text).
      await truncate(path, ROOTFS_BYTES);
      return path;
    },
    async snapshot(name, options) {
      // Cloud Hypervisor (and so the stand-in) restores only from a directory with config.json,
      // state.json and memory-ranges in it.
      return makeStandinSnapshot(join(root, 'snapshots', name), { kernelPath, ...options });
    },
    async remove() {
      await rm(root, { recursive: true, force: true });
    },
  };
}
