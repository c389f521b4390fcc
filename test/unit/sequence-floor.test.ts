import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SequenceFloor } from '../../src/store/sequence-floor.js';
import { expectVmprocError, rejectionOf } from './support/errors.js';

let dir: string;
let path: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmprocd-floor-'));
  path = join(dir, 'exit-sequence-floor');
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('SequenceFloor', () => {
  it('is absent without a file, and reads back what raise() wrote', async () => {
    const floor = await SequenceFloor.open(path);
    expect(floor.value).toBeUndefined();
    await floor.raise(41);
    expect(await readFile(path, 'utf8')).toBe('41\n');
    expect(await readdir(dir)).toEqual(['exit-sequence-floor']); // no temp file left
    expect((await SequenceFloor.open(path)).value).toBe(41);
  });

  it('never lowers itself: a smaller raise keeps the larger floor', async () => {
    const floor = await SequenceFloor.open(path);
    await Promise.all([floor.raise(9), floor.raise(7)]);
    expect(await readFile(path, 'utf8')).toBe('9\n');
  });

  it('ends as the last decision left it, whatever order the file operations finish in', async () => {
    const floor = await SequenceFloor.open(path);
    // Raised for 5, then 6 journalled: the journal is past the floor, which goes.
    void floor.raise(5);
    void floor.journalled(6);
    await floor.settled();
    expect(existsSync(path)).toBe(false);
    // Journalled 7 (nothing to remove), then 8 fails: the floor is 8.
    void floor.journalled(7);
    void floor.raise(8);
    await floor.settled();
    expect(await readFile(path, 'utf8')).toBe('8\n');
    // An older exit journalled does not remove a newer floor.
    await floor.journalled(3);
    expect(await readFile(path, 'utf8')).toBe('8\n');
  });

  it('refuses a file that is not a sequence number', async () => {
    for (const text of ['', '0\n', '12', 'x\n', '-3\n', '1e9\n']) {
      await writeFile(path, text);
      expectVmprocError(await rejectionOf(SequenceFloor.open(path)), 'failed-precondition', path, 'not a sequence number');
    }
  });

  it('rejects a raise it cannot write, and goes on with later ones', async () => {
    const floor = await SequenceFloor.open(join(dir, 'missing', 'floor'));
    await expect(floor.raise(1)).rejects.toThrow('ENOENT');
    await mkdir(join(dir, 'missing'));
    await floor.raise(2);
    expect(await readFile(join(dir, 'missing', 'floor'), 'utf8')).toBe('2\n');
  });
});
