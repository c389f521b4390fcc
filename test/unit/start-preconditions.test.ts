import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StartRequest, StartSpec } from '../../src/core/domain.js';
import { PathPolicy } from '../../src/host/path-policy.js';
import { prepareLaunch } from '../../src/launch/launch-preconditions.js';
import { type StartDefaults, validateStartRequest } from '../../src/validation/start-request.js';
import { expectVmprocError, rejectionOf } from './support/errors.js';

/**
 * A host laid out in a temp dir: images/{vmlinux,rootfs.ext4,a-dir}, netns/ns-1, run/, snap/.
 * Specs come from validateStartRequest, as in the daemon.
 */
describe('prepareLaunch: what must exist on the host', () => {
  let root: string;
  let defaults: StartDefaults;
  let policy: PathPolicy;
  let boot: StartRequest;
  let restore: StartRequest;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vmprocd-pre-'));
    await Promise.all(['images/a-dir', 'netns', 'run', 'snap', 'sockets'].map((d) => mkdir(join(root, d), { recursive: true })));
    await Promise.all([
      writeFile(join(root, 'images/vmlinux'), 'kernel'),
      writeFile(join(root, 'images/rootfs.ext4'), 'rootfs'),
      writeFile(join(root, 'netns/ns-1'), ''),
      writeFile(join(root, 'snap-file'), ''),
    ]);
    defaults = {
      runDir: join(root, 'run'),
      sandboxDir: join(root, 'sandbox'),
      vmmBin: '/usr/local/bin/cloud-hypervisor',
      netnsDir: join(root, 'netns'),
    };
    policy = await PathPolicy.create({
      images: [root],
      sockets: [root],
      sandboxDir: defaults.sandboxDir,
      sandboxes: [root],
      allowBlockDevices: false,
      reservedFiles: [],
      reservedDirs: [],
    });
    boot = {
      sandboxId: 'sb-1',
      mode: 'boot',
      kernelPath: join(root, 'images/vmlinux'),
      rootfsPath: join(root, 'images/rootfs.ext4'),
      networkNamespace: 'ns-1',
      labels: {},
    };
    restore = {
      sandboxId: 'sb-1',
      mode: 'restore',
      rootfsPath: join(root, 'images/rootfs.ext4'),
      networkNamespace: 'ns-1',
      restore: { sourceUrl: `file://${join(root, 'snap')}`, resume: true, prefault: false },
      labels: {},
    };
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const spec = (request: StartRequest, patch: Partial<StartRequest> = {}): StartSpec =>
    validateStartRequest({ ...request, ...patch }, defaults);

  it('resolves when everything exists (boot)', async () => {
    await expect(prepareLaunch(spec(boot), policy, defaults)).resolves.toMatchObject({ sandboxId: 'sb-1' });
  });

  it('resolves when everything exists (restore with a snapshot directory)', async () => {
    await expect(prepareLaunch(spec(restore), policy, defaults)).resolves.toMatchObject({ sandboxId: 'sb-1' });
  });

  it('resolves for a restore-mode launch without a restore spec', async () => {
    const { restore: _omitted, ...bare } = restore;
    await expect(prepareLaunch(spec(bare), policy, defaults)).resolves.toMatchObject({ sandboxId: 'sb-1' });
  });

  it('resolves with an explicit socket path in another existing directory', async () => {
    await expect(prepareLaunch(spec(boot, { socketPath: join(root, 'sockets/x.sock') }), policy, defaults)).resolves.toMatchObject({ sandboxId: 'sb-1' });
  });

  it('refuses a missing kernel', async () => {
    const missing = join(root, 'images/nope');
    const error = await rejectionOf(prepareLaunch(spec(boot, { kernelPath: missing }), policy, defaults));
    const vmprocError = expectVmprocError(error, 'failed-precondition', 'kernel_path', missing, 'does not exist');
    expect((vmprocError.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('refuses a missing rootfs', async () => {
    const missing = join(root, 'images/missing.ext4');
    const error = await rejectionOf(prepareLaunch(spec(boot, { rootfsPath: missing }), policy, defaults));
    expectVmprocError(error, 'failed-precondition', 'rootfs_path', missing, 'does not exist');
  });

  it('refuses a rootfs or kernel that is a directory', async () => {
    const dir = join(root, 'images/a-dir');
    expectVmprocError(
      await rejectionOf(prepareLaunch(spec(boot, { rootfsPath: dir }), policy, defaults)),
      'failed-precondition',
      'rootfs_path',
      'is not a regular file or block device',
    );
    expectVmprocError(
      await rejectionOf(prepareLaunch(spec(boot, { kernelPath: dir }), policy, defaults)),
      'failed-precondition',
      'kernel_path',
      'is not a regular file or block device',
    );
  });

  it('refuses a FIFO as rootfs (only regular files and block devices)', async () => {
    const fifo = join(root, 'images/a-fifo');
    execFileSync('mkfifo', [fifo]);
    expectVmprocError(
      await rejectionOf(prepareLaunch(spec(boot, { rootfsPath: fifo }), policy, defaults)),
      'failed-precondition',
      `rootfs_path ${fifo} is not a regular file or block device`,
    );
  });

  it('refuses a missing network namespace, saying how to create it', async () => {
    const error = await rejectionOf(prepareLaunch(spec(boot, { networkNamespace: 'ns-missing' }), policy, defaults));
    expectVmprocError(error, 'failed-precondition', 'network namespace ns-missing does not exist', join(root, 'netns/ns-missing'), 'ip netns add ns-missing');
  });

  it('looks for the network namespace in the configured netns dir', async () => {
    const elsewhere = { ...defaults, netnsDir: join(root, 'run') };
    expectVmprocError(await rejectionOf(prepareLaunch(spec(boot), policy, elsewhere)), 'failed-precondition', 'network namespace ns-1');
  });

  it('refuses a socket path whose directory is missing', async () => {
    const dir = join(root, 'no-such-dir');
    const error = await rejectionOf(prepareLaunch(spec(boot, { socketPath: `${dir}/x.sock` }), policy, defaults));
    expectVmprocError(error, 'failed-precondition', 'socket_path directory', dir, 'does not exist');
  });

  it('refuses a socket path whose directory is a file', async () => {
    const error = await rejectionOf(
      prepareLaunch(spec(boot, { socketPath: join(root, 'images/vmlinux/x.sock') }), policy, defaults),
    );
    expectVmprocError(error, 'failed-precondition', 'socket_path directory', 'is not a directory');
  });

  it('names the errno when the socket directory cannot be looked up for another reason', async () => {
    const error = await rejectionOf(
      prepareLaunch(spec(boot, { socketPath: join(root, 'images/vmlinux/sub/x.sock') }), policy, defaults),
    );
    expectVmprocError(error, 'failed-precondition', 'socket_path directory', 'cannot be read (ENOTDIR)');
  });

  it('refuses a missing restore directory, and a restore source that is a file', async () => {
    const missing = join(root, 'snap-missing');
    expectVmprocError(
      await rejectionOf(prepareLaunch(spec(restore, { restore: { ...restore.restore!, sourceUrl: `file://${missing}` } }), policy, defaults)),
      'failed-precondition',
      'restore.source_url',
      missing,
      'does not exist',
    );
    expectVmprocError(
      await rejectionOf(
        prepareLaunch(spec(restore, { restore: { ...restore.restore!, sourceUrl: `file://${join(root, 'snap-file')}` } }), policy, defaults),
      ),
      'failed-precondition',
      'restore.source_url',
      'is not a directory',
    );
  });

  it('reports the first failing check in a fixed order (rootfs before kernel)', async () => {
    const error = await rejectionOf(
      prepareLaunch(spec(boot, { rootfsPath: join(root, 'r-missing'), kernelPath: join(root, 'k-missing') }), policy, defaults),
    );
    expectVmprocError(error, 'failed-precondition', 'rootfs_path');
  });

  it('compares resolved paths: a sandbox_dir reached through a symlink may not cover the netns directory', async () => {
    // alias -> root, so <root>/alias/netns is the netns directory under another name.
    await symlink(root, join(root, 'alias'));
    const error = await rejectionOf(prepareLaunch(spec(boot, { sandboxDir: join(root, 'alias', 'netns') }), policy, defaults));
    expectVmprocError(error, 'invalid-argument', 'network namespace directory');
  });

  it('accepts a sandbox_dir that does not exist yet (the launch creates it)', async () => {
    await expect(prepareLaunch(spec(boot, { sandboxDir: join(root, 'not', 'yet', 'there') }), policy, defaults)).resolves.toMatchObject({ sandboxId: 'sb-1' });
  });
});
