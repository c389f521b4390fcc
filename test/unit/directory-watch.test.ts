import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { openDirectoryWatches, watchDirectoryEntry } from '../../src/util/directory-watch.js';
import { makeTempDir } from './vmm/fake-vmm.js';

let dir: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ dir, cleanup } = await makeTempDir());
});

afterEach(async () => {
  expect(openDirectoryWatches()).toEqual([]);
  await cleanup();
});

/** Resolves on the listener's first call; bounded so a missed event fails the test instead of hanging it. */
function firstCall(register: (listener: () => void) => () => void): { called: Promise<void>; unsubscribe: () => void } {
  let unsubscribe = () => {};
  const called = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no event within 2 s')), 2000);
    unsubscribe = register(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  return { called, unsubscribe };
}

describe('watchDirectoryEntry', () => {
  it('calls the listener when its entry appears, and only for its own name', async () => {
    const calls: string[] = [];
    const stopOther = watchDirectoryEntry(dir, 'other.sock', () => calls.push('other'));
    const mine = firstCall((listener) => watchDirectoryEntry(dir, 'mine.sock', listener));

    await writeFile(path.join(dir, 'mine.sock'), '');
    await mine.called;
    expect(calls).toEqual([]);
    mine.unsubscribe();
    stopOther();
  });

  it('shares one watcher per directory and closes it with the last listener', () => {
    const unsubscribes = Array.from({ length: 300 }, (_, i) => watchDirectoryEntry(dir, `vm-${i % 150}.sock`, () => {}));
    // A relative spelling of the same directory shares the watcher too.
    unsubscribes.push(watchDirectoryEntry(path.relative(process.cwd(), dir), 'vm-0.sock', () => {}));

    expect(openDirectoryWatches()).toEqual([{ directory: dir, listeners: 301 }]);
    for (const unsubscribe of unsubscribes.slice(1)) unsubscribe();
    expect(openDirectoryWatches()).toEqual([{ directory: dir, listeners: 1 }]);
    unsubscribes[0]?.();
    unsubscribes[0]?.(); // idempotent: must not release someone else's reference
    expect(openDirectoryWatches()).toEqual([]);
  });

  it('delivers to every subscriber of the same name', async () => {
    const first = firstCall((listener) => watchDirectoryEntry(dir, 'a.sock', listener));
    const second = firstCall((listener) => watchDirectoryEntry(dir, 'a.sock', listener));
    await writeFile(path.join(dir, 'a.sock'), '');
    await Promise.all([first.called, second.called]);
    first.unsubscribe();
    second.unsubscribe();
  });

  it('tolerates a directory that does not exist: no watcher, no throw', () => {
    const unsubscribe = watchDirectoryEntry(path.join(dir, 'missing'), 'x.sock', () => {});
    expect(openDirectoryWatches()).toEqual([]);
    unsubscribe();
  });
});

describe('watchDirectoryEntry: a directory that cannot be watched', () => {
  it('tells onLost at once, so the waiter knows to poll', async () => {
    let lost = 0;
    const unsubscribe = watchDirectoryEntry('/nonexistent/vmprocd-dir', 'x.sock', () => {}, () => lost++);
    await new Promise((resolve) => setImmediate(resolve));
    unsubscribe();
    expect(lost).toBe(1);
  });
});
