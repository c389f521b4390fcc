import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { VmprocError } from '../errors.js';

/**
 * Exclusive ownership of a state directory, so two daemons never supervise the same VMMs.
 *
 * The lock is an OFD lock (fcntl F_OFD_SETLK, write, whole file) on `<stateDir>/vmprocd.lock`, a
 * 0600 file of root's, held by a tiny process (`vmprocd-reaper --lock`, native/vmprocd-reaper.c)
 * because Node cannot call fcntl. The lock lives as long as the holder, and the holder as long as
 * its stdin: however the daemon dies, even by SIGKILL, the pipe closes and the lock goes with it,
 * so there is no stale lock to misjudge. Unlike an abstract unix socket, nobody but root can take
 * or flood it (pitfalls.md 12). The holder's PID is written beside it for operators.
 */
export interface StateLock {
  /** The holder process, for operators and tests. */
  readonly holderPid: number;
  /** Ends the holder's stdin and resolves once it has exited: the lock is free then. */
  release(): Promise<void>;
  /**
   * Called once if the holder ends before release(): the lock is lost, and another daemon may
   * take the state directory at any moment. The daemon must stop.
   */
  onLost(listener: (error: VmprocError) => void): void;
}

/** The lock file in a state directory. */
export function lockFileOf(stateDir: string): string {
  return join(stateDir, 'vmprocd.lock');
}

/** How long the holder may take to say whether it got the lock (it never waits for it). */
const ANSWER_MS = 10_000;

/**
 * Takes the state directory (creating it, mode 0700, if absent) with `reaperBin --lock`. Throws
 * `failed-precondition` when another daemon holds it or the lock file is not a plain file.
 */
export async function lockStateDir(stateDir: string, reaperBin: string): Promise<StateLock> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const lockFile = lockFileOf(stateDir);
  const holder = spawn(reaperBin, ['--lock', lockFile], { stdio: ['pipe', 'pipe', 'ignore'] });
  // Whatever happens to the holder, a write to its stdin (there is none but end()) must not throw.
  holder.stdin!.on('error', () => {});
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    holder.once('exit', (code, signal) => resolve({ code, signal })));
  let answer: string;
  try {
    answer = await firstLine(holder, reaperBin, exited);
  } catch (error) {
    holder.kill('SIGKILL');
    throw error;
  }
  if (answer !== 'locked') {
    holder.stdin!.end();
    await exited;
    if (answer === 'busy') {
      throw new VmprocError(
        'failed-precondition',
        `another vmprocd is already using the state directory ${stateDir} (see ${join(stateDir, 'vmprocd.pid')}); ` +
          'stop it first, or give this one its own --state-dir',
      );
    }
    const reason = answer.startsWith('failed ') ? answer.slice('failed '.length) : `unexpected answer ${JSON.stringify(answer)}`;
    throw new VmprocError('failed-precondition', `cannot lock the state directory ${stateDir}: ${reason}`);
  }
  return holdingLock(holder, exited, stateDir, lockFile);
}

async function holdingLock(
  holder: ChildProcess,
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
  stateDir: string,
  lockFile: string,
): Promise<StateLock> {
  let releasing = false;
  const lostListeners = new Set<(error: VmprocError) => void>();
  void exited.then(({ code, signal }) => {
    if (releasing) return;
    const error = new VmprocError(
      'unavailable',
      `the holder of the state directory lock ${lockFile} (pid ${holder.pid}) ended (${signal ?? `exit code ${code}`}); ` +
        `the lock is lost and another vmprocd may take ${stateDir}`,
    );
    for (const listener of lostListeners) listener(error);
  });
  const lock: StateLock = {
    holderPid: holder.pid!,
    async release() {
      releasing = true;
      // Waited for, so it must keep the process alive again until it has ended.
      holder.ref();
      holder.stdin!.end();
      await exited;
    },
    onLost(listener) {
      lostListeners.add(listener);
    },
  };
  try {
    await writeFile(join(stateDir, 'vmprocd.pid'), `${process.pid}\n`, { mode: 0o644 });
  } catch (error) {
    await lock.release();
    throw error;
  }
  // Like the listen socket it replaces, the lock alone never keeps the daemon's process alive.
  holder.unref();
  (holder.stdin as unknown as { unref?: () => void }).unref?.();
  (holder.stdout as unknown as { unref?: () => void }).unref?.();
  return lock;
}

/** The holder's one answer line; rejects if it cannot run, ends first, or says nothing in time. */
function firstLine(holder: ChildProcess, reaperBin: string, exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: holder.stdout! });
    const timer = setTimeout(
      () => reject(new VmprocError('unavailable', `${reaperBin} --lock gave no answer within ${ANSWER_MS / 1000}s`)),
      ANSWER_MS,
    );
    const done = () => {
      clearTimeout(timer);
      lines.close();
    };
    lines.once('line', (line) => {
      done();
      resolve(line);
    });
    // Its stdout ends, not its exit: 'exit' may come before the line it wrote has been read.
    lines.once('close', () => {
      done();
      void exited.then(({ code, signal }) =>
        reject(new VmprocError('internal', `${reaperBin} --lock ended (${signal ?? `exit code ${code}`}) without an answer`)));
    });
    holder.once('error', (cause) => {
      done();
      reject(new VmprocError('failed-precondition', `cannot run ${reaperBin} --lock: ${cause.message}`, { cause }));
    });
  });
}
