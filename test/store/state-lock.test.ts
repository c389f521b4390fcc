/**
 * lockStateDir with the real `vmprocd-reaper --lock` (needs `npm run build`, not root): one holder
 * per state directory, what it refuses, what it holds, and how it ends. The daemon-level behaviour
 * (a second daemon, SIGKILL, a lost holder) is in test/recovery/state-lock.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VmprocError } from '../../src/errors.js';
import { nativeBin } from '../../src/package-paths.js';
import { lockFileOf, lockStateDir, type StateLock } from '../../src/store/state-lock.js';
import { expectVmprocError, rejectionOf } from '../unit/support/errors.js';
import { eventually, WAIT_MS } from '../helpers/wait.js';

const REAPER = nativeBin('vmprocd-reaper');

let root: string;
let stateDir: string;
const held: StateLock[] = [];

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'vmprocd-lock-'));
  stateDir = join(root, 'state');
});

afterEach(async () => {
  for (const lock of held.splice(0)) await lock.release();
  await rm(root, { recursive: true, force: true });
});

async function lock(dir = stateDir): Promise<StateLock> {
  const taken = await lockStateDir(dir, REAPER);
  held.push(taken);
  return taken;
}

/** True while `pid` exists and is not a zombie. */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

describe('lockStateDir', () => {
  it('creates the state dir (0700) and a 0600 lock file, writes vmprocd.pid, and holds the lock in a child with nothing else open', async () => {
    const taken = await lock();
    expect(((await lstat(stateDir)).mode & 0o7777).toString(8)).toBe('700');
    const file = await lstat(lockFileOf(stateDir));
    expect({ file: file.isFile(), mode: (file.mode & 0o7777).toString(8), uid: file.uid }).toEqual({ file: true, mode: '600', uid: process.getuid!() });
    expect(await readFile(join(stateDir, 'vmprocd.pid'), 'utf8')).toBe(`${process.pid}\n`);
    const fds = await readdir(`/proc/${taken.holderPid}/fd`);
    expect(fds.sort()).toEqual(['0', '1', '2', '3']);
    expect(await readlink(`/proc/${taken.holderPid}/fd/2`)).toBe('/dev/null');
    expect(await readlink(`/proc/${taken.holderPid}/fd/3`)).toBe(lockFileOf(stateDir));
  });

  it('refuses a second lock on the same directory with the message operators know, until the first is released', async () => {
    const first = await lock();
    expectVmprocError(
      await rejectionOf(lockStateDir(stateDir, REAPER)),
      'failed-precondition',
      `another vmprocd is already using the state directory ${stateDir} (see ${join(stateDir, 'vmprocd.pid')})`,
      'stop it first, or give this one its own --state-dir',
    );
    held.splice(held.indexOf(first), 1);
    await first.release();
    expect(isRunning(first.holderPid)).toBe(false);
    await lock();
  });

  it('makes a second holder run by hand answer busy and exit 1 at once', async () => {
    await lock();
    const second = spawnSync(REAPER, ['--lock', lockFileOf(stateDir)], { input: '', encoding: 'utf8', timeout: WAIT_MS });
    expect({ stdout: second.stdout, status: second.status }).toEqual({ stdout: 'busy\n', status: 1 });
  });

  it('refuses a symlink (followed nowhere), a FIFO and a directory at vmprocd.lock', async () => {
    await mkdir(stateDir, { mode: 0o700 });
    const lockFile = lockFileOf(stateDir);
    await symlink(join(root, 'elsewhere'), lockFile);
    expectVmprocError(await rejectionOf(lockStateDir(stateDir, REAPER)), 'failed-precondition', `cannot lock the state directory ${stateDir}: ${lockFile} is a symbolic link`);
    expect(existsSync(join(root, 'elsewhere'))).toBe(false);
    expect(existsSync(join(stateDir, 'vmprocd.pid'))).toBe(false);

    await rm(lockFile);
    execFileSync('mkfifo', [lockFile]);
    expectVmprocError(await rejectionOf(lockStateDir(stateDir, REAPER)), 'failed-precondition', `${lockFile} is not a regular file`);

    await rm(lockFile);
    await mkdir(lockFile);
    expectVmprocError(await rejectionOf(lockStateDir(stateDir, REAPER)), 'failed-precondition', `cannot open ${lockFile}`);
  });

  it('tightens an existing lock file to 0600 and keeps its content', async () => {
    await mkdir(stateDir, { mode: 0o700 });
    await writeFile(lockFileOf(stateDir), 'left by hand\n', { mode: 0o666 });
    await lock();
    expect(((await lstat(lockFileOf(stateDir))).mode & 0o7777).toString(8)).toBe('600');
    expect(await readFile(lockFileOf(stateDir), 'utf8')).toBe('left by hand\n');
  });

  it('a reaper binary that cannot run is failed-precondition naming it', async () => {
    const missing = join(root, 'no-such-reaper');
    expectVmprocError(await rejectionOf(lockStateDir(stateDir, missing)), 'failed-precondition', `cannot run ${missing} --lock`);
  });

  it('ignores SIGINT, SIGHUP and SIGTERM (meant for the daemon), and tells of a holder that dies anyway', async () => {
    const taken = await lock();
    const lost: VmprocError[] = [];
    taken.onLost((error) => lost.push(error));
    // Ignored, not handled: the kernel drops them (SigIgn has bits 1, 2 and 15 set).
    const sigIgn = BigInt(`0x${/^SigIgn:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${taken.holderPid}/status`, 'utf8'))![1]}`);
    expect([1n, 2n, 15n].map((signal) => (sigIgn >> (signal - 1n)) & 1n)).toEqual([1n, 1n, 1n]);
    for (const signal of ['SIGINT', 'SIGHUP', 'SIGTERM'] as const) process.kill(taken.holderPid, signal);
    // Still holding: a second lock is refused.
    await expect(lockStateDir(stateDir, REAPER)).rejects.toThrow('another vmprocd is already using');
    expect(lost).toEqual([]);

    process.kill(taken.holderPid, 'SIGKILL');
    await eventually(() => lost.length === 1, WAIT_MS);
    expectVmprocError(lost[0], 'unavailable', `the holder of the state directory lock ${lockFileOf(stateDir)} (pid ${taken.holderPid}) ended (SIGKILL)`, 'the lock is lost');
    // release() of a lost lock resolves at once, and the directory is free.
    await taken.release();
    held.splice(held.indexOf(taken), 1);
    await lock();
  });

  it('does not report a released lock as lost', async () => {
    const taken = await lock();
    const lost: VmprocError[] = [];
    taken.onLost((error) => lost.push(error));
    held.splice(held.indexOf(taken), 1);
    await taken.release();
    expect(isRunning(taken.holderPid)).toBe(false);
    expect(lost).toEqual([]);
  });
});
