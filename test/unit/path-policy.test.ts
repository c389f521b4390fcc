/**
 * The one path policy: every host path a request names is resolved and must lie under a root;
 * the daemon's own files are never a target. Runs without root on a temp tree.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PathPolicy, type PathRoots } from '../../src/host/path-policy.js';
import { expectVmprocError, rejectionOf } from './support/errors.js';

let root: string;
let roots: PathRoots;
let policy: PathPolicy;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'vmprocd-policy-'));
  for (const dir of ['images/snap', 'images/sub', 'other', 'run/logs', 'run/exits', 'state', 'sandboxes']) await mkdir(join(root, dir), { recursive: true });
  await writeFile(join(root, 'images/vmlinux'), 'kernel');
  await writeFile(join(root, 'images/sub/rootfs.ext4'), 'rootfs');
  await writeFile(join(root, 'other/secret'), 'not for guests');
  await writeFile(join(root, 'state/state.journal'), '');
  // Links inside the image root: one that stays inside, one that leads out, one up with `..`.
  await symlink(join(root, 'images/sub/rootfs.ext4'), join(root, 'images/inside-link'));
  await symlink(join(root, 'other/secret'), join(root, 'images/escape'));
  await symlink('/etc/passwd', join(root, 'images/passwd'));
  await symlink(join(root, 'state'), join(root, 'images/state-alias'));
  await symlink(join(root, 'run'), join(root, 'alias-run'));
  roots = {
    images: [join(root, 'images')],
    sockets: [join(root, 'run')],
    sandboxDir: join(root, 'run/sandbox'),
    sandboxes: [join(root, 'sandboxes')],
    allowBlockDevices: false,
    reservedFiles: [join(root, 'run/vmprocd.sock'), join(root, 'run/metrics.sock')],
    reservedDirs: [join(root, 'state'), join(root, 'run/logs'), join(root, 'run/exits')],
  };
  policy = await PathPolicy.create(roots);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('PathPolicy.image', () => {
  it('resolves a file under an image root, through links that stay inside', async () => {
    expect(await policy.image('rootfs_path', join(root, 'images/inside-link'), 'file')).toEqual({ path: join(root, 'images/sub/rootfs.ext4'), root: join(root, 'images') });
    expect((await policy.image('kernel_path', join(root, 'images/sub/../vmlinux'), 'file')).path).toBe(join(root, 'images/vmlinux'));
  });

  it.each([
    ['a symlink inside the root that leads out', 'images/escape', 'other/secret'],
    ['a symlink to /etc/passwd', 'images/passwd', '/etc/passwd'],
    ['`..` out of the root', 'images/../other/secret', 'other/secret'],
  ])('refuses %s with PERMISSION_DENIED naming the field, the resolved path and the roots', async (_what, given, target) => {
    const resolved = target.startsWith('/') ? target : join(root, target);
    const error = await rejectionOf(policy.image('rootfs_path', `${root}/${given}`, 'file'));
    expectVmprocError(error, 'permission-denied', `rootfs_path ${root}/${given} resolves to ${resolved}`, `outside the image roots (${join(root, 'images')})`, '--image-root');
  });

  it('refuses a path straight outside the roots, saying so without a "resolves to"', async () => {
    expectVmprocError(await rejectionOf(policy.image('kernel_path', '/etc/shadow', 'file')), 'permission-denied', 'kernel_path /etc/shadow is outside the image roots');
  });

  it('refuses the root itself', async () => {
    expectVmprocError(await rejectionOf(policy.image('restore.source_url', join(root, 'images'), 'directory')), 'permission-denied', 'outside the image roots');
  });

  it("refuses the daemon's own files even when reached from inside an image root", async () => {
    const error = await rejectionOf(policy.image('rootfs_path', join(root, 'images/state-alias/state.journal'), 'file'));
    expectVmprocError(error, 'permission-denied', 'outside the image roots');
    const wide = await PathPolicy.create({ ...roots, images: [root] });
    expectVmprocError(await rejectionOf(wide.image('rootfs_path', join(root, 'state/state.journal'), 'file')), 'permission-denied', "the daemon's own");
    expectVmprocError(await rejectionOf(wide.image('restore.source_url', join(root, 'run'), 'directory')), 'permission-denied', "the daemon's own");
  });

  it('says what is missing or of the wrong kind with FAILED_PRECONDITION', async () => {
    expectVmprocError(await rejectionOf(policy.image('rootfs_path', join(root, 'images/nope'), 'file')), 'failed-precondition', 'does not exist');
    expectVmprocError(await rejectionOf(policy.image('rootfs_path', join(root, 'images/snap'), 'file')), 'failed-precondition', 'is not a regular file or block device');
    expectVmprocError(await rejectionOf(policy.image('restore.source_url', join(root, 'images/vmlinux'), 'directory')), 'failed-precondition', 'is not a directory');
  });

  it('takes a block device only when allowed', async () => {
    const devices = await PathPolicy.create({ ...roots, images: ['/dev'] }).catch(() => undefined);
    if (!devices) return; // /dev is not root's on this machine: nothing to check
    const blocks = ['/dev/loop0', '/dev/ram0', '/dev/vda', '/dev/sda'];
    const { existsSync, statSync } = await import('node:fs');
    const block = blocks.find((b) => existsSync(b) && statSync(b).isBlockDevice());
    if (!block) return;
    expectVmprocError(await rejectionOf(devices.image('rootfs_path', block, 'file')), 'permission-denied', '--allow-block-devices');
    const allowed = await PathPolicy.create({ ...roots, images: ['/dev'], allowBlockDevices: true });
    expect((await allowed.image('rootfs_path', block, 'file')).path).toBe(block);
  });
});

describe('PathPolicy.socket', () => {
  it('resolves the directory (a socket need not exist yet)', async () => {
    expect(await policy.socket('socket_path', join(root, 'alias-run/a.sock'))).toEqual({ path: join(root, 'run/a.sock'), root: join(root, 'run') });
  });

  it("refuses the daemon's own sockets, also through an alias, and a socket whose .lock would be one", async () => {
    expectVmprocError(await rejectionOf(policy.socket('socket_path', join(root, 'run/vmprocd.sock'))), 'permission-denied', "the daemon's own");
    expectVmprocError(await rejectionOf(policy.socket('socket_path', join(root, 'alias-run/metrics.sock'))), 'permission-denied', `resolves to ${join(root, 'run/metrics.sock')}`);
    const lockClash = await PathPolicy.create({ ...roots, reservedFiles: [join(root, 'run/x.sock.lock')] });
    expectVmprocError(await rejectionOf(lockClash.socket('socket_path', join(root, 'run/x.sock'))), 'permission-denied', `${join(root, 'run/x.sock.lock')}`);
  });

  it('refuses sockets outside the socket roots, and in the run dir\'s logs and exit records', async () => {
    expectVmprocError(await rejectionOf(policy.socket('socket_path', join(root, 'other/x.sock'))), 'permission-denied', 'outside the socket roots', '--socket-root');
    expectVmprocError(await rejectionOf(policy.socket('socket_path', join(root, 'run/logs/x.sock'))), 'permission-denied', "the daemon's own");
    expectVmprocError(await rejectionOf(policy.socket('socket_path', join(root, 'run/exits/x.sock'))), 'permission-denied', "the daemon's own");
  });

  it('refuses a path that is something other than a socket', async () => {
    await writeFile(join(root, 'run/file.sock'), 'a file');
    expectVmprocError(await rejectionOf(policy.socket('socket_path', join(root, 'run/file.sock'))), 'failed-precondition', 'exists and is not a socket');
  });

  it('accepts a path where a socket already is (a stale one; whether it is live is the launch\'s business)', async () => {
    const path = join(root, 'run/stale.sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await writeFile(join(root, 'run/unused'), '');
    expect((await policy.socket('socket_path', path)).path).toBe(path);
  });
});

describe('PathPolicy.sandboxDir', () => {
  it('takes the configured one, and ones under a sandbox root (existing or not)', async () => {
    expect(await policy.sandboxDir('sandbox_dir', join(root, 'run/sandbox'))).toBe(join(root, 'run/sandbox'));
    expect(await policy.sandboxDir('sandbox_dir', join(root, 'sandboxes/a/b'))).toBe(join(root, 'sandboxes/a/b'));
  });

  it('refuses anything else, the sandbox root itself included', async () => {
    expectVmprocError(await rejectionOf(policy.sandboxDir('sandbox_dir', '/srv/newdir/x')), 'permission-denied', 'sandbox_dir /srv/newdir/x is neither the configured sandbox dir nor under a sandbox root', '--sandbox-root');
    expectVmprocError(await rejectionOf(policy.sandboxDir('sandbox_dir', join(root, 'sandboxes'))), 'permission-denied');
  });
});

describe('PathPolicy.create', () => {
  it('refuses a root that does not exist, or is not a directory', async () => {
    expectVmprocError(await rejectionOf(PathPolicy.create({ ...roots, images: [join(root, 'missing')] })), 'invalid-argument', '--image-root', 'does not exist');
    expectVmprocError(await rejectionOf(PathPolicy.create({ ...roots, images: [join(root, 'images/vmlinux')] })), 'invalid-argument', 'is not a directory');
  });

  it('refuses, as root, an image root others can write to', async () => {
    if (process.getuid?.() !== 0) return;
    const open = join(root, 'open');
    await mkdir(open);
    await chmod(open, 0o777);
    expectVmprocError(await rejectionOf(PathPolicy.create({ ...roots, images: [open] })), 'invalid-argument', 'can be written by others than root', 'mode 777');
  });
});
