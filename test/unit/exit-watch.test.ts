import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExitStatus } from '../../src/core/domain.js';
import { ExitWatch, type WatchedProcess } from '../../src/launch/exit-watch.js';
import { readProcessStat } from '../../src/launch/proc-stat.js';

const SWEEP_MS = 20;
/** Long enough for several sweeps and inotify deliveries; what must not happen within it does not. */
const QUIET_MS = 80;
/** Upper bound for anything that must happen. */
const BOUND_MS = 3000;

let dir: string;
let watch: ExitWatch;
const children = new Set<ChildProcess>();
let launches = 0;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmprocd-exits-'));
  watch = new ExitWatch(SWEEP_MS);
});

afterEach(async () => {
  watch.close();
  await Promise.all([...children].map((child) => kill(child)));
  await rm(dir, { recursive: true, force: true });
});

interface Live {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly startTime: bigint;
}

/** A real process (sleep) with its /proc start time: a stand-in reaper or VMM. */
async function live(): Promise<Live> {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  children.add(child);
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const startTime = (await readProcessStat(child.pid!))?.startTime;
  if (startTime === undefined) throw new Error('no start time for a child just spawned');
  return { child, pid: child.pid!, startTime };
}

/** Kills and reaps the child: once this resolves its PID names no process (not even a zombie). */
async function kill(child: ChildProcess): Promise<void> {
  children.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}

/** A process that existed and is gone for good, with the start time it had. */
async function gone(): Promise<Live> {
  const process = await live();
  await kill(process.child);
  return process;
}

function watched(reaper: Pick<Live, 'pid' | 'startTime'>, vmm: Pick<Live, 'pid' | 'startTime'>, name = `sb-${++launches}.${launches}.status`): WatchedProcess {
  return { identity: { pid: vmm.pid, startTime: vmm.startTime, reaperPid: reaper.pid, reaperStartTime: reaper.startTime }, statusPath: join(dir, name) };
}

/** Identities that are never looked at (the status file settles the waiter first). */
const dummy = { pid: 2 ** 22 + 1, startTime: 1n };

/** Writes a status file the way the reaper does: a temporary file renamed over the final name. */
async function writeStatus(path: string, content: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, content);
  await rename(tmp, path);
}

type Outcome = { settled: false } | { settled: true; status: ExitStatus | undefined };

/** Tracks a wait() so a test can ask whether it settled yet without blocking on it. */
function track(promise: Promise<ExitStatus | undefined>) {
  let outcome: Outcome = { settled: false };
  const settled = promise.then((status) => {
    outcome = { settled: true, status };
    return status;
  });
  return {
    get outcome(): Outcome {
      return outcome;
    },
    /** The status, or a test failure after BOUND_MS. */
    result: () => within(settled, BOUND_MS),
  };
}

function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const quiet = () => new Promise((resolve) => setTimeout(resolve, QUIET_MS));

const CODE_3 = 'pid=1 code=3 at_ms=5\nfirst log line\nlast log line\n';
const CODE_3_STATUS: ExitStatus = { pid: 1, exitCode: 3, coreDumped: false, exitedAt: new Date(5), logTail: 'first log line\nlast log line' };

describe('ExitWatch: status files', () => {
  it('resolves with a status written before wait()', async () => {
    const target = watched(dummy, dummy);
    await writeStatus(target.statusPath, CODE_3);
    await expect(within(watch.wait(target, { orphan: false }), BOUND_MS)).resolves.toEqual(CODE_3_STATUS);
    expect(watch.size).toBe(0);
  });

  it('resolves with a status written after wait(), seen through the directory watch', async () => {
    const target = watched(dummy, dummy);
    const waiting = track(watch.wait(target, { orphan: false }));
    expect(watch.size).toBe(1);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
    await writeStatus(target.statusPath, CODE_3);
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
    expect(watch.size).toBe(0);
  });

  it('parses a death by signal with a core dump and an empty log tail', async () => {
    const target = watched(dummy, dummy);
    const waiting = track(watch.wait(target, { orphan: false }));
    await writeStatus(target.statusPath, 'pid=77 signal=11 core=1 at_ms=1700000000123\n');
    await expect(waiting.result()).resolves.toEqual({ pid: 77, signal: 'SIGSEGV', coreDumped: true, exitedAt: new Date(1700000000123), logTail: '' });
  });

  it('has no log tail for a status line alone', async () => {
    const target = watched(dummy, dummy);
    await writeStatus(target.statusPath, 'pid=4 code=0 at_ms=9');
    const status = await within(watch.wait(target, { orphan: false }), BOUND_MS);
    expect(status).toEqual({ pid: 4, exitCode: 0, coreDumped: false, exitedAt: new Date(9) });
    expect(status).not.toHaveProperty('logTail');
  });

  it('waits past an incomplete status file until a complete one replaces it', async () => {
    const target = watched(dummy, dummy);
    await writeFile(target.statusPath, 'pid=1 code=');
    const waiting = track(watch.wait(target, { orphan: false }));
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
    await writeStatus(target.statusPath, CODE_3);
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
  });

  it('settles only the waiter whose file appeared, with one directory watch for many', async () => {
    const a = watched(dummy, dummy);
    const b = watched(dummy, dummy);
    const waitingA = track(watch.wait(a, { orphan: false }));
    const waitingB = track(watch.wait(b, { orphan: false }));
    await writeStatus(b.statusPath, 'pid=2 code=0 at_ms=1\n');
    await expect(waitingB.result()).resolves.toMatchObject({ pid: 2, exitCode: 0 });
    await writeFile(join(dir, 'unrelated.status'), 'pid=9 code=9 at_ms=9\n');
    await quiet();
    expect(waitingA.outcome.settled).toBe(false);
    expect(watch.size).toBe(1);
    await writeStatus(a.statusPath, 'pid=1 code=1 at_ms=1\n');
    await expect(waitingA.result()).resolves.toMatchObject({ pid: 1, exitCode: 1 });
  });

  it('watches every directory its waiters are in', async () => {
    const other = join(dir, 'other');
    await mkdir(other);
    const a = watched(dummy, dummy);
    const b = { ...watched(dummy, dummy), statusPath: join(other, 'b.status') };
    const waitingA = track(watch.wait(a, { orphan: false }));
    const waitingB = track(watch.wait(b, { orphan: false }));
    await writeStatus(b.statusPath, 'pid=2 code=0 at_ms=1\n');
    await writeStatus(a.statusPath, 'pid=1 code=0 at_ms=1\n');
    await expect(waitingA.result()).resolves.toMatchObject({ pid: 1 });
    await expect(waitingB.result()).resolves.toMatchObject({ pid: 2 });
  });
});

describe('ExitWatch.reported', () => {
  it('settles with the reported content without reading the file', async () => {
    const target = watched(dummy, dummy);
    // The file says otherwise: the reported content wins, so the file was not read.
    await writeStatus(target.statusPath, 'pid=1 code=99 at_ms=1\n');
    const waiting = track(watch.wait(target, { orphan: false }));
    watch.reported(target.statusPath, CODE_3);
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
    expect(watch.size).toBe(0);
  });

  it('settles with the reported content when there is no file at all', async () => {
    const target = watched(dummy, dummy);
    const waiting = track(watch.wait(target, { orphan: false }));
    watch.reported(target.statusPath, 'pid=5 signal=9 core=0 at_ms=2\ntail\n');
    await expect(waiting.result()).resolves.toEqual({ pid: 5, signal: 'SIGKILL', coreDumped: false, exitedAt: new Date(2), logTail: 'tail' });
  });

  it('reads the file when the report came without content', async () => {
    const target = watched(dummy, dummy);
    const waiting = track(watch.wait(target, { orphan: false }));
    await quiet();
    // Stop the directory watch, so only the report can make it look.
    watch.close();
    await writeStatus(target.statusPath, CODE_3);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
    watch.reported(target.statusPath, undefined);
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
  });

  it('reads the file when the reported content does not parse', async () => {
    const target = watched(dummy, dummy);
    const waiting = track(watch.wait(target, { orphan: false }));
    await quiet();
    watch.close();
    await writeStatus(target.statusPath, CODE_3);
    watch.reported(target.statusPath, 'pid=1 cod');
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
  });

  it('stays waiting when the report came without content and there is no file yet', async () => {
    const target = watched(dummy, dummy);
    const waiting = track(watch.wait(target, { orphan: false }));
    watch.reported(target.statusPath, undefined);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
    await writeStatus(target.statusPath, CODE_3);
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
  });

  it('ignores a report for a path nobody waits on, and a second report', async () => {
    expect(() => watch.reported(join(dir, 'nobody.status'), CODE_3)).not.toThrow();
    const target = watched(dummy, dummy);
    const waiting = track(watch.wait(target, { orphan: false }));
    watch.reported(target.statusPath, CODE_3);
    watch.reported(target.statusPath, 'pid=9 code=9 at_ms=9\n');
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
  });
});

describe('ExitWatch.reaped', () => {
  it('resolves undefined when the reaper is gone without a status and the VMM is gone too', async () => {
    const reaper = await gone();
    const vmm = await gone();
    const waiting = track(watch.wait(watched(reaper, vmm), { orphan: false }));
    watch.reaped(reaper.pid);
    await expect(waiting.result()).resolves.toBeUndefined();
    expect(watch.size).toBe(0);
  });

  it('treats a VMM PID that never existed as gone', async () => {
    const reaper = await gone();
    const waiting = track(watch.wait(watched(reaper, { pid: 2 ** 22 + 7, startTime: 12345n }), { orphan: false }));
    watch.reaped(reaper.pid);
    await expect(waiting.result()).resolves.toBeUndefined();
  });

  it('resolves with the status the reaper wrote before it ended', async () => {
    const reaper = await gone();
    const vmm = await gone();
    const target = watched(reaper, vmm);
    const waiting = track(watch.wait(target, { orphan: false }));
    watch.close(); // only the report can make it look
    await writeStatus(target.statusPath, CODE_3);
    watch.reaped(reaper.pid);
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
  });

  it('keeps waiting while the reported reaper still runs', async () => {
    const reaper = await live();
    const vmm = await gone();
    const waiting = track(watch.wait(watched(reaper, vmm), { orphan: false }));
    watch.reaped(reaper.pid);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
    await kill(reaper.child);
    watch.reaped(reaper.pid);
    await expect(waiting.result()).resolves.toBeUndefined();
  });

  it('takes a live PID with another start time as the reaper being gone (PID reuse)', async () => {
    const impostor = await live();
    const vmm = await gone();
    const waiting = track(watch.wait(watched({ pid: impostor.pid, startTime: impostor.startTime + 1n }, vmm), { orphan: false }));
    watch.reaped(impostor.pid);
    await expect(waiting.result()).resolves.toBeUndefined();
  });

  it('watches a VMM that outlived its reaper until it dies, then resolves undefined', async () => {
    const reaper = await gone();
    const vmm = await live();
    const waiting = track(watch.wait(watched(reaper, vmm), { orphan: false }));
    watch.reaped(reaper.pid);
    await quiet(); // several sweeps: the VMM is alive, so nothing settles
    expect(waiting.outcome.settled).toBe(false);
    expect(watch.size).toBe(1);
    await kill(vmm.child);
    await expect(waiting.result()).resolves.toBeUndefined();
    expect(watch.size).toBe(0);
  });

  it('resolves with a status that appears after the reaper was reported gone while the VMM lives', async () => {
    const reaper = await gone();
    const vmm = await live();
    const target = watched(reaper, vmm);
    const waiting = track(watch.wait(target, { orphan: false }));
    watch.reaped(reaper.pid);
    await quiet();
    await writeStatus(target.statusPath, CODE_3);
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
  });

  it('ignores a reaper PID nobody waits on', async () => {
    const reaper = await gone();
    const vmm = await gone();
    const waiting = track(watch.wait(watched(reaper, vmm), { orphan: false }));
    watch.reaped(reaper.pid + 100_000);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
  });
});

describe('ExitWatch: orphan sweep', () => {
  it('detects an orphan whose reaper died without a status (VMM gone too)', async () => {
    const reaper = await live();
    const vmm = await gone();
    const waiting = track(watch.wait(watched(reaper, vmm), { orphan: true }));
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
    await kill(reaper.child);
    await expect(waiting.result()).resolves.toBeUndefined();
  });

  it('detects an orphan already gone when wait() is called', async () => {
    const reaper = await gone();
    const vmm = await gone();
    await expect(within(watch.wait(watched(reaper, vmm), { orphan: true }), BOUND_MS)).resolves.toBeUndefined();
  });

  it('watches a VMM that outlives its orphaned reaper until it dies', async () => {
    const reaper = await live();
    const vmm = await live();
    const waiting = track(watch.wait(watched(reaper, vmm), { orphan: true }));
    await kill(reaper.child);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
    await kill(vmm.child);
    await expect(waiting.result()).resolves.toBeUndefined();
  });

  it('gets the status of an orphan whose reaper recorded it and ended', async () => {
    const reaper = await live();
    const vmm = await gone();
    const target = watched(reaper, vmm);
    const waiting = track(watch.wait(target, { orphan: true }));
    await writeStatus(target.statusPath, CODE_3);
    await kill(reaper.child);
    await expect(waiting.result()).resolves.toEqual(CODE_3_STATUS);
  });

  it('does not sweep waiters whose reaper is reported by the spawner', async () => {
    const reaper = await live();
    const vmm = await gone();
    const waiting = track(watch.wait(watched(reaper, vmm), { orphan: false }));
    await kill(reaper.child);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
  });

  it('orphanAll() turns the sweep on for every waiter', async () => {
    const reaper = await live();
    const vmm = await gone();
    const other = await live();
    const waiting = track(watch.wait(watched(reaper, vmm), { orphan: false }));
    const alive = track(watch.wait(watched(other, other), { orphan: false }));
    await kill(reaper.child);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
    watch.orphanAll();
    await expect(waiting.result()).resolves.toBeUndefined();
    // A waiter whose reaper runs stays.
    await quiet();
    expect(alive.outcome.settled).toBe(false);
    expect(watch.size).toBe(1);
  });

  it('orphanAll() with nobody waiting does nothing', () => {
    expect(() => watch.orphanAll()).not.toThrow();
    expect(watch.size).toBe(0);
  });

  it('settles many orphans independently', async () => {
    const reapers = await Promise.all(Array.from({ length: 5 }, () => live()));
    const vmm = await gone();
    const waits = reapers.map((reaper) => track(watch.wait(watched(reaper, vmm), { orphan: true })));
    await kill(reapers[2]!.child);
    await expect(waits[2]!.result()).resolves.toBeUndefined();
    expect(waits.filter((w) => w.outcome.settled)).toHaveLength(1);
    await Promise.all(reapers.map((reaper) => kill(reaper.child)));
    await Promise.all(waits.map((w) => expect(w.result()).resolves.toBeUndefined()));
    expect(watch.size).toBe(0);
  });
});

describe('ExitWatch.close', () => {
  it('stops the directory watches: a status written afterwards is not seen', async () => {
    const target = watched(dummy, dummy);
    const waiting = track(watch.wait(target, { orphan: false }));
    await quiet();
    watch.close();
    await writeStatus(target.statusPath, CODE_3);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
  });

  it('stops the sweep: an orphan whose reaper dies afterwards is not seen', async () => {
    const reaper = await live();
    const vmm = await gone();
    const waiting = track(watch.wait(watched(reaper, vmm), { orphan: true }));
    await quiet();
    watch.close();
    await kill(reaper.child);
    await quiet();
    expect(waiting.outcome.settled).toBe(false);
  });

  it('can be called twice', () => {
    watch.close();
    expect(() => watch.close()).not.toThrow();
  });
});
