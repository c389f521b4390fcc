/**
 * What the daemon's configuration makes its own files, which no request may name: beside its
 * listening sockets, state dir, logs and exit records, the run dir's exit sequence floor (and its
 * temp file), its binaries and its TLS files. Runs without root on a temp tree.
 */
import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DaemonConfig } from '../../src/daemon/config.js';
import { pathPolicyFor } from '../../src/daemon/daemon.js';
import type { PathPolicy } from '../../src/host/path-policy.js';
import { expectVmprocError, rejectionOf } from './support/errors.js';

let root: string;
let policy: PathPolicy;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'vmprocd-reserved-'));
  // One wide image root holding everything, as a careless operator might configure it.
  for (const dir of ['run', 'state', 'bin', 'tls']) await mkdir(join(root, dir));
  for (const file of ['bin/cloud-hypervisor', 'bin/vmprocd-reaper', 'tls/server.key', 'tls/server.crt', 'tls/ca.crt', 'run/exit-sequence-floor']) {
    await writeFile(join(root, file), 'x');
  }
  const config = {
    listen: [{ kind: 'unix', path: join(root, 'run/vmprocd.sock') }],
    vmmBin: join(root, 'bin/cloud-hypervisor'),
    reaperBin: join(root, 'bin/vmprocd-reaper'),
    runDir: join(root, 'run'),
    stateDir: join(root, 'state'),
    sandboxDir: join(root, 'run/sandbox'),
    imageRoots: [root],
    tls: { certPath: join(root, 'tls/server.crt'), keyPath: join(root, 'tls/server.key'), clientCaPath: join(root, 'tls/ca.crt') },
  } as unknown as DaemonConfig;
  policy = await pathPolicyFor(config);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

it.each(['run/exit-sequence-floor', 'run/exit-sequence-floor.tmp'])('no API socket may be the run dir\'s %s', async (file) => {
  expectVmprocError(await rejectionOf(policy.socket('socket_path', join(root, file))), 'permission-denied', 'socket_path', "the daemon's own");
});

it.each(['run/exit-sequence-floor', 'bin/cloud-hypervisor', 'bin/vmprocd-reaper', 'tls/server.key', 'tls/server.crt', 'tls/ca.crt'])(
  'no disk may be the daemon\'s %s, even under an image root',
  async (file) => {
    expectVmprocError(await rejectionOf(policy.image('rootfs_path', join(root, file), 'file')), 'permission-denied', 'rootfs_path', "the daemon's own");
  },
);

it('an ordinary file under the image root is still allowed', async () => {
  await writeFile(join(root, 'rootfs.ext4'), 'x');
  expect((await policy.image('rootfs_path', join(root, 'rootfs.ext4'), 'file')).path).toBe(join(root, 'rootfs.ext4'));
});
