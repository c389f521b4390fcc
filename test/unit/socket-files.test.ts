/**
 * A VMM's socket and Cloud Hypervisor's `<socket>.lock`: claimed before the launch, recorded by
 * identity once the VMM answers, and at exit only what the VMM made is removed.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { claimSocket, releaseSocket, socketFilesOf } from '../../src/host/socket-files.js';
import { expectVmprocError, rejectionOf } from './support/errors.js';

let dir: string;
let n = 0;
const servers: Server[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmprocd-sockets-'));
});

afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  await rm(dir, { recursive: true, force: true });
});

const path = () => join(dir, `s${++n}.sock`);

async function listen(socketPath: string): Promise<Server> {
  const server = createServer();
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return server;
}

/** A socket file nothing listens on any more: what a SIGKILLed VMM leaves. */
async function stale(socketPath: string): Promise<void> {
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

describe('claimSocket', () => {
  it('removes a socket nothing listens on, and refuses one a live process holds', async () => {
    const staleOne = path();
    await stale(staleOne);
    expect(existsSync(staleOne)).toBe(true);
    expect(await claimSocket(staleOne)).toEqual({});
    expect(existsSync(staleOne)).toBe(false);
    const live = path();
    await listen(live);
    expectVmprocError(await rejectionOf(claimSocket(live)), 'failed-precondition', 'belongs to a process that still listens on it');
    expect(existsSync(live)).toBe(true);
  });

  it('refuses a path that is not a socket, touching nothing', async () => {
    const file = path();
    await writeFile(file, 'data');
    expectVmprocError(await rejectionOf(claimSocket(file)), 'failed-precondition', 'exists and is not a socket');
    expect(await readFile(file, 'utf8')).toBe('data');
  });

  it("leaves an empty lock file for the VMM, and refuses a .lock that is not Cloud Hypervisor's", async () => {
    const withLock = path();
    await writeFile(`${withLock}.lock`, '');
    const claimed = await claimSocket(withLock);
    expect(claimed.lockBefore).toMatch(/^\d+:\d+:\d+$/);
    expect(existsSync(`${withLock}.lock`)).toBe(true);
    const precious = path();
    await writeFile(`${precious}.lock`, 'someone else\'s data');
    expectVmprocError(await rejectionOf(claimSocket(precious)), 'failed-precondition', `${precious}.lock exists and is not Cloud Hypervisor's lock file (a file of 19 bytes)`);
    const directory = path();
    await mkdir(`${directory}.lock`);
    expectVmprocError(await rejectionOf(claimSocket(directory)), 'failed-precondition', '(a directory)');
  });
});

describe('releaseSocket', () => {
  it('removes the socket and lock file the VMM made, recorded by identity', async () => {
    const socketPath = path();
    await stale(socketPath);
    await writeFile(`${socketPath}.lock`, '');
    const known = await socketFilesOf(socketPath, {});
    expect(known).toEqual({ socket: expect.stringMatching(/^\d+:\d+:\d+$/), lock: expect.stringMatching(/^\d+:\d+:\d+$/) });
    await releaseSocket(socketPath, known);
    expect([existsSync(socketPath), existsSync(`${socketPath}.lock`)]).toEqual([false, false]);
  });

  it('leaves a socket and lock that are no longer the ones recorded (replaced since)', async () => {
    const socketPath = path();
    await stale(socketPath);
    await writeFile(`${socketPath}.lock`, '');
    const known = await socketFilesOf(socketPath, {});
    await unlink(socketPath);
    await unlink(`${socketPath}.lock`);
    await listen(socketPath);
    await writeFile(`${socketPath}.lock`, '');
    await releaseSocket(socketPath, known);
    expect([existsSync(socketPath), existsSync(`${socketPath}.lock`)]).toEqual([true, true]);
  });

  it('never removes a lock file that was there before the launch, nor one that is not empty', async () => {
    const socketPath = path();
    await writeFile(`${socketPath}.lock`, '');
    const claimed = await claimSocket(socketPath);
    await releaseSocket(socketPath, await socketFilesOf(socketPath, claimed));
    expect(existsSync(`${socketPath}.lock`)).toBe(true);
    const other = path();
    await writeFile(`${other}.lock`, 'data');
    await releaseSocket(other, {});
    expect(await readFile(`${other}.lock`, 'utf8')).toBe('data');
  });

  it('without a record (the VMM died before it answered): a socket nothing listens on and a lock that appeared go', async () => {
    const socketPath = path();
    await stale(socketPath);
    await writeFile(`${socketPath}.lock`, '');
    await releaseSocket(socketPath, {});
    expect([existsSync(socketPath), existsSync(`${socketPath}.lock`)]).toEqual([false, false]);
    const live = path();
    await listen(live);
    await releaseSocket(live, {});
    expect(existsSync(live)).toBe(true);
  });
});
