/**
 * Copy-truncate rotation on real files, no root, with a real O_APPEND writer standing in for the
 * VMM (a child process holding the log open, like the VMM's stdout and stderr).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LogRotator, rotateLog } from '../../src/logs/log-rotation.js';
import { sweepForgottenLogs } from '../../src/logs/log-sweep.js';

let dir: string;
let counter = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmpt-rot-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function logFile(content: string): Promise<string> {
  const path = join(dir, `vmm-${++counter}.log`);
  await writeFile(path, content);
  return path;
}

describe('rotateLog', () => {
  it('copies the log to .1 and truncates it in place', async () => {
    const path = await logFile('old content\n');
    const { ino } = await stat(path);
    const rotation = await rotateLog(path, 1);
    expect(rotation).toEqual({ path, copyPath: `${path}.1`, copiedBytes: 12 });
    expect(await readFile(`${path}.1`, 'utf8')).toBe('old content\n');
    expect(await readFile(path, 'utf8')).toBe('');
    // Same file: the writer's descriptor still points at it.
    expect((await stat(path)).ino).toBe(ino);
    expect(existsSync(`${path}.1.tmp`)).toBe(false);
  });

  it('replaces .1 with keep 1, and shifts generations with keep 3', async () => {
    const one = await logFile('first\n');
    await rotateLog(one, 1);
    await appendFile(one, 'second\n');
    await rotateLog(one, 1);
    expect(await readFile(`${one}.1`, 'utf8')).toBe('second\n');
    expect(existsSync(`${one}.2`)).toBe(false);

    const three = await logFile('');
    for (const generation of ['a', 'b', 'c', 'd']) {
      await appendFile(three, `${generation}\n`);
      await rotateLog(three, 3);
    }
    expect(await readFile(`${three}.1`, 'utf8')).toBe('d\n');
    expect(await readFile(`${three}.2`, 'utf8')).toBe('c\n');
    expect(await readFile(`${three}.3`, 'utf8')).toBe('b\n');
    expect(existsSync(`${three}.4`)).toBe(false);
  });

  it('keeps the copy as private as the log', async () => {
    const path = await logFile('secret\n');
    const log = await open(path, 'r');
    await log.chmod(0o600);
    await log.close();
    await rotateLog(path, 1);
    expect((await stat(`${path}.1`)).mode & 0o777).toBe(0o600);
  });

  it('an O_APPEND writer goes on at the new end: no hole, nothing lost while it is quiet', async () => {
    const path = await logFile('');
    // A writer like the VMM: its stdout is the log, opened O_APPEND; it writes one line per input line.
    const fd = await open(path, 'a');
    const writer = spawn('sh', ['-c', 'while read -r line; do echo "$line"; done'], { stdio: ['pipe', fd.fd, 'ignore'] });
    await fd.close();
    const say = async (text: string) => {
      writer.stdin!.write(`${text}\n`);
      const deadline = Date.now() + 5000;
      while (!(await readFile(path, 'utf8')).endsWith(`${text}\n`)) {
        if (Date.now() > deadline) throw new Error(`writer did not write ${text}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    try {
      await say('before rotation');
      await rotateLog(path, 1);
      await say('after rotation');
      expect(await readFile(path, 'utf8')).toBe('after rotation\n');
      expect((await stat(path)).size).toBe('after rotation\n'.length);
      expect(await readFile(`${path}.1`, 'utf8')).toBe('before rotation\n');
    } finally {
      writer.stdin!.end();
      await new Promise((resolve) => writer.once('exit', resolve));
    }
  });
});

describe('LogRotator', () => {
  it('rotates only live logs over the cap', async () => {
    const big = await logFile('x'.repeat(5000));
    const small = await logFile('y'.repeat(100));
    const exited = await logFile('z'.repeat(5000));
    const rotator = new LogRotator({ maxBytes: 4096, keep: 1, checkIntervalMs: 60_000, liveLogs: () => [big, small, join(dir, 'missing.log')] });
    expect(await rotator.checkNow()).toBe(3);
    expect((await stat(big)).size).toBe(0);
    expect((await stat(`${big}.1`)).size).toBe(5000);
    expect((await stat(small)).size).toBe(100);
    expect((await stat(exited)).size).toBe(5000);
    rotator.close();
  });

  it('looks only at logs written to since the last check', async () => {
    const quiet = await logFile('q\n');
    const chatty = await logFile('c\n');
    const rotator = new LogRotator({ maxBytes: 4096, keep: 1, checkIntervalMs: 60_000, liveLogs: () => [quiet, chatty] });
    expect(await rotator.checkNow()).toBe(2);
    expect(rotator.lastChecked).toBe(2);
    await rotator.checkNow();
    expect(rotator.lastChecked).toBe(0);
    // Many writes, one look: the watch is dropped at the first write and re-armed by the check.
    for (let i = 0; i < 100; i++) await appendFile(chatty, 'c'.repeat(50));
    const deadline = Date.now() + 5000;
    do {
      await new Promise((resolve) => setTimeout(resolve, 10));
      await rotator.checkNow();
    } while (rotator.lastChecked === 0 && Date.now() < deadline);
    expect(rotator.lastChecked).toBe(1);
    expect((await stat(chatty)).size).toBe(0);
    expect((await stat(`${chatty}.1`)).size).toBe(2 + 5000);
    // The rotation's own truncation is a write: one more look, then quiet again.
    await new Promise((resolve) => setTimeout(resolve, 50));
    await rotator.checkNow();
    await rotator.checkNow();
    expect(rotator.lastChecked).toBe(0);
    rotator.close();
  });

  it('tells watchers before a rotation begins, with its outcome', async () => {
    const path = await logFile('w'.repeat(10));
    const rotator = new LogRotator({ maxBytes: 4096, keep: 1, checkIntervalMs: 60_000, liveLogs: () => [] });
    const seen: Array<Promise<unknown>> = [];
    const unsubscribe = rotator.watch(path, (rotation) => seen.push(rotation));
    await rotator.rotate(path);
    expect(seen).toHaveLength(1);
    await expect(seen[0]).resolves.toMatchObject({ path, copyPath: `${path}.1`, copiedBytes: 10 });
    // The copy was opened for this watcher, which must release it.
    ((await seen[0]) as { copy?: { release(): void } }).copy?.release();
    // A failed rotation (the log is gone) is reported as undefined, not thrown.
    await rm(path);
    expect(await rotator.rotate(path)).toBeUndefined();
    await expect(seen[1]).resolves.toBeUndefined();
    unsubscribe();
    await rotator.rotate(path);
    expect(seen).toHaveLength(2);
    rotator.close();
  });

  it('runs its timer only while VMMs are live, and wakes up again', async () => {
    const path = await logFile('');
    let live: string[] = [path];
    let checks = 0;
    const rotator = new LogRotator({
      maxBytes: 4096,
      keep: 1,
      checkIntervalMs: 20,
      liveLogs: () => {
        checks++;
        return live;
      },
    });
    expect(rotator.scheduled).toBe(false);
    rotator.wake();
    expect(rotator.scheduled).toBe(true);
    await appendFile(path, 'g'.repeat(5000));
    const deadline = Date.now() + 5000;
    while (!existsSync(`${path}.1`) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect((await stat(`${path}.1`)).size).toBe(5000);

    live = [];
    while (rotator.scheduled && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(rotator.scheduled).toBe(false);
    const checksWhenIdle = checks;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(checks).toBe(checksWhenIdle);

    live = [path];
    rotator.wake();
    while (checks === checksWhenIdle && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(checks).toBeGreaterThan(checksWhenIdle);
    rotator.close();
    expect(rotator.scheduled).toBe(false);
  });
});

describe('sweepForgottenLogs', () => {
  it('removes the logs (and copies) of sandboxes no record names, and nothing else', async () => {
    const logs = join(dir, 'sweep');
    await mkdir(logs);
    const files = ['a.log', 'a.log.1', 'b.log', 'b.log.1', 'b.log.2', 'b.log.1.tmp', 'x.log.log', 'x.log.log.1', 'y.log.log', 'notes.txt', 'c.logger'];
    for (const name of files) await writeFile(join(logs, name), 'x');
    expect(await sweepForgottenLogs(logs, new Set(['a', 'x.log']))).toBe(5);
    expect((await readdir(logs)).sort()).toEqual(['a.log', 'a.log.1', 'c.logger', 'notes.txt', 'x.log.log', 'x.log.log.1']);
    expect(await sweepForgottenLogs(join(dir, 'no-such-dir'), new Set())).toBe(0);
  });
});
