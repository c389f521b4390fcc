/**
 * A damaged state journal: a torn final record (the daemon died mid-write) is dropped with a
 * warning and everything before it is kept; a corrupt record anywhere before that stops the
 * daemon with a clear error that names the file and the line, and touches nothing (no VMM killed,
 * the file left as it was for the operator). Never a silent loss.
 */
import { expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ExitReason, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { readProcessStat } from '../../src/launch/proc-stat.js';
import { encodeRecord } from '../../src/store/journal.js';
import type { DaemonProcessOptions } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  eventually,
  ExitCollector,
  getProcess,
  isAlive,
  journalPath,
  outcome,
  readJournalRecords,
  replayExits,
  RPC_MS,
  useRecoverySuite,
  waitProcess,
} from './support.js';

describeAsRoot('recovery: a corrupted or truncated state journal', () => {
  const suite = useRecoverySuite();
  /** Each test its own state directory, and its own listen socket so daemons of several can run at once. */
  const stateOf = (name: string): DaemonProcessOptions => ({
    stateDir: join(suite.fixture.root, `state-${name}`),
    socketPath: join(suite.fixture.root, `${name}.sock`),
  });

  async function startVmm(options: DaemonProcessOptions, id: string) {
    const daemon = await suite.startDaemon(options);
    const info = (await daemon.client().startProcess(await suite.bootRequest(id), { timeoutMs: RPC_MS })).process!;
    return { daemon, pid: info.pid, startTime: (await readProcessStat(info.pid))!.startTime };
  }

  it('drops a torn final record with a warning and keeps every complete one (the VMM is re-adopted)', async () => {
    const options = stateOf('a');
    const { daemon, pid } = await startVmm(options, 'torn');
    await daemon.kill('SIGKILL');
    const path = journalPath(options.stateDir!);
    const cleanSize = (await stat(path)).size;
    const whole = encodeRecord({ k: 'stop', id: 'torn', killAt: Date.now() });
    const torn = whole.slice(0, Math.floor(whole.length / 2));
    await writeFile(path, torn, { flag: 'a' });

    const restarted = await suite.startDaemon(options);
    const warning = await restarted.waitForLog((l) => typeof l.msg === 'string' && l.msg.includes('torn final record'));
    expect(warning).toMatchObject({ bytes: Buffer.byteLength(torn), stateDir: options.stateDir });
    expect((await stat(path)).size).toBeGreaterThanOrEqual(cleanSize); // cut back to the clean end, then appended to
    expect((await readFile(path, 'utf8')).includes(torn)).toBe(false);
    const info = await getProcess(restarted.client(), 'torn');
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid });
    expect(restarted.servingLine!.readopted).toBe(1);
    await restarted.kill('SIGKILL');
  });

  it('recovers safely when the cut falls inside the last real record: the start is finished again', async () => {
    const options = stateOf('a');
    const daemon = await suite.startDaemon(options);
    const client = daemon.client();
    const pid = (await client.startProcess(await suite.bootRequest('cut'), { timeoutMs: RPC_MS })).process!.pid;
    await daemon.kill('SIGKILL');
    // Cut the journal in the middle of cut's `ready` record (its READY event, written after it, goes too).
    const path = journalPath(options.stateDir!);
    const text = await readFile(path, 'utf8');
    const lastLineStart = text.lastIndexOf('"k":"ready"');
    const readyLineStart = text.lastIndexOf('\n', lastLineStart) + 1;
    expect(text.slice(readyLineStart, text.indexOf('\n', readyLineStart))).toContain('"id":"cut"');
    await truncate(path, Buffer.byteLength(text.slice(0, readyLineStart)) + 20);

    const restarted = await suite.startDaemon(options);
    await restarted.waitForLog((l) => typeof l.msg === 'string' && l.msg.includes('torn final record'));
    const info = await waitProcess(restarted.client(), 'cut', (p) => p.state !== ProcessState.STARTING);
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid });
    expect(ProcessState[(await getProcess(restarted.client(), 'torn')).state]).toBe('RUNNING');
    expect((await readJournalRecords(options.stateDir!)).filter((r) => r.id === 'cut').map((r) => r.k)).toEqual(['launch', 'spawn', 'ready']);
  });

  it('refuses to start on a corrupt early record, naming the file and line, and kills nothing', async () => {
    const options = stateOf('b');
    const first = await startVmm(options, 'early');
    await first.daemon.client().signalProcess({ sandboxId: 'early', signal: 'SIGCONT' }, { timeoutMs: RPC_MS });
    await first.daemon.kill('SIGKILL');
    const path = journalPath(options.stateDir!);
    const original = await readFile(path, 'utf8');
    // One byte of line 1 (a record kind's first letter, upper-cased): valid JSON, wrong checksum.
    const at = original.indexOf('"k":"') + 5;
    expect(at).toBeGreaterThan(5);
    expect(at).toBeLessThan(original.indexOf('\n'));
    const corrupt = original.slice(0, at) + original[at]!.toUpperCase() + original.slice(at + 1);
    expect(corrupt).not.toBe(original);
    await writeFile(path, corrupt);

    const refused = suite.launchDaemon(options);
    const exit = await refused.waitExit(15_000);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    const fatal = refused.logs.find((l) => l.level === 60);
    expect(fatal?.msg).toEqual(expect.stringContaining(`state journal ${path} is corrupt at line 1`));
    expect(refused.servingLine).toBeUndefined();
    // Nothing was killed, and the evidence is left as it was.
    expect(await isAlive(first.pid)).toBe(true);
    expect((await readProcessStat(first.pid))!.startTime).toBe(first.startTime);
    expect(await readFile(path, 'utf8')).toBe(corrupt);

    // Once the operator restores the file, a daemon starts (no lock left behind) and re-adopts it.
    await writeFile(path, original);
    const restored = await suite.startDaemon(options);
    const info = await getProcess(restored.client(), 'early');
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid: first.pid });
    await restored.stop();
  });

  // A complete final line (it ends with its newline) that fails its checksum cannot come from a
  // write interrupted by a crash, yet readJournal (journal.ts, `isLast` in readJournal) treats any
  // bad last line as a torn tail and drops it. When that line is an exit already published, the
  // record goes back to live, and the restarted daemon publishes a different exit (LOST) under the
  // very sequence number watchers already saw as STOPPED.
  it('a corrupt (not torn) final record is refused, or recovered without re-using its sequence for another exit', async () => {
    const options = stateOf('c');
    const { daemon } = await startVmm(options, 'tail');
    const client = daemon.client();
    const watcher = ExitCollector.watch(client, { afterSequence: 0n });
    const stopped = (await client.stopProcess({ sandboxId: 'tail', gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS })).process!.exit!;
    await watcher.until((e) => e.length >= 1, RPC_MS);
    // The daemon is done with the exit: its reaper's status file is gone (nothing left to re-read).
    await eventually(() => !existsSync(suite.statusFileOf('tail')), RPC_MS);
    await daemon.kill('SIGKILL');
    await watcher.close();
    expect(outcome(watcher.exits[0])).toEqual(outcome(stopped));

    const path = journalPath(options.stateDir!);
    const text = await readFile(path, 'utf8');
    // The exit's record: the last one, or followed only by the EXITED event written beside it.
    const lastLineStart = text.lastIndexOf('\n', text.lastIndexOf('"k":"exit"')) + 1;
    const exitLineEnd = text.indexOf('\n', lastLineStart) + 1;
    expect(text.slice(exitLineEnd).split('\n').filter((line) => line !== '' && !line.includes('"k":"event"'))).toEqual([]);
    await writeFile(path, text.slice(0, lastLineStart) + text.slice(lastLineStart, exitLineEnd).replace('"reason":"stopped"', '"reason":"stoppe!"') + text.slice(exitLineEnd));

    const next = suite.launchDaemon(options);
    const outcomeOfStart = await Promise.race([
      next.waitForServing(15_000).then(() => 'serving' as const),
      next.waitExit(15_000).then(() => 'refused' as const),
    ]);
    if (outcomeOfStart === 'refused') {
      expect(next.output).toContain(path);
      return;
    }
    const replayed = await replayExits(next.client(), stopped.sequence - 1n, 1);
    await waitProcess(next.client(), 'tail', (p) => p.state === ProcessState.EXITED);
    const again = await replayExits(next.client(), stopped.sequence - 1n, 1);
    expect({ first: outcome(replayed[0]), later: outcome(again[0]) }).toEqual({ first: outcome(stopped), later: outcome(stopped) });
    expect(again[0]!.reason).toBe(ExitReason.STOPPED);
  });
});
