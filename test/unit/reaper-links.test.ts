/**
 * The real vmprocd-reaper opening a launch's files beneath their image roots (openat2
 * RESOLVE_BENEATH) as descriptors 3, 4, ... that the VMM keeps: what the VMM gets is the file
 * checked beneath the root, and a path that leads out is never opened. No root needed: an `exec`
 * launch of a shell that reports what its descriptors are.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SandboxLink } from '../../src/launch/launch-command.js';
import { Spawner } from '../../src/launch/spawner.js';
import { nativeBin } from '../../src/package-paths.js';

let dir: string;
let images: string;
let spawner: Spawner;
let launches = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmprocd-links-'));
  images = join(dir, 'images');
  await mkdir(join(images, 'sub'), { recursive: true });
  await writeFile(join(images, 'sub/rootfs.ext4'), 'rootfs');
  await writeFile(join(images, 'vmlinux'), 'kernel');
  await writeFile(join(dir, 'secret'), 'outside');
  await symlink(join(dir, 'secret'), join(images, 'escape'));
  await symlink('sub/rootfs.ext4', join(images, 'relative-inside'));
  await mkdir(join(images, 'a-dir'));
  spawner = await Spawner.start(nativeBin('vmprocd-reaper'));
});

afterAll(async () => {
  await spawner.close();
  await rm(dir, { recursive: true, force: true });
});

/** Launches `sh -c <script>` with `links`; resolves with its exit status line and its log. */
async function launch(links: SandboxLink[], script: string): Promise<{ status: string; log: string }> {
  const n = ++launches;
  const statusPath = join(dir, `l${n}.status`);
  const logPath = join(dir, `l${n}.log`);
  const exited = new Promise<void>((resolve) => spawner.onExited((id) => id === statusPath && resolve()));
  await spawner.spawn({ id: statusPath, statusPath, logPath, links, argv: ['/bin/sh', '-c', script], env: { PATH: '/usr/bin:/bin' } });
  await exited;
  return { status: (await readFile(statusPath, 'utf8')).split('\n')[0]!, log: await readFile(logPath, 'utf8') };
}

const link = (name: string, relative: string): SandboxLink => ({ name, root: images, path: join(images, relative), allowBlock: false });

describe('vmprocd-reaper: links opened beneath their roots', () => {
  it('hands the VMM each file as descriptor 3, 4, ..., across its exec', async () => {
    const { status, log } = await launch([link('vmlinux', 'vmlinux'), link('rootfs.ext4', 'sub/rootfs.ext4')], 'readlink /proc/self/fd/3; readlink /proc/self/fd/4; cat /proc/self/fd/4');
    expect(status).toMatch(/ code=0 /);
    expect(log).toBe(`${join(images, 'vmlinux')}\n${join(images, 'sub/rootfs.ext4')}\nrootfs`);
  });

  it('follows a symlink that stays beneath the root', async () => {
    const { status, log } = await launch([link('rootfs.ext4', 'relative-inside')], 'readlink /proc/self/fd/3');
    expect({ status, log }).toEqual({ status: expect.stringMatching(/ code=0 /), log: `${join(images, 'sub/rootfs.ext4')}\n` });
  });

  it('never opens a path that leads out of the root (a swapped symlink): the launch ends before exec', async () => {
    const { status, log } = await launch([link('rootfs.ext4', 'escape')], 'echo the VMM ran');
    expect(status).toMatch(/ code=1 /);
    expect(log).toContain(`vmprocd-reaper: rootfs.ext4: cannot open escape beneath ${images}`);
    expect(log).not.toContain('the VMM ran');
  });

  it('refuses what is no longer a regular file by the time it is opened', async () => {
    const { status, log } = await launch([link('rootfs.ext4', 'a-dir')], 'echo the VMM ran');
    expect(status).toMatch(/ code=1 /);
    expect(log).toContain('is no longer a regular file');
    expect(log).not.toContain('the VMM ran');
  });

  it('keeps no other descriptor of its own open in the VMM', async () => {
    const { log } = await launch([link('rootfs.ext4', 'sub/rootfs.ext4')], 'ls /proc/self/fd');
    // 0, 1, 2, the link, and the descriptor ls uses to read the directory.
    expect(log.trim().split('\n').map(Number).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4]);
  });
});
