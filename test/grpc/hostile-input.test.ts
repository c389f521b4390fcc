/**
 * Hostile requests against a root daemon (issue 8): every request that once turned the daemon
 * against its host, and a table of path attacks (symlinks out of an image root, `..`, the daemon's
 * own sockets and state, another sandbox's live socket through a directory alias, a `.lock` that
 * is someone else's file, snapshot sources and destinations outside the roots). Each is refused
 * with one precise code and a message naming the field.
 *
 * Around every case the host's file system outside the run dir is listed before and after (/,
 * /etc, /srv, /tmp's entries, the fixture minus its run dir): the request creates, removes and
 * changes nothing. Afterwards the daemon still answers on every listener it has (two unix
 * sockets, one of them where the installed defaults put it, loopback TCP and a unix metrics socket).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { lstatSync, readFileSync, statSync } from 'node:fs';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { AfterSnapshot, LaunchMode, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { sequenceFloorPath } from '../../src/host/run-layout.js';
import { type AuditTree, diffListings, listHost } from '../helpers/host-audit.js';
import { listenerAnswers } from '../helpers/listener-health.js';
import { describeAsRoot } from '../helpers/root.js';
import { expectRpcError, type StartInit, useGrpcSuite } from './support.js';

/**
 * /tmp is shared with other work on this machine, which fills and empties it all the time: there
 * the audit watches the names the requests aim at (and anything named after the daemon).
 */
const WATCHED_IN_TMP = /^(vmprocd|x\.sock|snap)/;

const VM = { vcpus: 1, memoryMib: 64n };

describeAsRoot('gRPC end to end: hostile input', () => {
  // The listeners, beside the harness's own d.sock: vmprocd.sock where the installed defaults put
  // it (in the run dir, so a default socket `<run-dir>/vmprocd.sock` would be it), a socket whose
  // name ends in `.lock` (so `<socket>.lock` of some socket_path would be it), loopback TCP, and
  // a unix metrics socket.
  const s = useGrpcSuite(async (fixture) => ({
    listen: [
      { kind: 'unix', path: join(fixture.root, 'd.sock') },
      { kind: 'unix', path: join(fixture.runDir, 'vmprocd.sock') },
      { kind: 'unix', path: join(fixture.runDir, 'ctl.sock.lock') },
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
    ],
    metricsListen: { kind: 'unix', path: join(fixture.runDir, 'vmprocd-metrics.sock') },
  }));

  let root: string;
  let runDir: string;
  let images: string;
  let trees: AuditTree[];

  beforeAll(async () => {
    root = s.fixture.root;
    runDir = s.fixture.runDir;
    images = join(root, 'images');
    await mkdir(images);
    // A hostile image root: symlinks out of it, a block device, a FIFO, a directory.
    await symlink('/etc/shadow', join(images, 'shadow-link'));
    await symlink('/etc', join(images, 'etc-link'));
    await symlink(runDir, join(images, 'run-link'));
    await symlink(join(root, 'state'), join(images, 'state-link'));
    await symlink('/proc/self/root/etc/passwd', join(images, 'proc-link'));
    await execa('mknod', [join(images, 'loop-dev'), 'b', '7', '0']);
    await execa('mkfifo', [join(images, 'fifo')]);
    await mkdir(join(images, 'a-dir'));
    // Aliases of the run dir: one inside it, one outside.
    await symlink(runDir, join(runDir, 'alias'));
    await symlink(runDir, join(root, 'run-alias'));
    await symlink('/etc', join(runDir, 'etc-alias'));
    trees = [
      { path: '/', depth: 1, exclude: ['/tmp', '/proc', '/sys', '/dev', '/run'] },
      { path: '/etc', depth: Infinity },
      { path: '/srv', depth: Infinity },
      { path: '/tmp', depth: 1, only: WATCHED_IN_TMP },
      // The journal is the daemon's: a start refused once its launch was recorded records that too.
      { path: root, depth: Infinity, exclude: [runDir, join(root, 'state', 'state.journal')] },
    ];
  });

  /**
   * Runs `call` between two listings of the host: nothing may differ. Then every listener answers.
   * Returns what the call returned or threw.
   */
  async function audited<T>(call: () => Promise<T>): Promise<T> {
    const before = await listHost(trees);
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: await call() };
    } catch (error) {
      outcome = { ok: false, error };
    }
    expect(diffListings(before, await listHost(trees))).toEqual([]);
    expect(Object.values(await listenerAnswers(s.harness.daemon)).filter((answer) => answer !== 'SERVING' && answer !== '200')).toEqual([]);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  /** A refused request, audited: exactly `code`, the message naming each fragment. */
  async function refused(call: () => Promise<unknown>, code: status, ...fragments: string[]): Promise<void> {
    await audited(() => expectRpcError(call(), code, ...fragments));
  }

  it('the audit sees what a request would do (a control: a file made in /srv is reported)', async () => {
    const before = await listHost(trees);
    await writeFile('/srv/vmprocd-audit-control', 'x');
    try {
      expect(diffListings(before, await listHost(trees))).toEqual([
        expect.stringMatching(/^changed \/srv: dir /),
        expect.stringMatching(/^created \/srv\/vmprocd-audit-control /),
      ]);
    } finally {
      await rm('/srv/vmprocd-audit-control', { force: true });
    }
    expect(Object.keys(await listenerAnswers(s.harness.daemon))).toHaveLength(5);
  });

  // ----------------------------------------------------------------------------------------------
  // StartProcess: every host path it names
  // ----------------------------------------------------------------------------------------------

  type Case = [name: string, mutate: (base: StartInit) => StartInit, code: status, fragments: string[]];
  const r = () => root;
  const run = () => runDir;
  const img = () => images;
  const startCases: Case[] = [
    // The reproductions.
    ['socket_path = the daemon\'s own listen socket in the run dir', (b) => ({ ...b, socketPath: `${run()}/vmprocd.sock` }), status.PERMISSION_DENIED,
      ['socket_path', 'vmprocd.sock', "the daemon's own"]],
    ['sandbox_id "vmprocd": its default socket is the daemon\'s', (b) => ({ ...b, sandboxId: 'vmprocd' }), status.PERMISSION_DENIED,
      ['socket_path', '/run/vmprocd.sock', "the daemon's own"]],
    ['sandbox_id "vmprocd-metrics": its default socket is the metrics socket', (b) => ({ ...b, sandboxId: 'vmprocd-metrics' }), status.PERMISSION_DENIED,
      ['socket_path', 'vmprocd-metrics.sock', "the daemon's own"]],
    ['rootfs_path /etc/shadow', (b) => ({ ...b, rootfsPath: '/etc/shadow' }), status.PERMISSION_DENIED,
      ['rootfs_path /etc/shadow', 'outside the image roots']],
    ['kernel_path /etc/passwd', (b) => ({ ...b, kernelPath: '/etc/passwd' }), status.PERMISSION_DENIED,
      ['kernel_path /etc/passwd', 'outside the image roots']],
    ['socket_path in /etc', (b) => ({ ...b, socketPath: '/etc/vmprocd-evil.sock' }), status.PERMISSION_DENIED,
      ['socket_path /etc/vmprocd-evil.sock', 'outside the socket roots']],
    ['sandbox_dir outside every root (it would be created)', (b) => ({ ...b, sandboxDir: '/srv/newdir/x' }), status.PERMISSION_DENIED,
      ['sandbox_dir /srv/newdir/x', 'neither the configured sandbox dir nor under a sandbox root']],
    // Symlinks out of an image root.
    ['rootfs_path a symlink in an image root to /etc/shadow', (b) => ({ ...b, rootfsPath: `${img()}/shadow-link` }), status.PERMISSION_DENIED,
      ['rootfs_path', 'resolves to /etc/shadow', 'outside the image roots']],
    ['kernel_path through a symlinked directory to /etc', (b) => ({ ...b, kernelPath: `${img()}/etc-link/passwd` }), status.PERMISSION_DENIED,
      ['kernel_path', 'resolves to /etc/passwd']],
    ['rootfs_path through /proc/self/root', (b) => ({ ...b, rootfsPath: `${img()}/proc-link` }), status.PERMISSION_DENIED,
      ['rootfs_path', 'resolves to /etc/passwd']],
    ['vm.disks[0].path a symlink to /etc/shadow', (b) => ({ ...b, vm: { ...VM, disks: [{ id: 'd0', path: `${img()}/shadow-link` }] } }), status.PERMISSION_DENIED,
      ['vm.disks[0].path', 'resolves to /etc/shadow']],
    ['vm.initramfs_path /etc/shadow', (b) => ({ ...b, vm: { ...VM, initramfsPath: '/etc/shadow' } }), status.PERMISSION_DENIED,
      ['vm.initramfs_path /etc/shadow']],
    // `..`
    ['rootfs_path climbing out with ..', (b) => ({ ...b, rootfsPath: `${img()}/../../../etc/shadow` }), status.PERMISSION_DENIED,
      ['rootfs_path', '/etc/shadow', 'outside the image roots']],
    ['socket_path climbing out of the run dir with ..', (b) => ({ ...b, socketPath: `${run()}/../../../etc/x.sock` }), status.PERMISSION_DENIED,
      ['socket_path', '/etc/x.sock', 'outside the socket roots']],
    ['socket_path back onto the listen socket with ..', (b) => ({ ...b, socketPath: `${run()}/logs/../vmprocd.sock` }), status.PERMISSION_DENIED,
      ['socket_path', "the daemon's own"]],
    // The daemon's own files, inside an image root (the fixture's root is one).
    ['kernel_path = the daemon\'s listen socket', (b) => ({ ...b, kernelPath: `${r()}/d.sock` }), status.PERMISSION_DENIED,
      ['kernel_path', 'd.sock', "the daemon's own"]],
    ['rootfs_path = the state journal', (b) => ({ ...b, rootfsPath: `${r()}/state/state.journal` }), status.PERMISSION_DENIED,
      ['rootfs_path', 'state.journal', "the daemon's own"]],
    ['rootfs_path = the state lock, through an image-root symlink', (b) => ({ ...b, rootfsPath: `${img()}/state-link/vmprocd.lock` }), status.PERMISSION_DENIED,
      ['rootfs_path', 'vmprocd.lock', "the daemon's own"]],
    ['vm.disks[0].path = another sandbox\'s VMM log', (b) => ({ ...b, vm: { ...VM, disks: [{ id: 'd0', path: `${img()}/run-link/logs/live-a-1.log` }] } }),
      status.PERMISSION_DENIED, ['vm.disks[0].path', 'logs/live-a-1.log', "the daemon's own"]],
    ['socket_path in the daemon\'s exit records', (b) => ({ ...b, socketPath: `${run()}/exits/x.sock` }), status.PERMISSION_DENIED,
      ['socket_path', 'exits/x.sock', "the daemon's own"]],
    ['socket_path whose .lock would be the daemon\'s socket', (b) => ({ ...b, socketPath: `${run()}/ctl.sock` }), status.PERMISSION_DENIED,
      ['socket_path', 'ctl.sock.lock', "the daemon's own"]],
    ['socket_path = the exit sequence floor', (b) => ({ ...b, socketPath: sequenceFloorPath(run()) }), status.PERMISSION_DENIED,
      ['socket_path', 'exit-sequence-floor', "the daemon's own"]],
    ['socket_path = the exit sequence floor\'s temp file', (b) => ({ ...b, socketPath: `${sequenceFloorPath(run())}.tmp` }), status.PERMISSION_DENIED,
      ['socket_path', 'exit-sequence-floor.tmp', "the daemon's own"]],
    ['sandbox_dir = the state dir', (b) => ({ ...b, sandboxDir: `${r()}/state` }), status.PERMISSION_DENIED,
      ['sandbox_dir', '/state', 'neither the configured sandbox dir']],
    // Aliases of directories.
    ['socket_path in /etc through a symlinked directory in the run dir', (b) => ({ ...b, socketPath: `${run()}/etc-alias/x.sock` }), status.PERMISSION_DENIED,
      ['socket_path', 'resolves to /etc/x.sock', 'outside the socket roots']],
    ['socket_path = the listen socket through a directory alias', (b) => ({ ...b, socketPath: `${r()}/run-alias/vmprocd.sock` }), status.PERMISSION_DENIED,
      ['socket_path', 'resolves to /tmp/', '/run/vmprocd.sock', "the daemon's own"]],
    // What is at the path is not what it claims to be.
    ['rootfs_path a block device under an image root', (b) => ({ ...b, rootfsPath: `${img()}/loop-dev` }), status.PERMISSION_DENIED,
      ['rootfs_path', 'is a block device', '--allow-block-devices']],
    ['rootfs_path a block device outside the roots', (b) => ({ ...b, rootfsPath: '/dev/loop0' }), status.PERMISSION_DENIED,
      ['rootfs_path /dev/loop0', 'outside the image roots']],
    ['rootfs_path a FIFO (the VMM would block opening it)', (b) => ({ ...b, rootfsPath: `${img()}/fifo` }), status.FAILED_PRECONDITION,
      ['rootfs_path', 'is not a regular file or block device']],
    ['kernel_path a directory', (b) => ({ ...b, kernelPath: `${img()}/a-dir` }), status.FAILED_PRECONDITION,
      ['kernel_path', 'is not a regular file']],
    ['socket_path a symlink in the run dir to /etc/passwd', (b) => ({ ...b, socketPath: `${run()}/passwd-link.sock` }), status.FAILED_PRECONDITION,
      ['socket_path', 'exists and is not a socket']],
    ['socket_path a regular file in the run dir', (b) => ({ ...b, socketPath: `${run()}/notes.sock` }), status.FAILED_PRECONDITION,
      ['socket_path', 'exists and is not a socket']],
    // Durations.
    ['ready_timeout of 30 days', (b) => ({ ...b, readyTimeout: { seconds: 2_592_000n } }), status.INVALID_ARGUMENT, ['ready_timeout', 'at most 600s']],
    ['ready_timeout of 2^63-1 s', (b) => ({ ...b, readyTimeout: { seconds: 9_223_372_036_854_775_807n } }), status.INVALID_ARGUMENT, ['ready_timeout']],
  ];

  describe('StartProcess', () => {
    let liveSocket: string;
    beforeAll(async () => {
      // A live sandbox whose files the attacks aim at.
      const live = (await s.startBoot('live-a-1')).process!;
      liveSocket = live.socketPath;
      await symlink('/etc/passwd', join(runDir, 'passwd-link.sock'));
      await writeFile(join(runDir, 'notes.sock'), 'someone\'s notes\n');
    });
    afterAll(() => s.stopLive());

    it.each(startCases)('%s', async (_name, mutate, code, fragments) => {
      const base = await s.bootRequest(s.id('hostile'));
      const request = mutate(base);
      await refused(() => s.client.startProcess(request), code, ...fragments);
      await expectRpcError(s.client.getProcess({ sandboxId: request.sandboxId! }), status.NOT_FOUND);
      expect(s.recorder.exitsOf(request.sandboxId!)).toEqual([]);
    });

    it('another sandbox\'s live socket, through a symlinked directory, is refused and keeps its inode', async () => {
      const before = statSync(liveSocket);
      for (const alias of [`${runDir}/alias/live-a-1.sock`, `${root}/run-alias/live-a-1.sock`, `${images}/run-link/live-a-1.sock`]) {
        const request = { ...(await s.bootRequest(s.id('alias'))), socketPath: alias };
        await refused(() => s.client.startProcess(request), status.FAILED_PRECONDITION, 'socket_path', 'belongs to sandbox live-a-1');
      }
      const after = statSync(liveSocket);
      expect({ ino: after.ino, ctime: after.ctimeMs }).toEqual({ ino: before.ino, ctime: before.ctimeMs });
      expect((await s.client.getProcess({ sandboxId: 'live-a-1' })).process!.state).toBe(ProcessState.RUNNING);
    });

    const lockCases: Array<[string, (lockPath: string) => Promise<void>, string]> = [
      ['a file with someone\'s data', (lock) => writeFile(lock, 'precious\n'), 'a file of 9 bytes'],
      ['a symlink to /etc/passwd', (lock) => symlink('/etc/passwd', lock), 'a symlink'],
      ['a directory', (lock) => mkdir(lock), 'a directory'],
    ];
    it.each(lockCases)('a <socket>.lock that is %s is refused and left as it was', async (_what, make, described) => {
      const id = s.id('lock');
      const socketPath = `${runDir}/${id}.sock`;
      await make(`${socketPath}.lock`);
      const before = fileIdentity(`${socketPath}.lock`);
      const request = await s.bootRequest(id);
      await refused(() => s.client.startProcess(request), status.FAILED_PRECONDITION, `${socketPath}.lock`, "is not Cloud Hypervisor's lock file", described);
      expect(fileIdentity(`${socketPath}.lock`)).toEqual(before);
      await rm(`${socketPath}.lock`, { recursive: true });
    });

    it('an empty <socket>.lock someone made before the VMM outlives the VMM', async () => {
      const id = s.id('prelock');
      const lock = `${runDir}/${id}.sock.lock`;
      await writeFile(lock, '');
      const before = fileIdentity(lock);
      const request = await s.bootRequest(id);
      await audited(async () => {
        await s.client.startProcess(request);
        await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } });
      });
      expect(fileIdentity(lock)).toEqual(before);
      await rm(lock);
    });
  });

  // ----------------------------------------------------------------------------------------------
  // StopProcess, restore and snapshot paths
  // ----------------------------------------------------------------------------------------------

  describe('StopProcess', () => {
    it.each([
      ['30 days', { seconds: 2_592_000n }],
      ['an hour and a nanosecond', { seconds: 3600n, nanos: 1 }],
      ['2^63-1 s', { seconds: 9_223_372_036_854_775_807n }],
      ['a negative one', { seconds: -1n }],
    ])('a grace_period of %s is INVALID_ARGUMENT and the VMM keeps running', async (_what, gracePeriod) => {
      const id = s.id('grace');
      await s.startBoot(id, { ignore_sigterm: 1 });
      await refused(() => s.client.stopProcess({ sandboxId: id, gracePeriod }), status.INVALID_ARGUMENT, 'grace_period');
      expect((await s.client.getProcess({ sandboxId: id })).process!.state).toBe(ProcessState.RUNNING);
      await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } });
    });
  });

  describe('restore sources', () => {
    const restoreCases: Array<[string, () => string, status, string[]]> = [
      ['/etc', () => 'file:///etc', status.PERMISSION_DENIED, ['restore.source_url', 'outside the image roots']],
      ['a symlink in an image root to /etc', () => `file://${images}/etc-link`, status.PERMISSION_DENIED, ['restore.source_url', 'resolves to /etc']],
      ['.. out of an image root', () => `file://${images}/../../../etc`, status.PERMISSION_DENIED, ['restore.source_url', '/etc']],
      ['the state dir', () => `file://${root}/state`, status.PERMISSION_DENIED, ['restore.source_url', "the daemon's own"]],
      ['the exit records, through an image-root symlink', () => `file://${images}/run-link/exits`, status.PERMISSION_DENIED, ['restore.source_url', "the daemon's own"]],
      ['a file, not a directory', () => `file://${s.fixture.kernelPath}`, status.FAILED_PRECONDITION, ['restore.source_url', 'is not a directory']],
    ];
    it.each(restoreCases)('restore.source_url %s is refused', async (_what, url, code, fragments) => {
      const id = s.id('restore');
      const request: StartInit = {
        sandboxId: id,
        mode: LaunchMode.RESTORE,
        rootfsPath: await s.fixture.rootfs(id),
        networkNamespace: s.netns.name,
        restore: { sourceUrl: url() },
      };
      await refused(() => s.client.startProcess(request), code, ...fragments);
      await expectRpcError(s.client.getProcess({ sandboxId: id }), status.NOT_FOUND);
    });
  });

  describe('snapshot destinations', () => {
    const vmId = 'snapper-1';
    beforeAll(async () => {
      await s.startBoot(vmId, {}, { vm: VM });
    });
    afterAll(() => s.stopLive());

    const snapshotCases: Array<[string, () => string, status, string[]]> = [
      ['/etc/snap', () => 'file:///etc/vmprocd-snap', status.PERMISSION_DENIED, ['destination_url', 'outside the image roots']],
      ['/tmp (outside the roots)', () => 'file:///tmp/vmprocd-snap', status.PERMISSION_DENIED, ['destination_url', 'outside the image roots']],
      ['in /etc through an image-root symlink', () => `file://${images}/etc-link/vmprocd-snap`, status.PERMISSION_DENIED, ['destination_url', 'resolves to /etc']],
      ['.. out of an image root', () => `file://${images}/../../../etc/vmprocd-snap`, status.PERMISSION_DENIED, ['destination_url', 'outside the image roots']],
      ['in the state dir', () => `file://${root}/state/snap`, status.PERMISSION_DENIED, ['destination_url', "the daemon's own"]],
      ['in the logs, through an image-root symlink', () => `file://${images}/run-link/logs/snap`, status.PERMISSION_DENIED, ['destination_url', "the daemon's own"]],
      ['in the sandbox dir', () => `file://${s.fixture.sandboxDir}/snap`, status.PERMISSION_DENIED, ['destination_url', 'sandbox dir']],
      ['an existing directory', () => `file://${images}/a-dir`, status.FAILED_PRECONDITION, ['destination_url', 'already exists']],
      ['a parent that does not exist', () => `file://${images}/nope/snap`, status.FAILED_PRECONDITION, ['destination_url', 'does not exist']],
      ['not a file:// URL', () => 'http://example.com/snap', status.INVALID_ARGUMENT, ['destination_url', 'must be a file:// URL']],
    ];
    it.each(snapshotCases)('SnapshotVm to %s is refused and the VM runs on', async (_what, url, code, fragments) => {
      await refused(() => s.client.snapshotVm({ sandboxId: vmId, destinationUrl: url(), afterSnapshot: AfterSnapshot.RESUME }), code, ...fragments);
      expect((await s.client.getProcess({ sandboxId: vmId })).process!.state).toBe(ProcessState.RUNNING);
    });

    it('a snapshot into an image root is made there, and only there (the control)', async () => {
      const response = await s.client.snapshotVm({ sandboxId: vmId, destinationUrl: `file://${images}/snap-ok`, afterSnapshot: AfterSnapshot.RESUME });
      expect(response.snapshotUrl).toBe(`file://${images}/snap-ok`);
      expect(statSync(`${images}/snap-ok`).isDirectory()).toBe(true);
    });
  });

  describe('other requests', () => {
    it.each([
      ['ListProcesses with page_size 1001', () => s.client.listProcesses({ pageSize: 1001 }), status.INVALID_ARGUMENT, ['page_size']],
      ['ListProcesses with a forged page_token', () => s.client.listProcesses({ pageToken: '../../etc/shadow' }), status.INVALID_ARGUMENT, ['page_token']],
      ['SignalProcess with a signal that is not one', () => s.client.signalProcess({ sandboxId: 'live-a-1', signal: 'SIGNOTHING' }), status.INVALID_ARGUMENT, ['signal', 'SIGNOTHING']],
      ['GetProcess of a path', () => s.client.getProcess({ sandboxId: '../../etc/shadow' }), status.NOT_FOUND, ['../../etc/shadow']],
      ['StreamLogs of a path', () => readAll(s.client.streamLogs({ sandboxId: '../state/state.journal' })), status.NOT_FOUND, ['../state/state.journal']],
    ] as Array<[string, () => Promise<unknown>, status, string[]]>)('%s', async (_what, call, code, fragments) => {
      await refused(call, code, ...fragments);
    });
  });
});

async function readAll(stream: AsyncIterable<unknown>): Promise<unknown[]> {
  const items: unknown[] = [];
  for await (const item of stream) items.push(item);
  return items;
}

/** What is at `path` (not following a symlink): a refused request must leave it exactly so. */
function fileIdentity(path: string): { ino: number; size: number; mtime: number; content: string } {
  const stats = lstatSync(path);
  return { ino: stats.ino, size: stats.size, mtime: stats.mtimeMs, content: stats.isFile() ? readFileSync(path, 'utf8') : '' };
}
