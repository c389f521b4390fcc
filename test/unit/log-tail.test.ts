import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_TAIL, readLogTail } from '../../src/logs/log-tail.js';

describe('readLogTail', () => {
  let dir: string;
  let counter = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmprocd-tail-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function log(text: string): Promise<string> {
    const path = join(dir, `log-${counter++}`);
    await writeFile(path, text);
    return path;
  }

  const wide = { maxLines: 100, maxBytes: 100_000 };

  it('defaults to 20 lines and 4096 bytes', () => {
    expect(DEFAULT_TAIL).toEqual({ maxLines: 20, maxBytes: 4096 });
  });

  it('returns "" for a missing file', async () => {
    expect(await readLogTail(join(dir, 'absent'), 0)).toBe('');
  });

  it('throws for other open errors (a directory is not a log)', async () => {
    const sub = join(dir, 'a-dir');
    await mkdir(sub);
    await expect(readLogTail(sub, 0)).rejects.toThrow();
  });

  it('returns "" for an empty file and for an offset at the end', async () => {
    expect(await readLogTail(await log(''), 0)).toBe('');
    const path = await log('one\ntwo\n');
    expect(await readLogTail(path, 8)).toBe('');
  });

  it('reads from the start when the log is shorter than the offset (rotated during the run)', async () => {
    expect(await readLogTail(await log('one\ntwo\n'), 100)).toBe('one\ntwo');
  });

  it('returns the whole log without its final newline', async () => {
    expect(await readLogTail(await log('one\ntwo\n'), 0, wide)).toBe('one\ntwo');
    expect(await readLogTail(await log('one\ntwo'), 0, wide)).toBe('one\ntwo');
  });

  it('only reads what this run wrote: from the offset on', async () => {
    const path = await log('old run\nnew 1\nnew 2\n');
    expect(await readLogTail(path, 'old run\n'.length, wide)).toBe('new 1\nnew 2');
  });

  it('keeps the last maxLines lines', async () => {
    const path = await log(Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n') + '\n');
    expect(await readLogTail(path, 0, { maxLines: 3, maxBytes: 100_000 })).toBe('line 27\nline 28\nline 29');
    expect((await readLogTail(path, 0)).split('\n')).toHaveLength(20);
  });

  it('cuts at a line boundary when maxBytes lands mid-line', async () => {
    // 'aaaa\nbbbb\ncccc\n' is 15 bytes; the last 8 start mid-"bbbb".
    const path = await log('aaaa\nbbbb\ncccc\n');
    expect(await readLogTail(path, 0, { maxLines: 10, maxBytes: 8 })).toBe('cccc');
  });

  it('keeps the offset when it lies within maxBytes of the end, without cutting a line', async () => {
    const path = await log('aaaa\nbbbb\ncccc\n');
    // The offset (5) is later than size - maxBytes (1): the read starts at the offset, at a line start.
    expect(await readLogTail(path, 5, { maxLines: 10, maxBytes: 14 })).toBe('bbbb\ncccc');
  });

  it('never returns more than maxBytes bytes', async () => {
    const text = Array.from({ length: 500 }, (_, i) => `stderr line ${i} ${'x'.repeat(i % 40)}`).join('\n') + '\n';
    const path = await log(text);
    const tail = await readLogTail(path, 0, { maxLines: 1000, maxBytes: 300 });
    expect(Buffer.byteLength(tail)).toBeLessThanOrEqual(300);
    expect(tail.length).toBeGreaterThan(0);
    expect(text.endsWith(`${tail}\n`)).toBe(true);
    // Whole lines only: the tail starts where a line of the log starts.
    expect(text.includes(`\n${tail}\n`)).toBe(true);
  });

  it('drops a multi-byte character cut by maxBytes together with its partial line', async () => {
    const path = await log('ééééé\nok\n');
    // 14 bytes; the last 5 start inside the last 'é'.
    expect(await readLogTail(path, 0, { maxLines: 10, maxBytes: 5 })).toBe('ok');
  });

  it('keeps a complete first line when maxBytes lands exactly on a line boundary', async () => {
    const path = await log('aaaa\nbbbb\ncccc\n');
    // The last 10 bytes are exactly 'bbbb\ncccc\n'.
    expect(await readLogTail(path, 0, { maxLines: 10, maxBytes: 10 })).toBe('bbbb\ncccc');
  });
});
