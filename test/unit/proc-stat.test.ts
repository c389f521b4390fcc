import { describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { parseStat, readProcessStat } from '../../src/launch/proc-stat.js';

const parseStartTime = (stat: string) => parseStat(stat)?.startTime;
const readProcessStartTime = async (pid: number) => (await readProcessStat(pid))?.startTime;

/** A /proc/PID/stat line with `comm` as given and field 22 (starttime) set to `startTime`. */
function statLine(pid: number, comm: string, startTime: string): string {
  // Fields 3..52; field n is at index n - 3.
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
  fields[0] = 'S';
  fields[22 - 3] = startTime;
  return `${pid} (${comm}) ${fields.join(' ')}\n`;
}

describe('parseStartTime', () => {
  it('reads field 22', () => {
    expect(parseStartTime(statLine(42, 'cloud-hyperviso', '123456'))).toBe(123456n);
  });

  it.each(['a b c', 'x) S 1 2 3 4', ') (', 'evil) 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 (', '(', ''])(
    'counts fields after the last ")" when comm is %j',
    (comm) => {
      expect(parseStartTime(statLine(42, comm, '987654321'))).toBe(987654321n);
    },
  );

  it('keeps precision beyond 2^53', () => {
    expect(parseStartTime(statLine(1, 'x', '18446744073709551615'))).toBe(18446744073709551615n);
  });

  it.each([
    ['a truncated line', '42 (x) S 1 2 3'],
    ['a non-numeric field 22', statLine(42, 'x', 'abc')],
    ['a negative field 22', statLine(42, 'x', '-5')],
    ['an empty line', ''],
  ])('returns undefined for %s', (_what, line) => {
    expect(parseStartTime(line)).toBeUndefined();
  });
});

describe('readProcessStartTime', () => {
  it('reads this process as a bigint matching /proc/self/stat', async () => {
    const mine = await readProcessStartTime(process.pid);
    expect(typeof mine).toBe('bigint');
    expect(mine).toBe(parseStartTime(await readFile('/proc/self/stat', 'utf8')));
    // Stable across reads: it identifies the process.
    expect(await readProcessStartTime(process.pid)).toBe(mine);
  });

  it('gives a later-started child a start time no earlier than ours', async () => {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], { stdio: 'ignore' });
    try {
      const childStart = await readProcessStartTime(child.pid!);
      const mine = await readProcessStartTime(process.pid);
      expect(typeof childStart).toBe('bigint');
      expect(childStart! >= mine!).toBe(true);
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
  });

  it('is undefined for a PID that cannot exist', async () => {
    const pidMax = Number((await readFile('/proc/sys/kernel/pid_max', 'utf8')).trim());
    expect(await readProcessStartTime(pidMax + 1)).toBeUndefined();
  });
});
