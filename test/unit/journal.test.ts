import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { existsSync, readFileSync } from 'node:fs';
import { appendFile, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { VmprocError } from '../../src/errors.js';
import { encodeRecord, Journal, readJournal } from '../../src/store/journal.js';
import { expectVmprocError, rejectionOf } from './support/errors.js';

let dir: string;
let path: string;
const opened: Journal[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmprocd-journal-'));
  path = join(dir, 'state.journal');
});

afterEach(async () => {
  for (const journal of opened.splice(0)) await journal.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function openJournal(syncAll = false): Promise<Awaited<ReturnType<typeof Journal.open>>> {
  const result = await Journal.open(path, { syncAll });
  opened.push(result.journal);
  return result;
}

/** Closes a journal this test opened (and forgets it, so afterEach does not close it twice). */
async function closeJournal(journal: Journal): Promise<void> {
  opened.splice(opened.indexOf(journal), 1);
  await journal.close();
}

/** The FileHandle class, whose write() the journal calls once per group of appends. */
async function fileHandlePrototype(): Promise<{ write: (...args: unknown[]) => unknown }> {
  const handle = await open(join(dir, 'probe'), 'w');
  const proto = Object.getPrototypeOf(handle) as { write: (...args: unknown[]) => unknown };
  await handle.close();
  return proto;
}

const records = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ k: 'r', n: from + i }));

describe('encodeRecord', () => {
  it('writes "<crc32 of the JSON, 8 hex digits> <JSON>\\n"', () => {
    const line = encodeRecord({ k: 'exit', n: 1 });
    const json = '{"k":"exit","n":1}';
    expect(line).toBe(`${crc32(json).toString(16).padStart(8, '0')} ${json}\n`);
    expect(line).toMatch(/^[0-9a-f]{8} \{.*\}\n$/);
  });

  it('pads a small checksum to 8 digits', () => {
    // Find a record whose CRC has a leading zero nibble.
    let n = 0;
    while (crc32(JSON.stringify({ n })) >= 0x10000000) n++;
    expect(encodeRecord({ n }).slice(0, 8)).toMatch(/^0[0-9a-f]{7}$/);
  });

  it('keeps a record on one line whatever its strings hold', () => {
    const line = encodeRecord({ text: 'a\nb\r\nc\u2028d' });
    expect(line.indexOf('\n')).toBe(line.length - 1);
  });
});

describe('readJournal', () => {
  it('reads a missing file as an empty journal', async () => {
    await expect(readJournal(join(dir, 'absent'))).resolves.toEqual({ records: [], droppedTailBytes: 0 });
  });

  it('reads an empty file as an empty journal', async () => {
    await writeFile(path, '');
    await expect(readJournal(path)).resolves.toEqual({ records: [], droppedTailBytes: 0 });
  });

  it('decodes what encodeRecord wrote, in order', async () => {
    const values = [{ a: 1 }, [1, 'two', null], 'text', 42, null, true, { nested: { deep: ['x', { y: -1.5 }] } }, { unicode: 'é€😀 naïve', nl: 'a\nb\r\n', tab: '\t', nul: '\u0000' }];
    await writeFile(path, values.map(encodeRecord).join(''));
    await expect(readJournal(path)).resolves.toEqual({ records: values, droppedTailBytes: 0 });
  });

  // JSON.stringify leaves U+2028 and U+2029 unescaped, and decodeRecord's /^([0-9a-f]{8}) (.*)$/ has
  // no `s` flag: `.` stops at those line terminators, so a record that was written correctly (a
  // label value, or a VMM's stderr tail in an exit message, holding one) reads back as corrupt and
  // the daemon refuses to start.
  it.each([
    ['U+2028 LINE SEPARATOR', '\u2028'],
    ['U+2029 PARAGRAPH SEPARATOR', '\u2029'],
  ])('reads back a record whose string holds %s', async (_name, char) => {
    const values = [{ k: 'launch' }, { k: 'exit', event: { message: `vmm said: a${char}b` } }, { k: 'ready' }];
    await writeFile(path, values.map(encodeRecord).join(''));
    await expect(readJournal(path)).resolves.toEqual({ records: values, droppedTailBytes: 0 });
  });

  it('rethrows a read failure other than a missing file', async () => {
    // A directory cannot be read as a file.
    await expect(readJournal(dir)).rejects.toMatchObject({ code: 'EISDIR' });
  });
});

describe('Journal round trip', () => {
  it('creates the file, and reads back what was appended, in append order', async () => {
    const { journal, loaded } = await openJournal();
    expect(loaded).toEqual({ records: [], droppedTailBytes: 0 });
    expect(existsSync(path)).toBe(true);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    for (const record of records(5)) await journal.append(record);
    await journal.append({ k: 'synced' }, { sync: true });
    expect(journal.recordCount).toBe(6);
    await closeJournal(journal);

    const again = await openJournal();
    expect(again.loaded).toEqual({ records: [...records(5), { k: 'synced' }], droppedTailBytes: 0 });
    expect(again.journal.recordCount).toBe(6);
    await again.journal.append({ k: 'more' });
    await closeJournal(again.journal);
    expect((await readJournal(path)).records).toEqual([...records(5), { k: 'synced' }, { k: 'more' }]);
  });

  it('counts records already in the file at open', async () => {
    await writeFile(path, records(7).map(encodeRecord).join(''));
    const { journal } = await openJournal();
    expect(journal.recordCount).toBe(7);
    journal.appendStaged({ k: 'x' });
    expect(journal.recordCount).toBe(8); // counted when queued, not when written
  });

  it('writes exactly the encoded lines, nothing else', async () => {
    const { journal } = await openJournal();
    await Promise.all(records(3).map((r) => journal.append(r)));
    expect(await readFile(path, 'utf8')).toBe(records(3).map(encodeRecord).join(''));
  });
});

describe('Journal group commit', () => {
  it('writes many appends issued in one tick in few writes, resolving them in append order', async () => {
    const { journal } = await openJournal();
    const proto = await fileHandlePrototype();
    const write = jest.spyOn(proto, 'write');
    try {
      const order: number[] = [];
      const all = records(200).map((r) => journal.append(r).then(() => order.push(r.n)));
      await Promise.all(all);
      // The first append starts a write at once; the other 199 queue behind it and go in one more.
      expect(write.mock.calls.length).toBeGreaterThanOrEqual(1);
      expect(write.mock.calls.length).toBeLessThanOrEqual(2);
      expect(order).toEqual(records(200).map((r) => r.n));
    } finally {
      write.mockRestore();
    }
    expect((await readJournal(path)).records).toEqual(records(200));
  });

  it('keeps order across groups: appends issued while a write is in flight come after it', async () => {
    const { journal } = await openJournal();
    const first = records(10).map((r) => journal.append(r));
    await first[0];
    const second = records(10, 10).map((r) => journal.append(r));
    await Promise.all([...first, ...second]);
    expect((await readJournal(path)).records).toEqual(records(20));
  });

  it('resolves written before durable for a synced record', async () => {
    const { journal } = await openJournal();
    const events: string[] = [];
    const appended = journal.appendStaged({ k: 'launch' }, { sync: true });
    expect(appended.durable).not.toBe(appended.written);
    const done = Promise.all([appended.written.then(() => events.push('written')), appended.durable.then(() => events.push('durable'))]);
    await done;
    expect(events).toEqual(['written', 'durable']);
  });

  it('makes durable the same promise as written for a record that need not be synced', async () => {
    const { journal } = await openJournal();
    const appended = journal.appendStaged({ k: 'ready' });
    expect(appended.durable).toBe(appended.written);
    await appended.durable;
    const explicit = journal.appendStaged({ k: 'ready' }, { sync: false });
    expect(explicit.durable).toBe(explicit.written);
    await explicit.written;
  });

  it('syncs every record with syncAll, whatever the append asks', async () => {
    const { journal } = await openJournal(true);
    const appended = journal.appendStaged({ k: 'ready' }, { sync: false });
    expect(appended.durable).not.toBe(appended.written);
    const events: string[] = [];
    await Promise.all([appended.written.then(() => events.push('written')), appended.durable.then(() => events.push('durable'))]);
    expect(events).toEqual(['written', 'durable']);
  });

  it('settles every synced record of a burst, in order, with few fdatasyncs', async () => {
    const { journal } = await openJournal();
    const proto = (await fileHandlePrototype()) as unknown as { datasync: () => Promise<void> };
    const datasync = jest.spyOn(proto, 'datasync');
    const durable: number[] = [];
    const written: number[] = [];
    const staged = records(50).map((r) => {
      const a = journal.appendStaged(r, { sync: r.n % 2 === 0 });
      a.written.then(() => written.push(r.n));
      a.durable.then(() => durable.push(r.n));
      return a;
    });
    await Promise.all(staged.flatMap((a) => [a.written, a.durable]));
    expect(written).toEqual(records(50).map((r) => r.n));
    expect([...durable].sort((a, b) => a - b)).toEqual(records(50).map((r) => r.n));
    // Within the synced ones, durable follows append order.
    const syncedDurable = durable.filter((n) => n % 2 === 0);
    expect(syncedDurable).toEqual([...syncedDurable].sort((a, b) => a - b));
    // One sync for the first write's group, at most one more for everything queued behind it.
    expect(datasync.mock.calls.length).toBeGreaterThanOrEqual(1);
    expect(datasync.mock.calls.length).toBeLessThanOrEqual(2);
    datasync.mockRestore();
    expect((await readJournal(path)).records).toEqual(records(50));
  });
});

describe('Journal.open: a torn tail', () => {
  const good = records(3).map(encodeRecord).join('');
  const goodBytes = Buffer.byteLength(good);

  it.each([
    ['a truncated line', 'deadbeef {"k":"exit","ev'],
    ['a line cut just before its newline', encodeRecord({ k: 'exit', n: 9 }).slice(0, -1)],
    ['only part of the checksum', '0a1b'],
    ['a zero-filled tail', '\0'.repeat(4096)],
    ['a truncated line then zeros', `${encodeRecord({ k: 'x' }).slice(0, 10)}${'\0'.repeat(100)}`],
  ])('drops %s and truncates the file to the last good record', async (_what, tail) => {
    await writeFile(path, good + tail);
    const { journal, loaded } = await openJournal();
    expect(loaded.records).toEqual(records(3));
    expect(loaded.droppedTailBytes).toBe(Buffer.byteLength(tail));
    expect((await stat(path)).size).toBe(goodBytes);
    expect(journal.recordCount).toBe(3);

    // Appends go on right after the last good record.
    await journal.append({ k: 'after' });
    await closeJournal(journal);
    expect((await readJournal(path)).records).toEqual([...records(3), { k: 'after' }]);
  });

  it('reports the torn tail through readJournal without touching the file', async () => {
    await writeFile(path, `${good}0123`);
    await expect(readJournal(path)).resolves.toEqual({ records: records(3), droppedTailBytes: 4 });
    expect((await stat(path)).size).toBe(goodBytes + 4);
  });

  it('drops a file that holds only a torn record, leaving it empty', async () => {
    await writeFile(path, '12345678 {"k":');
    const { loaded } = await openJournal();
    expect(loaded).toEqual({ records: [], droppedTailBytes: 14 });
    expect((await stat(path)).size).toBe(0);
  });

  it('counts the bytes of a torn tail with multi-byte characters as bytes', async () => {
    const tail = 'deadbeef {"msg":"€€€ naïve';
    await writeFile(path, good + tail);
    const { loaded } = await openJournal();
    expect(loaded.droppedTailBytes).toBe(Buffer.byteLength(tail));
    expect((await stat(path)).size).toBe(goodBytes);
  });

  // A crash mid-append can cut a multi-byte UTF-8 character (a label value, a VMM's stderr tail in
  // an exit's message). readJournal decodes the file as UTF-8 first and measures the tail on the
  // decoded text, where the 2 cut bytes became one U+FFFD (3 bytes): truncation removes one byte
  // too many, the last good record's newline.
  it('drops a tail cut inside a multi-byte character without eating into the last good record', async () => {
    const torn = Buffer.from(encodeRecord({ k: 'exit', message: 'stderr: €' })).subarray(0, -4); // cuts '€' after 2 of its 3 bytes
    expect(torn.subarray(-2)).toEqual(Buffer.from('€').subarray(0, 2));
    await writeFile(path, Buffer.concat([Buffer.from(good), torn]));
    const { journal, loaded } = await openJournal();
    expect(loaded.droppedTailBytes).toBe(torn.length);
    expect((await stat(path)).size).toBe(goodBytes);
    await journal.append({ k: 'after' });
    await closeJournal(journal);
    expect((await readJournal(path)).records).toEqual([...records(3), { k: 'after' }]);
  });
});

describe('Journal.open: corruption before the tail', () => {
  function corruptLine(line: string): string {
    // Change one character of the JSON, keeping the checksum: the line is complete but wrong.
    return line.replace('"n":', '"m":');
  }

  const lines = records(4).map(encodeRecord);

  it.each([
    ['the first line', 0],
    ['a middle line', 1],
    ['the last complete line', 3],
  ])('throws failed-precondition naming the file and line for a bad checksum on %s', async (_what, index) => {
    const damaged = lines.map((line, i) => (i === index ? corruptLine(line) : line));
    await writeFile(path, damaged.join(''));
    const byte = Buffer.byteLength(damaged.slice(0, index).join(''));
    const before = await readFile(path);

    const error = await rejectionOf(Journal.open(path, { syncAll: false }));
    expectVmprocError(error, 'failed-precondition', path, `line ${index + 1} `, `(byte ${byte})`, 'checksum');
    expectVmprocError(await rejectionOf(readJournal(path)), 'failed-precondition', path, `line ${index + 1} `);
    // Nothing was repaired or dropped.
    expect(await readFile(path)).toEqual(before);
  });

  it('throws even when a torn tail follows the bad line', async () => {
    await writeFile(path, `${lines[0]}${corruptLine(lines[1]!)}${lines[2]}abc`);
    expectVmprocError(await rejectionOf(Journal.open(path, { syncAll: false })), 'failed-precondition', 'line 2 ');
  });

  it.each([
    ['a line that is not "<crc> <json>"', 'garbage\n'],
    ['an empty line', '\n'],
    ['upper-case checksum digits', encodeRecord({ k: 'x' }).toUpperCase()],
    ['a line of zeros', `${'\0'.repeat(20)}\n`],
    ['JSON that does not parse, with a matching checksum', `${crc32('{"k":').toString(16).padStart(8, '0')} {"k":\n`],
    ['a wrong checksum', `00000000 {"k":"x"}\n`],
  ])('treats %s as corruption', async (_what, bad) => {
    await writeFile(path, `${lines[0]}${bad}${lines[1]}`);
    const error = await rejectionOf(readJournal(path));
    expect(error).toBeInstanceOf(VmprocError);
    expectVmprocError(error, 'failed-precondition', path, 'line 2 ');
  });
});

describe('Journal.compact', () => {
  it('replaces the file with the snapshot; later appends land after it', async () => {
    const { journal } = await openJournal();
    await Promise.all(records(20).map((r) => journal.append(r)));
    await journal.compact(() => [{ k: 'snapshot', n: 1 }, { k: 'snapshot', n: 2 }]);
    expect(journal.recordCount).toBe(2);
    expect((await readJournal(path)).records).toEqual([{ k: 'snapshot', n: 1 }, { k: 'snapshot', n: 2 }]);

    await journal.append({ k: 'after' });
    await journal.append({ k: 'synced' }, { sync: true });
    expect(journal.recordCount).toBe(4);
    await closeJournal(journal);
    expect((await readJournal(path)).records).toEqual([{ k: 'snapshot', n: 1 }, { k: 'snapshot', n: 2 }, { k: 'after' }, { k: 'synced' }]);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('compacts to an empty journal', async () => {
    const { journal } = await openJournal();
    await journal.append({ k: 'x' });
    await journal.compact(() => []);
    expect(journal.recordCount).toBe(0);
    expect((await stat(path)).size).toBe(0);
    await journal.append({ k: 'y' });
    expect((await readJournal(path)).records).toEqual([{ k: 'y' }]);
  });

  it('leaves no .compact temp file behind', async () => {
    const { journal } = await openJournal();
    await journal.append({ k: 'x' });
    await journal.compact(() => [{ k: 's' }]);
    expect(existsSync(`${path}.compact`)).toBe(false);
  });

  it('removes a .compact file left by a crash at open, keeping the journal as it was', async () => {
    await writeFile(path, records(2).map(encodeRecord).join(''));
    await writeFile(`${path}.compact`, `${encodeRecord({ k: 'half-written snapshot' })}0123`);
    const { loaded } = await openJournal();
    expect(loaded.records).toEqual(records(2));
    expect(existsSync(`${path}.compact`)).toBe(false);
  });

  it('takes the snapshot when called, even with a write in flight: that append settles, and is not written twice', async () => {
    const { journal } = await openJournal();
    const first = journal.append({ k: 'in flight' });
    // The snapshot is taken at the call, before the write above may have landed: it holds the record.
    const compacted = journal.compact(() => [{ k: 'snapshot' }, { k: 'in flight' }]);
    await Promise.all([first, compacted]);
    await closeJournal(journal);
    expect((await readJournal(path)).records).toEqual([{ k: 'snapshot' }, { k: 'in flight' }]);
  });

  it('takes the snapshot when called: appends still queued then are not written again, and settle with it', async () => {
    const { journal } = await openJournal();
    const earlier = records(30).map((r) => journal.appendStaged(r, { sync: r.n === 29 }));
    // The caller's snapshot holds every record appended so far (as JournalStateStore's state does).
    const compacted = journal.compact(() => [{ k: 'snapshot' }, ...records(30)]);
    await Promise.all([...earlier.flatMap((a) => [a.written, a.durable]), compacted]);
    await closeJournal(journal);
    expect((await readJournal(path)).records).toEqual([{ k: 'snapshot' }, ...records(30)]);
  });

  it('neither loses nor reorders appends made while a compaction is in flight', async () => {
    const { journal } = await openJournal();
    await Promise.all(records(10).map((r) => journal.append(r)));
    const compacted = journal.compact(() => [{ k: 'snapshot' }]);
    // Queued behind the compaction: sync and not, in one tick and across ticks.
    const during = records(40, 100).map((r) => journal.appendStaged(r, { sync: r.n % 3 === 0 }));
    await compacted;
    const after = records(5, 200).map((r) => journal.append(r));
    const order: number[] = [];
    await Promise.all(during.map((a, i) => a.written.then(() => order.push(i))));
    expect(order).toEqual(during.map((_, i) => i));
    await Promise.all([...during.map((a) => a.durable), ...after]);
    expect(journal.recordCount).toBe(1 + 40 + 5);
    await closeJournal(journal);
    expect((await readJournal(path)).records).toEqual([{ k: 'snapshot' }, ...records(40, 100), ...records(5, 200)]);
  });

  it('counts records queued during the compaction in recordCount', async () => {
    const { journal } = await openJournal();
    const compacted = journal.compact(() => [{ k: 'a' }, { k: 'b' }]);
    const during = [journal.append({ k: 'c' }), journal.append({ k: 'd' })];
    await compacted;
    expect(journal.recordCount).toBe(4);
    await Promise.all(during);
    expect((await readJournal(path)).records).toEqual([{ k: 'a' }, { k: 'b' }, { k: 'c' }, { k: 'd' }]);
  });

  it('keeps the old journal and goes on appending when the snapshot throws', async () => {
    const { journal } = await openJournal();
    await journal.append({ k: 'kept' });
    await expect(journal.compact(() => {
      throw new Error('snapshot failed');
    })).rejects.toThrow('snapshot failed');
    await journal.append({ k: 'after' });
    expect((await readJournal(path)).records).toEqual([{ k: 'kept' }, { k: 'after' }]);
    expect(existsSync(`${path}.compact`)).toBe(false);
  });

  it('survives several compactions in a row with appends between', async () => {
    const { journal } = await openJournal();
    let expected: unknown[] = [];
    for (let round = 0; round < 5; round++) {
      await Promise.all(records(10, round * 10).map((r) => journal.append(r)));
      const snapshot = [{ k: 'round', round }];
      await journal.compact(() => snapshot);
      expected = snapshot;
    }
    await journal.append({ k: 'last' });
    await closeJournal(journal);
    expect((await readJournal(path)).records).toEqual([...expected, { k: 'last' }]);
  });
});

describe('Journal.close', () => {
  it('waits for pending writes and syncs', async () => {
    const { journal } = await openJournal();
    const pending = records(100).map((r) => journal.appendStaged(r, { sync: r.n % 10 === 0 }));
    const settled: number[] = [];
    pending.forEach((a, i) => a.durable.then(() => settled.push(i)));
    await closeJournal(journal);
    // Every append settled before close resolved.
    await Promise.resolve();
    expect(settled).toHaveLength(100);
    expect((await readJournal(path)).records).toEqual(records(100));
  });

  it('rejects an append after close with unavailable, on both moments', async () => {
    const { journal } = await openJournal();
    await journal.append({ k: 'x' });
    await closeJournal(journal);
    const appended = journal.appendStaged({ k: 'late' }, { sync: true });
    expectVmprocError(await rejectionOf(appended.written), 'unavailable', path, 'closed');
    expectVmprocError(await rejectionOf(appended.durable), 'unavailable');
    expectVmprocError(await rejectionOf(journal.append({ k: 'late' })), 'unavailable', path);
    expect((await readJournal(path)).records).toEqual([{ k: 'x' }]);
    expect(journal.recordCount).toBe(1);
  });

  it('does not leave an unhandled rejection when nobody waits on an append after close', async () => {
    const { journal } = await openJournal();
    await closeJournal(journal);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      journal.appendStaged({ k: 'ignored' });
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
  });
});

describe('Journal write failures', () => {
  type Write = (this: unknown, buffer: Buffer, offset: number, length: number) => Promise<{ bytesWritten: number }>;
  const errno = (code: string) => Object.assign(new Error(`${code}: simulated`), { code });

  /**
   * Spies on FileHandle.write: `step(call, write)` decides each call; write(n) really writes the
   * first n bytes asked for (a short write), or all of them.
   */
  async function spyWrites(step: (call: number, write: (most?: number) => Promise<{ bytesWritten: number }>) => Promise<{ bytesWritten: number }>) {
    const proto = (await fileHandlePrototype()) as unknown as { write: Write };
    const realWrite = proto.write;
    let calls = 0;
    return jest.spyOn(proto, 'write').mockImplementation(function (this: unknown, buffer: Buffer, offset: number, length: number) {
      return step(++calls, (most = length) => realWrite.call(this, buffer, offset, Math.min(length, most)));
    } as Write);
  }

  async function spyTruncates(failures: number) {
    const proto = (await fileHandlePrototype()) as unknown as { truncate: (len?: number) => Promise<void> };
    let left = failures;
    const realTruncate = proto.truncate;
    return jest.spyOn(proto, 'truncate').mockImplementation(function (this: unknown, len?: number) {
      if (left-- > 0) return Promise.reject(errno('EIO'));
      return realTruncate.call(this, len);
    });
  }

  it('continues short writes until the whole batch is in the file', async () => {
    const { journal } = await openJournal();
    // Seven bytes at most per write: every record takes several.
    const spy = await spyWrites((_call, write) => write(7));
    try {
      await Promise.all(records(5).map((r) => journal.append(r)));
      expect(spy.mock.calls.length).toBeGreaterThan(10);
    } finally {
      spy.mockRestore();
    }
    await journal.append({ k: 'after' });
    expect((await readJournal(path)).records).toEqual([...records(5), { k: 'after' }]);
  });

  it('a write failing mid-batch leaves the file exactly as before the batch, rejects all of it, and the next append works', async () => {
    const { journal } = await openJournal();
    await Promise.all(records(3).map((r) => journal.append(r)));
    const [first, ...batch] = records(3, 10);
    // The first append goes out alone (the drain starts at once); the two queued behind it form
    // the next batch, of which one record and a bit go in before the write fails.
    let calls = 0;
    const spy = await spyWrites((call, write) => {
      calls = call;
      return call === 1 ? write() : call === 2 ? write(encodeRecord(batch[0]).length + 5) : Promise.reject(errno('EIO'));
    });
    let results: unknown[];
    try {
      const appended = [first, ...batch].map((r) => journal.appendStaged(r, { sync: true }));
      await appended[0]!.durable;
      results = await Promise.all(appended.slice(1).flatMap((a) => [rejectionOf(a.written), rejectionOf(a.durable)]));
    } finally {
      spy.mockRestore();
    }
    expect(calls).toBe(3);
    for (const failure of results) expectVmprocError(failure, 'internal', 'cannot write to the state journal', path, 'EIO');
    expect((await readJournal(path)).records).toEqual([...records(3), first]);
    expect(await readFile(path, 'utf8')).toBe([...records(3), first].map(encodeRecord).join(''));
    await journal.append({ k: 'next' });
    expect((await readJournal(path)).records).toEqual([...records(3), first, { k: 'next' }]);
  });

  it('ENOSPC rejects with resource-exhausted naming the journal, the full disk and the fix; EDQUOT too; both undone', async () => {
    const { journal } = await openJournal();
    await journal.append({ k: 'kept' });
    const before = await readFile(path);
    for (const code of ['ENOSPC', 'EDQUOT']) {
      const spy = await spyWrites((call, write) => (call === 1 ? write(3) : Promise.reject(errno(code))));
      let failure: unknown;
      try {
        failure = await rejectionOf(journal.append({ k: 'lost', code }));
      } finally {
        spy.mockRestore();
      }
      const error = expectVmprocError(failure, 'resource-exhausted', `cannot write to the state journal ${path} (${code})`, `on the file system that holds ${dir}`);
      expect(error.message).toContain(code === 'ENOSPC' ? 'the state disk is full' : 'the state disk quota is used up');
      expect((error.cause as NodeJS.ErrnoException).code).toBe(code);
      expect(await readFile(path)).toEqual(before);
    }
    await journal.append({ k: 'next' });
    expect((await readJournal(path)).records).toEqual([{ k: 'kept' }, { k: 'next' }]);
  });

  it('keeps a failure that writes nothing at internal for other errors, and the file as it was', async () => {
    const { journal } = await openJournal();
    const spy = await spyWrites(() => Promise.reject(errno('EIO')));
    try {
      expectVmprocError(await rejectionOf(journal.append({ k: 'lost' })), 'internal', 'cannot write to the state journal', path, 'EIO');
    } finally {
      spy.mockRestore();
    }
    expect(await readFile(path, 'utf8')).toBe('');
    await journal.append({ k: 'next' });
    expect((await readJournal(path)).records).toEqual([{ k: 'next' }]);
  });

  it('a write that makes no progress fails instead of looping', async () => {
    const { journal } = await openJournal();
    const spy = await spyWrites(() => Promise.resolve({ bytesWritten: 0 }));
    try {
      expectVmprocError(await rejectionOf(journal.append({ k: 'lost' })), 'internal', 'made no progress');
    } finally {
      spy.mockRestore();
    }
    await journal.append({ k: 'next' });
    expect((await readJournal(path)).records).toEqual([{ k: 'next' }]);
  });

  it('when the undo itself fails, truncates before the next write: no later record follows a torn one', async () => {
    const { journal } = await openJournal();
    await journal.append({ k: 'kept' });
    const before = await readFile(path);
    const spy = await spyWrites((call, write) => (call === 1 ? write(5) : Promise.reject(errno('ENOSPC'))));
    // The undo fails, and so does the retry before the second append.
    const truncate = await spyTruncates(2);
    try {
      // Cut short after its first few bytes really were written: the file holds a torn record now.
      const first = journal.append({ k: 'torn' });
      expectVmprocError(await rejectionOf(first), 'resource-exhausted');
      expect((await readFile(path)).length).toBeGreaterThan(before.length);
      spy.mockRestore();
      expectVmprocError(await rejectionOf(journal.append({ k: 'refused' })), 'internal', 'cannot write to the state journal', 'EIO');
    } finally {
      spy.mockRestore();
      truncate.mockRestore();
    }
    await journal.append({ k: 'next' });
    expect((await readJournal(path)).records).toEqual([{ k: 'kept' }, { k: 'next' }]);
  });

  it('a compaction that fails for a full disk leaves no .compact file and the journal as it was', async () => {
    const { journal } = await openJournal();
    await journal.append({ k: 'old' });
    const before = await readFile(path);
    const proto = (await fileHandlePrototype()) as unknown as { writeFile: (...args: unknown[]) => Promise<void> };
    const realWriteFile = proto.writeFile;
    const spy = jest.spyOn(proto, 'writeFile').mockImplementation(async function (this: unknown, ...args: unknown[]) {
      await realWriteFile.call(this, String(args[0]).slice(0, 4));
      throw errno('ENOSPC');
    });
    try {
      await expect(journal.compact(() => [{ k: 'snapshot' }])).rejects.toThrow('ENOSPC');
    } finally {
      spy.mockRestore();
    }
    expect(existsSync(`${path}.compact`)).toBe(false);
    expect(await readFile(path)).toEqual(before);
    await journal.append({ k: 'next' });
    expect((await readJournal(path)).records).toEqual([{ k: 'old' }, { k: 'next' }]);
  });
});

describe('Journal.open on a file appended to by hand', () => {
  it('appends after existing content in append mode', async () => {
    await writeFile(path, encodeRecord({ k: 'a' }));
    const { journal } = await openJournal();
    await appendFile(path, encodeRecord({ k: 'b' }));
    await journal.append({ k: 'c' });
    expect((await readJournal(path)).records).toEqual([{ k: 'a' }, { k: 'b' }, { k: 'c' }]);
  });
});
