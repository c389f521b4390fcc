/**
 * What a daemon knew before a SIGKILL, the next one knows after: requests journalled before the
 * kill keep their meaning (a SignalProcess still counts as sent by the daemon), a compacted
 * journal holds the same state as the records it replaced, and a failed relaunch does not erase
 * the sandbox's previous exit.
 */
import { expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { mkdir, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  expectRpcError,
  getProcess,
  isAlive,
  journalPath,
  outcome,
  readJournalRecords,
  report,
  RPC_MS,
  useRecoverySuite,
  waitGone,
} from './support.js';

describeAsRoot('recovery: the journal replays what the previous daemon knew', () => {
  const suite = useRecoverySuite();
  let daemon: DaemonProcess | undefined;

  async function serving(): Promise<DaemonProcess> {
    if (!daemon || daemon.exit) daemon = await suite.startDaemon();
    return daemon;
  }

  it('credits a signal sent through SignalProcess before the kill to the daemon, after the restart', async () => {
    const client = (await serving()).client();
    const pid = (await client.startProcess(await suite.bootRequest('usr1'), { timeoutMs: RPC_MS })).process!.pid;
    // Stopped, the VMM holds the daemon's SIGUSR1 pending until the daemon is gone.
    process.kill(pid, 'SIGSTOP');
    await client.signalProcess({ sandboxId: 'usr1', signal: 'SIGUSR1' }, { timeoutMs: RPC_MS });
    await daemon!.kill('SIGKILL');
    process.kill(pid, 'SIGCONT');
    await waitGone(pid);

    const exit = (await (await serving()).client().waitProcess({ sandboxId: 'usr1' }, { timeoutMs: RPC_MS })).process!.exit!;
    expect(outcome(exit)).toEqual({ sandboxId: 'usr1', reason: 'SIGNALED', exitCode: undefined, signal: 'SIGUSR1', signalSentByDaemon: true });
  });

  it('keeps the previous exit of a sandbox whose relaunch failed before spawning', async () => {
    const client = (await serving()).client();
    await client.startProcess(await suite.bootRequest('again'), { timeoutMs: RPC_MS });
    const first = (await client.stopProcess({ sandboxId: 'again', gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS })).process!.exit!;
    // A directory where the log goes: the relaunch fails in the spawner, after its launch record is
    // written and before any process exists.
    const log = join(suite.fixture.runDir, 'logs', 'again.log');
    await rm(log);
    await mkdir(log);
    await expectRpcError(client.startProcess(await suite.bootRequest('again'), { timeoutMs: RPC_MS }), status.INTERNAL, 'cannot open log');
    await rmdir(log);
    const before = await getProcess(client, 'again');
    expect({ state: ProcessState[before.state], exit: outcome(before.exit) }).toEqual({ state: 'EXITED', exit: outcome(first) });
    expect((await readJournalRecords(suite.stateDir)).filter((r) => r.id === 'again').map((r) => r.k).slice(-2)).toEqual(['launch', 'abandon']);
  });

  // applyRecord (state-store.ts) lets the relaunch's `launch` record replace the exited record and
  // the `abandon` record then deletes the sandbox altogether, while the running supervisor put the
  // previous record back (supervisor.ts start(), catch block). After a restart Get says NOT_FOUND.
  it('still shows that previous exit after a restart', async () => {
    await daemon!.kill('SIGKILL');
    const after = await getProcess((await serving()).client(), 'again');
    expect({ state: ProcessState[after.state], reason: outcome(after.exit)?.reason }).toEqual({ state: 'EXITED', reason: 'STOPPED' });
  });

  it('replays a compacted journal to the same state after a SIGKILL', async () => {
    const client = (await serving()).client();
    const pid = (await client.startProcess(await suite.bootRequest('busy'), { timeoutMs: RPC_MS })).process!.pid;
    const { exitSequence } = await client.listProcesses({}, { timeoutMs: RPC_MS });
    const path = journalPath(suite.stateDir);
    const startedAt = Date.now();
    // Over a thousand records (one per signal) make the store compact the journal.
    const sizeBefore = (await stat(path)).size;
    let peak = sizeBefore;
    for (let batch = 0; batch < 22; batch++) {
      await Promise.all(Array.from({ length: 50 }, () => client.signalProcess({ sandboxId: 'busy', signal: 'SIGCONT' }, { timeoutMs: RPC_MS })));
      peak = Math.max(peak, (await stat(path)).size);
    }
    const records = await readJournalRecords(suite.stateDir);
    report('compaction', { signals: 1_100, ms: Date.now() - startedAt, peakBytes: peak, bytesAfter: (await stat(path)).size, recordsAfter: records.length });
    expect(records.length).toBeLessThan(1_000);
    expect(records.some((r) => r.k === 'process')).toBe(true);

    await daemon!.kill('SIGKILL');
    const restarted = await serving();
    const after = restarted.client();
    const info = await getProcess(after, 'busy');
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid });
    expect((await after.listProcesses({}, { timeoutMs: RPC_MS })).exitSequence).toBe(exitSequence);
    expect(restarted.servingLine!.exitSequence).toBe(Number(exitSequence));
    // Earlier exits are still known.
    expect(outcome((await getProcess(after, 'usr1')).exit)?.signal).toBe('SIGUSR1');
    const stopped = (await after.stopProcess({ sandboxId: 'busy', gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS })).process!.exit!;
    expect(stopped.sequence).toBe(exitSequence + 1n);
    expect(await isAlive(pid)).toBe(false);
  });
});
