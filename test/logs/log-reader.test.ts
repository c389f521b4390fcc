/**
 * The log reader and tail offset on real files, no root: what a StreamLogs call gets for each
 * combination of tail_lines and follow, and how a follower gets through rotations and truncations.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { appendFile, mkdtemp, open, readdir, readlink, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmprocError } from '../../src/errors.js';
import { readLog, type ReadLogOptions } from '../../src/logs/log-reader.js';
import { LogRotator } from '../../src/logs/log-rotation.js';
import { tailOffset } from '../../src/logs/log-tail-offset.js';

let dir: string;
let counter = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmpt-logs-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function logFile(content: string | Buffer): Promise<string> {
  const path = join(dir, `log-${++counter}.log`);
  await writeFile(path, content);
  return path;
}

async function readAll(options: ReadLogOptions): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of readLog(options)) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads a follow stream in the background; `text()` is what arrived so far. */
function follow(options: Omit<ReadLogOptions, 'follow'>) {
  const chunks: Buffer[] = [];
  const sizes: number[] = [];
  const done = (async () => {
    for await (const chunk of readLog({ ...options, follow: true })) {
      chunks.push(chunk);
      sizes.push(chunk.length);
    }
  })();
  const text = () => Buffer.concat(chunks).toString('utf8');
  return {
    done,
    sizes,
    text,
    async until(check: (text: string) => boolean, timeoutMs = 5000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      while (!check(text())) {
        if (Date.now() > deadline) throw new Error(`follower did not get there; it has ${JSON.stringify(text().slice(-200))}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return text();
    },
  };
}

/** This process's open files whose path starts with `prefix` (deleted ones included). */
async function openFilesUnder(prefix: string): Promise<string[]> {
  const targets = await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
  return targets.filter((target) => target.startsWith(prefix));
}

async function eventuallyTrue(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs}ms: open ${JSON.stringify(await openFilesUnder(dir))}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function lines(from: number, to: number, prefix = 'line'): string {
  let text = '';
  for (let i = from; i <= to; i++) text += `${prefix} ${i}\n`;
  return text;
}

describe('tailOffset', () => {
  const cases: Array<[string, string, number, string]> = [
    ['last 2 of 3 lines', 'a\nb\nc\n', 2, 'b\nc\n'],
    ['a last line without newline counts', 'a\nb\nc', 2, 'b\nc'],
    ['more lines than there are', 'a\nb\n', 10, 'a\nb\n'],
    ['exactly as many', 'a\nb\n', 2, 'a\nb\n'],
    ['one line', 'a\nb\n', 1, 'b\n'],
    ['empty lines count', 'a\n\n\n', 2, '\n\n'],
    ['no newline at all', 'abc', 1, 'abc'],
  ];
  it.each(cases)('%s', async (_name, content, count, expected) => {
    const path = await logFile(content);
    const handle = await open(path, 'r');
    try {
      const offset = await tailOffset(handle, Buffer.byteLength(content), count);
      expect(content.slice(offset)).toBe(expected);
    } finally {
      await handle.close();
    }
  });

  it('finds the offset across block boundaries in a large file', async () => {
    const content = lines(1, 50_000); // ~600 KiB: several 64 KiB blocks
    const path = await logFile(content);
    const handle = await open(path, 'r');
    try {
      const offset = await tailOffset(handle, content.length, 20_000);
      expect(content.slice(offset)).toBe(lines(30_001, 50_000));
    } finally {
      await handle.close();
    }
  });
});

describe('readLog without follow', () => {
  it('reads the whole log with tail_lines 0, in chunks of at most chunkBytes', async () => {
    const content = lines(1, 3000);
    const path = await logFile(content);
    const chunks: Buffer[] = [];
    for await (const chunk of readLog({ path, tailLines: 0, follow: false, chunkBytes: 4096 })) chunks.push(chunk);
    expect(Buffer.concat(chunks).toString()).toBe(content);
    expect(chunks.every((c) => c.length > 0 && c.length <= 4096)).toBe(true);
  });

  it('reads the last N lines', async () => {
    const path = await logFile(lines(1, 100));
    expect(await readAll({ path, tailLines: 3, follow: false })).toBe(lines(98, 100));
  });

  it('passes bytes through untouched (not UTF-8, NULs)', async () => {
    const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x0a, 0x80, 0x0a]);
    const path = await logFile(bytes);
    const chunks: Buffer[] = [];
    for await (const chunk of readLog({ path, tailLines: 0, follow: false })) chunks.push(chunk);
    expect(Buffer.concat(chunks)).toEqual(bytes);
  });

  it('stops at the size the log had when called, even if it grows meanwhile', async () => {
    const path = await logFile(lines(1, 2000));
    const chunks: Buffer[] = [];
    for await (const chunk of readLog({ path, tailLines: 0, follow: false, chunkBytes: 1024 })) {
      if (chunks.length === 0) await appendFile(path, 'appended later\n');
      chunks.push(chunk);
    }
    expect(Buffer.concat(chunks).toString()).toBe(lines(1, 2000));
  });

  it('gives an empty read for a missing or empty log', async () => {
    expect(await readAll({ path: join(dir, 'never-written.log'), tailLines: 0, follow: false })).toBe('');
    expect(await readAll({ path: await logFile(''), tailLines: 5, follow: false })).toBe('');
  });

  it('fails with INTERNAL naming the file when it cannot be read', async () => {
    await expect(readAll({ path: dir, tailLines: 0, follow: false })).rejects.toMatchObject({ code: 'internal', message: expect.stringContaining(dir) });
  });
});

describe('readLog with follow', () => {
  it('sends what is appended, then drains and ends once the writer is gone', async () => {
    const path = await logFile(lines(1, 5));
    let writerGone!: () => void;
    const gone = new Promise<void>((resolve) => (writerGone = resolve));
    const reader = follow({ path, tailLines: 2, writerGone: gone });
    await reader.until((t) => t === lines(4, 5));
    await appendFile(path, lines(6, 8));
    await reader.until((t) => t.endsWith(lines(6, 8)));
    // The last words of a dying writer, then its end: both arrive, then the stream ends.
    await appendFile(path, 'last words\n');
    writerGone();
    await reader.done;
    expect(reader.text()).toBe(lines(4, 8) + 'last words\n');
  });

  it('ends at once (after the content) when the writer is already gone', async () => {
    const path = await logFile(lines(1, 3));
    expect(await readAll({ path, tailLines: 0, follow: true, writerGone: Promise.resolve() })).toBe(lines(1, 3));
  });

  it('waits for a log that does not exist yet', async () => {
    const path = join(dir, `later-${++counter}.log`);
    let writerGone!: () => void;
    const reader = follow({ path, tailLines: 0, writerGone: new Promise<void>((resolve) => (writerGone = resolve)) });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await writeFile(path, 'born\n');
    await reader.until((t) => t === 'born\n');
    writerGone();
    await reader.done;
  });

  it('ends quietly when the consumer aborts, and with the reason when it is a VmprocError', async () => {
    const path = await logFile('x\n');
    const quiet = new AbortController();
    const reader = follow({ path, tailLines: 0, signal: quiet.signal });
    await reader.until((t) => t === 'x\n');
    quiet.abort();
    await expect(reader.done).resolves.toBeUndefined();

    const closing = new AbortController();
    const second = follow({ path, tailLines: 0, signal: closing.signal });
    await second.until((t) => t === 'x\n');
    closing.abort(new VmprocError('unavailable', 'shutting down'));
    await expect(second.done).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('starts over at offset 0 when someone else truncates the log', async () => {
    const path = await logFile(lines(1, 3));
    let writerGone!: () => void;
    const reader = follow({ path, tailLines: 0, writerGone: new Promise<void>((resolve) => (writerGone = resolve)) });
    await reader.until((t) => t === lines(1, 3));
    await truncate(path, 0);
    // Give the follower a look at the empty file before the writer appends again.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await appendFile(path, 'after truncation\n');
    await reader.until((t) => t.endsWith('after truncation\n'));
    writerGone();
    await reader.done;
    expect(reader.text()).toBe(lines(1, 3) + 'after truncation\n');
  });

  /** Five rounds of 200 lines, each followed by a rotation, read by a follower that lags behind. */
  async function rotateUnderSlowFollower(maxPendingRotations: number): Promise<{ written: string; read: string }> {
    const path = await logFile('');
    // One generation on disk: the follower reads copies through the handles the rotator opened for it.
    const rotator = new LogRotator({ maxBytes: 4096, keep: 1, checkIntervalMs: 60_000, liveLogs: () => [path] });
    let writerGone!: () => void;
    // A follower that reads slowly: it holds each chunk for a while, so it is behind at each rotation.
    const chunks: Buffer[] = [];
    const done = (async () => {
      for await (const chunk of readLog({
        path,
        tailLines: 0,
        follow: true,
        chunkBytes: 512,
        maxPendingRotations,
        writerGone: new Promise<void>((resolve) => (writerGone = resolve)),
        rotations: (p, listener) => rotator.watch(p, listener),
      })) {
        chunks.push(chunk);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    let written = '';
    for (let round = 0; round < 5; round++) {
      const text = lines(round * 200 + 1, round * 200 + 200, 'r');
      await appendFile(path, text);
      written += text;
      // Rotate while the writer is idle: the only loss copy-truncate allows is writes racing the truncation.
      expect(await rotator.rotate(path)).toMatchObject({ copyPath: `${path}.1` });
    }
    await appendFile(path, 'tail\n');
    written += 'tail\n';
    writerGone();
    await done;
    rotator.close();
    // Every copy opened for the follower was released: no descriptor left on any of them.
    await eventuallyTrue(async () => (await openFilesUnder(path)).length === 0);
    return { written, read: Buffer.concat(chunks).toString() };
  }

  it('gets through rotations without losing what it had not read yet', async () => {
    // Allowed to be behind on every rotation: nothing is lost, although only .1 stays on disk.
    const { written, read } = await rotateUnderSlowFollower(10);
    expect(read).toBe(written);
  });

  it('skips, never garbles, the rest of rotations it fell too far behind on', async () => {
    const { written, read } = await rotateUnderSlowFollower(1);
    const writtenLines = written.split('\n').filter(Boolean);
    // What arrives is lines of what was written, in order, each at most once; where a copy's rest
    // was skipped, the line it was cut in is followed directly by the next copy's first line.
    let cursor = 0;
    for (const line of read.split('\n').filter(Boolean)) {
      let found = writtenLines.indexOf(line, cursor);
      if (found < 0) {
        const joined = writtenLines.findIndex((candidate, index) => index >= cursor && line.endsWith(candidate) && writtenLines.some((cut) => cut.startsWith(line.slice(0, line.length - candidate.length))));
        found = joined;
      }
      if (found < 0) throw new Error(`read line ${JSON.stringify(line)} is not a written line after ${JSON.stringify(writtenLines[cursor - 1])}`);
      cursor = found + 1;
    }
    expect(read.length).toBeLessThanOrEqual(written.length);
    expect(read.endsWith('tail\n')).toBe(true);
  });

  it('pulls: nothing is read ahead of the consumer', async () => {
    const path = await logFile(lines(1, 10_000));
    const generator = readLog({ path, tailLines: 0, follow: true, chunkBytes: 1024 });
    const first = await generator.next();
    expect(first.value?.length).toBe(1024);
    // The generator is suspended at its yield: nothing else is read until next() is called.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const second = await generator.next();
    expect(second.value?.toString()).toBe(lines(1, 10_000).slice(1024, 2048));
    await generator.return(undefined);
  });
});
