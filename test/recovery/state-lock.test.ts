/**
 * One daemon per state directory: a second one exits non-zero with a clear message while the
 * first keeps serving; once the first is SIGKILLed (its VMMs and reapers still running), a new
 * one takes over at once: no stale lock, no stale listen socket.
 *
 * The lock is an OFD lock on <state-dir>/vmprocd.lock held by `vmprocd-reaper --lock`, a child of
 * the daemon: nobody else can take it (a stranger on the abstract socket name of old blocks
 * nothing), it refuses a symlink, and it ends with its daemon however the daemon ends. A daemon
 * whose holder dies stops itself with a fatal error, leaving its VMMs running.
 */
import { expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import { getProcess, isAlive, parentOf, processesMentioning, RPC_MS, useRecoverySuite, waitGone, WAIT_MS } from './support.js';

/** The daemon's lock holder: its child whose argv names the lock file. */
async function lockHolderOf(daemon: DaemonProcess, stateDir: string): Promise<number> {
  const lockFile = join(stateDir, 'vmprocd.lock');
  const holders: number[] = [];
  for (const pid of await processesMentioning(lockFile)) {
    if ((await parentOf(pid)) === daemon.pid) holders.push(pid);
  }
  expect(holders).toHaveLength(1);
  return holders[0]!;
}

/** What the holder has open, by descriptor number: where each points. */
async function openFilesOf(pid: number): Promise<Record<string, string>> {
  const fds: Record<string, string> = {};
  for (const fd of await readdir(`/proc/${pid}/fd`)) fds[fd] = await readlink(`/proc/${pid}/fd/${fd}`);
  return fds;
}

describeAsRoot('recovery: the state directory lock', () => {
  const suite = useRecoverySuite();

  it('refuses a second daemon on the same state directory, and frees the lock when the first is SIGKILLed', async () => {
    const first = await suite.startDaemon();
    const pid = (await first.client().startProcess(await suite.bootRequest('locked'), { timeoutMs: RPC_MS })).process!.pid;
    const pidFile = join(suite.stateDir, 'vmprocd.pid');
    expect((await readFile(pidFile, 'utf8')).trim()).toBe(String(first.pid));

    // A 0600 regular file of root's, held by a child that has nothing else open.
    const lockFile = join(suite.stateDir, 'vmprocd.lock');
    const lockStat = await lstat(lockFile);
    expect({ file: lockStat.isFile(), mode: (lockStat.mode & 0o7777).toString(8), uid: lockStat.uid }).toEqual({ file: true, mode: '600', uid: 0 });
    const holder = await lockHolderOf(first, suite.stateDir);
    const fds = await openFilesOf(holder);
    expect(Object.keys(fds).sort()).toEqual(['0', '1', '2', '3']);
    expect({ stderr: fds['2'], lock: fds['3'] }).toEqual({ stderr: '/dev/null', lock: lockFile });
    // Its stdin and stdout: the daemon's end of each (libuv makes them socket pairs).
    expect(fds['0']).toMatch(/^(pipe|socket):/);
    expect(fds['1']).toMatch(/^(pipe|socket):/);

    const otherSocket = join(suite.fixture.root, 'e.sock');
    const second = suite.launchDaemon({ socketPath: otherSocket });
    const exit = await second.waitExit(15_000);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(second.output).toContain(`another vmprocd is already using the state directory ${suite.stateDir}`);
    expect(second.output).toContain('stop it first, or give this one its own --state-dir');
    expect(second.servingLine).toBeUndefined();
    expect(existsSync(otherSocket)).toBe(false);

    // The first one never noticed.
    expect(first.exit).toBeUndefined();
    expect(ProcessState[(await getProcess(first.client(), 'locked')).state]).toBe('RUNNING');
    expect((await readFile(pidFile, 'utf8')).trim()).toBe(String(first.pid));
    expect(await isAlive(holder)).toBe(true);

    // SIGKILL: the VMM and its reaper (children of the dead daemon once) live on; the lock must not.
    const reaper = (await parentOf(pid))!;
    await first.kill('SIGKILL');
    expect(await isAlive(pid)).toBe(true);
    expect(await isAlive(reaper)).toBe(true);
    expect(existsSync(first.socketPath)).toBe(true); // stale: the next daemon must cope
    await waitGone(holder);

    const third = await suite.startDaemon();
    expect(third.servingLine!.readopted).toBe(1);
    expect((await readFile(pidFile, 'utf8')).trim()).toBe(String(third.pid));
    const info = await getProcess(third.client(), 'locked');
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid });

    // A clean stop leaves no listen socket and no lock holder either.
    const thirdHolder = await lockHolderOf(third, suite.stateDir);
    await third.client().stopProcess({ sandboxId: 'locked', gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS });
    expect((await third.stop()).code).toBe(0);
    expect(existsSync(third.socketPath)).toBe(false);
    expect(await isAlive(thirdHolder)).toBe(false);
    expect(await processesMentioning(lockFile)).toEqual([]);
  });

  it('is not blocked by a stranger holding the abstract socket name the lock used to be, and tightens a loose lock file to 0600', async () => {
    const stateDir = join(suite.fixture.root, 'state-stranger');
    await mkdir(stateDir, { mode: 0o700 });
    await writeFile(join(stateDir, 'vmprocd.lock'), '', { mode: 0o666 });
    const { dev, ino } = await stat(stateDir);
    const stranger: Server = createServer();
    await new Promise<void>((resolve, reject) => {
      stranger.once('error', reject);
      stranger.listen(`\0vmprocd-state:${dev}:${ino}`, () => resolve());
    });
    try {
      const daemon = await suite.startDaemon({ stateDir });
      expect(((await lstat(join(stateDir, 'vmprocd.lock'))).mode & 0o7777).toString(8)).toBe('600');
      expect((await daemon.stop()).code).toBe(0);
    } finally {
      await new Promise<void>((resolve) => stranger.close(() => resolve()));
    }
  });

  it('refuses a symlink at vmprocd.lock, touching neither it nor what it names', async () => {
    const stateDir = join(suite.fixture.root, 'state-symlink');
    await mkdir(stateDir, { mode: 0o700 });
    const lockFile = join(stateDir, 'vmprocd.lock');

    // A link to an existing file: the file keeps its mode and content.
    const target = join(suite.fixture.root, 'precious');
    await writeFile(target, 'precious\n', { mode: 0o644 });
    await symlink(target, lockFile);
    const refused = suite.launchDaemon({ stateDir, socketPath: join(suite.fixture.root, 'l1.sock') });
    const exit = await refused.waitExit(15_000);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(refused.servingLine).toBeUndefined();
    expect(refused.output).toContain(`cannot lock the state directory ${stateDir}: ${lockFile} is a symbolic link`);
    expect(await readFile(target, 'utf8')).toBe('precious\n');
    expect(((await stat(target)).mode & 0o7777).toString(8)).toBe('644');
    expect((await lstat(lockFile)).isSymbolicLink()).toBe(true);

    // A dangling link: what it names is not created.
    await rm(lockFile);
    const nowhere = join(suite.fixture.root, 'nowhere');
    await symlink(nowhere, lockFile);
    const dangling = suite.launchDaemon({ stateDir, socketPath: join(suite.fixture.root, 'l2.sock') });
    expect((await dangling.waitExit(15_000)).code).not.toBe(0);
    expect(dangling.output).toContain(`${lockFile} is a symbolic link`);
    expect(existsSync(nowhere)).toBe(false);
    expect(existsSync(join(stateDir, 'vmprocd.pid'))).toBe(false);
  });

  it('stops the daemon with a fatal error, exit code non-zero, when its lock holder dies; its VMMs keep running', async () => {
    const stateDir = join(suite.fixture.root, 'state-lost');
    const daemon = await suite.startDaemon({ stateDir });
    const pid = (await daemon.client().startProcess(await suite.bootRequest('orphaned'), { timeoutMs: RPC_MS })).process!.pid;
    const holder = await lockHolderOf(daemon, stateDir);
    process.kill(holder, 'SIGKILL');
    const exit = await daemon.waitExit(WAIT_MS);
    expect(exit).toEqual({ code: 1, signal: null });
    const fatal = daemon.logs.find((l) => l.level === 60);
    expect(fatal?.msg).toContain(`the holder of the state directory lock ${join(stateDir, 'vmprocd.lock')} (pid ${holder}) ended (SIGKILL)`);
    expect(await isAlive(pid)).toBe(true);

    // The next daemon takes the directory and the VMM over (and afterAll stops it).
    const next = await suite.startDaemon({ stateDir });
    expect(next.servingLine!.readopted).toBe(1);
  });
});
