/**
 * A full state disk loses nothing. The state dir is on a small tmpfs that the test fills up:
 * StartProcess fails with RESOURCE_EXHAUSTED naming the disk and spawns nothing; a stop still
 * works and its exit is published although it cannot be journalled; the journal never gets a torn
 * record. Across SIGKILLs, a daemon started on the full disk and one started once space is free
 * re-adopt the live VMM, publish the unrecorded exit again, and number every exit after anything
 * a watcher saw: one exit may come twice, with two sequences, but no sequence comes twice.
 */
import { beforeAll, expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { ProcessState, type ProcessExit } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { readJournal } from '../../src/store/journal.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  eventually,
  ExitCollector,
  expectRpcError,
  getProcess,
  isAlive,
  journalPath,
  leftoverFilesOf,
  processesMentioning,
  readJournalRecords,
  RPC_MS,
  sequencesOf,
  useRecoverySuite,
  WAIT_MS,
} from './support.js';

/** Room for the journal of a few launches, and little else. */
const TMPFS_SIZE = '1m';

/**
 * Labels of 8 KiB: every record that carries them (a launch, an exit) needs more than the free
 * end of the journal's last page, so it cannot slip into a "full" tmpfs.
 */
const BIG_LABELS = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`pad${i}`, `${i}`.repeat(1000)]));

describeAsRoot('recovery: a full state disk', () => {
  const suite = useRecoverySuite();
  let mountPoint: string;
  let stateDir: string;
  let filler: string;
  let floorFile: string;

  beforeAll(async () => {
    mountPoint = join(suite.fixture.root, 'statefs');
    stateDir = join(mountPoint, 'state');
    filler = join(mountPoint, 'filler');
    floorFile = join(suite.fixture.runDir, 'exit-sequence-floor');
    await mkdir(mountPoint);
    await execa('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE},mode=0700`, 'vmprocd-test-state', mountPoint]);
    // After every daemon is stopped (their journals and lock files are on it), before the
    // fixture is removed: always.
    suite.onTeardown(async () => {
      const busy = await execa('umount', [mountPoint], { reject: false });
      if (busy.exitCode !== 0) {
        await execa('umount', ['-l', mountPoint]);
        throw new Error(`umount ${mountPoint} failed (${busy.stderr.trim()}); detached it lazily`);
      }
    });
  });

  /** Writes `filler` until the tmpfs has no free block left. */
  async function fillTheDisk(): Promise<void> {
    const handle = await open(filler, 'w');
    const chunk = Buffer.alloc(64 * 1024, 0x2e);
    try {
      for (;;) {
        try {
          await handle.write(chunk);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw error;
        }
      }
    } finally {
      await handle.close();
    }
    expect((await statfs(mountPoint)).bavail).toBe(0);
  }

  const start = (daemon: DaemonProcess, id: string) =>
    suite.bootRequest(id, {}, { labels: BIG_LABELS }).then((request) => daemon.client().startProcess(request, { timeoutMs: RPC_MS }));

  /** Exit records the journal holds for `sandboxId`, by sequence. */
  async function journalledExitsOf(sandboxId: string): Promise<number[]> {
    return (await readJournalRecords(stateDir)).filter((r) => r.k === 'exit' && r.event?.sandboxId === sandboxId).map((r) => Number(r.event!.sequence));
  }

  /** How an exit ended, to compare a republished one with the first. */
  const ending = (e: ProcessExit) => ({ sandboxId: e.sandboxId, pid: e.pid, exitCode: e.exitCode, signal: e.signal });

  it('refuses starts, still stops and publishes, and never reuses a sequence across restarts on and off the full disk', async () => {
    const first = await suite.startDaemon({ stateDir });
    const watchers = [ExitCollector.watch(first.client(), { afterSequence: 0n })];

    // An exit the journal has, so numbering has something to continue from.
    await start(first, 'warm');
    await first.client().stopProcess({ sandboxId: 'warm', gracePeriod: { seconds: 0n } }, { timeoutMs: RPC_MS });
    const keepPid = (await start(first, 'keep')).process!.pid;
    const gonePid = (await start(first, 'gone')).process!.pid;
    expect(await journalledExitsOf('warm')).toEqual([1]);

    let stopped: ProcessExit;
    try {
      await fillTheDisk();

      // A start fails, naming the disk, and leaves nothing behind.
      const error = await expectRpcError(
        start(first, 'refused'),
        status.RESOURCE_EXHAUSTED,
        'the state disk is full',
        journalPath(stateDir),
        `Free space on the file system that holds ${stateDir}`,
      );
      expect(error.details).toContain('ENOSPC');
      await expectRpcError(getProcess(first.client(), 'refused'), status.NOT_FOUND);
      expect(await processesMentioning(join(suite.fixture.root, 'refused.rootfs'))).toEqual([]);
      expect((await readdir(join(suite.fixture.runDir, 'exits'))).filter((name) => name.startsWith('refused.'))).toEqual([]);
      expect(existsSync(join(suite.fixture.runDir, 'logs', 'refused.log'))).toBe(false);

      // A running VMM is still stopped, and its exit published though the journal cannot take it.
      stopped = (await first.client().stopProcess({ sandboxId: 'gone', gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS })).process!.exit!;
      expect(stopped.sequence).toBe(2n);
      expect(ending(await watchers[0]!.exitOf('gone'))).toEqual(ending(stopped));
      expect(await isAlive(gonePid)).toBe(false);
      expect(await journalledExitsOf('gone')).toEqual([]);
      expect(await readFile(floorFile, 'utf8')).toBe('2\n');
      expect(ProcessState[(await getProcess(first.client(), 'keep')).state]).toBe('RUNNING');
      // Failed writes were truncated away: no torn record.
      expect((await readJournal(journalPath(stateDir))).droppedTailBytes).toBe(0);

      await first.kill('SIGKILL');
      await watchers[0]!.waitForEnd();

      // A daemon starts on the full disk: it re-adopts `keep`, and publishes `gone`'s exit again,
      // after the floor; unable to journal it either, it raises the floor.
      const onFull = await suite.startDaemon({ stateDir });
      expect(onFull.servingLine!.readopted).toBe(1);
      expect(onFull.logs.some((l) => l.msg?.includes('numbering goes on after them') && l.sequenceFloor === 2)).toBe(true);
      watchers.push(ExitCollector.watch(onFull.client(), { afterSequence: watchers[0]!.lastSequence }));
      const again = await watchers[1]!.exitOf('gone');
      expect({ sequence: again.sequence, ...ending(again) }).toEqual({ sequence: 3n, ...ending(stopped) });
      expect(await readFile(floorFile, 'utf8')).toBe('3\n');
      await onFull.kill('SIGKILL');
      await watchers[1]!.waitForEnd();
    } finally {
      // Space again (for the suite's teardown too, should this have failed half-way).
      await rm(filler, { force: true });
    }

    // The next daemon re-adopts `keep` and journals `gone`'s exit at last.
    const freed = await suite.startDaemon({ stateDir });
    expect(freed.servingLine!.readopted).toBe(1);
    const info = await getProcess(freed.client(), 'keep');
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid: keepPid });
    watchers.push(ExitCollector.watch(freed.client(), { afterSequence: watchers[1]!.lastSequence }));
    const recorded = await watchers[2]!.exitOf('gone');
    expect({ sequence: recorded.sequence, ...ending(recorded) }).toEqual({ sequence: 4n, ...ending(stopped) });
    expect(await journalledExitsOf('gone')).toEqual([4]);
    await eventually(() => !existsSync(floorFile), WAIT_MS);
    await eventually(async () => (await leftoverFilesOf(suite, ['gone'])).length === 0, WAIT_MS);

    // Numbering goes on from there, journalled again.
    await freed.client().stopProcess({ sandboxId: 'keep', gracePeriod: { seconds: 0n } }, { timeoutMs: RPC_MS });
    expect((await watchers[2]!.exitOf('keep')).sequence).toBe(5n);
    expect(await journalledExitsOf('keep')).toEqual([5]);
    await watchers[2]!.close();

    // One watcher following the daemons with after_sequence saw each sequence once, in order.
    const seen = watchers.flatMap((w) => w.exits);
    expect(sequencesOf(seen)).toEqual([1, 2, 3, 4, 5]);
    expect(seen.map((e) => e.sandboxId)).toEqual(['warm', 'gone', 'gone', 'gone', 'keep']);
    expect((await freed.stop()).code).toBe(0);
  });
});
