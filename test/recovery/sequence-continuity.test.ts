/**
 * Exit sequence numbers across daemon restarts: they continue (never reused), a watcher that
 * reconnects with the last sequence it saw gets exactly what it missed, and a small
 * --exit-history still bounds the replay (OUT_OF_RANGE) after a restart, because the store
 * prunes its history too. Exited records kept for Get/Wait are bounded by the same limit.
 */
import { expect, it } from '@jest/globals';
import { type ServiceError, status } from '@grpc/grpc-js';
import { ExitReason } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  ExitCollector,
  expectRpcError,
  expectWatchError,
  getProcess,
  range,
  replayExits,
  RPC_MS,
  sequencesOf,
  sleep,
  useRecoverySuite,
  waitGone,
  watchError,
} from './support.js';

const HISTORY = 3;

describeAsRoot('recovery: exit sequences across restarts', () => {
  const suite = useRecoverySuite();
  let daemon: DaemonProcess;

  async function restart(signal: NodeJS.Signals = 'SIGKILL'): Promise<DaemonProcess> {
    if (daemon && !daemon.exit) await daemon.kill(signal);
    daemon = await suite.startDaemon({ exitHistory: HISTORY });
    return daemon;
  }

  async function startAll(ids: readonly string[]): Promise<Map<string, number>> {
    const client = daemon.client();
    const pids = new Map<string, number>();
    for (const id of ids) pids.set(id, (await client.startProcess(await suite.bootRequest(id), { timeoutMs: RPC_MS })).process!.pid);
    return pids;
  }

  async function stop(id: string) {
    return (await daemon.client().stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } }, { timeoutMs: RPC_MS })).process!.exit!;
  }

  it('continues numbering after a SIGKILL, and a reconnecting watcher gets exactly the exits it missed', async () => {
    await restart();
    const pids = await startAll(['s1', 's2', 's3', 's4', 's5']);
    const watcher = ExitCollector.watch(daemon.client(), { afterSequence: 0n });
    await stop('s1');
    await stop('s2');
    await watcher.until((e) => e.length >= 2, RPC_MS, 'two exits');

    await daemon.kill('SIGKILL');
    await watcher.waitForEnd();
    expect(status[(watcher.error as ServiceError | undefined)?.code ?? -1]).toBe('UNAVAILABLE');
    // Missed while down: two VMMs killed by the test.
    for (const id of ['s3', 's4']) process.kill(pids.get(id)!, 'SIGKILL');
    for (const id of ['s3', 's4']) await waitGone(pids.get(id)!);

    await restart();
    const resumed = ExitCollector.watch(daemon.client(), { afterSequence: watcher.lastSequence });
    await resumed.until((e) => e.length >= 2, RPC_MS, 'the two missed exits');
    await stop('s5');
    await resumed.until((e) => e.length >= 3, RPC_MS, 'the live exit');
    await sleep(300); // anything more would be a duplicate
    await resumed.close();

    expect(sequencesOf(watcher.exits)).toEqual([1, 2]);
    expect(sequencesOf(resumed.exits)).toEqual([3, 4, 5]);
    expect(resumed.exits.slice(0, 2).map((e) => e.sandboxId).sort()).toEqual(['s3', 's4']);
    expect(resumed.exits.slice(0, 2).map((e) => [e.reason, e.signal])).toEqual([
      [ExitReason.SIGNALED, 'SIGKILL'],
      [ExitReason.SIGNALED, 'SIGKILL'],
    ]);
    expect(resumed.exits[2]!.sandboxId).toBe('s5');
  });

  it('bounds the replay by --exit-history after a restart: OUT_OF_RANGE before it, replay within it', async () => {
    await restart();
    expect(daemon.servingLine!.exitSequence).toBe(5);
    const client = daemon.client();
    // History holds 3, 4, 5.
    await expectWatchError(client, 0n, status.OUT_OF_RANGE, 'older than the retained exit history');
    await expectWatchError(client, 1n, status.OUT_OF_RANGE, 'oldest retained is 3');
    expect(sequencesOf(await replayExits(client, 2n, 3))).toEqual([3, 4, 5]);
    await expectWatchError(client, 6n, status.OUT_OF_RANGE, 'newer than the latest exit sequence 5');
    expect(await watchError(client, 5n, 500)).toBeUndefined();

    // The next exit is 6: nothing was renumbered or reused.
    await startAll(['s6']);
    expect((await stop('s6')).sequence).toBe(6n);
    expect(sequencesOf(await replayExits(client, 3n, 3))).toEqual([4, 5, 6]);
  });

  it('keeps the most recent exited records for Get after a restart, and forgets older ones', async () => {
    await restart();
    const client = daemon.client();
    // Exits 4, 5, 6 are s3|s4, s5, s6.
    await expectRpcError(getProcess(client, 's1'), status.NOT_FOUND);
    await expectRpcError(getProcess(client, 's2'), status.NOT_FOUND);
    expect((await getProcess(client, 's6')).exit?.sequence).toBe(6n);
    expect((await getProcess(client, 's5')).exit?.sequence).toBe(5n);
  });

  // Exited records are retained for Get/Wait in exit order while the daemon runs
  // (supervisor.ts #retainExited), but recover() re-inserts them in journal *launch* order, so
  // after a restart the next exit evicts the record launched first, not the one that exited first.
  it('after a restart, a new exit evicts the oldest exited record (r3), not the most recent one that happens to be launched first (r1)', async () => {
    await restart();
    await startAll(['r1', 'r2', 'r3']);
    await stop('r3'); // 7
    await stop('r2'); // 8
    await stop('r1'); // 9: retained now r3, r2, r1
    await restart();
    await startAll(['r4']);
    expect((await stop('r4')).sequence).toBe(10n);
    const client = daemon.client();
    const present = async (id: string) => getProcess(client, id).then(() => true, () => false);
    expect({ r1: await present('r1'), r2: await present('r2'), r3: await present('r3'), r4: await present('r4') }).toEqual({
      r1: true,
      r2: true,
      r3: false,
      r4: true,
    });
  });

  it('numbers exits contiguously over every restart of this suite', async () => {
    await restart();
    const client = daemon.client();
    const { exitSequence } = await client.listProcesses({}, { timeoutMs: RPC_MS });
    const last = Number(exitSequence);
    expect(last).toBeGreaterThanOrEqual(6);
    expect(sequencesOf(await replayExits(client, BigInt(last - HISTORY), HISTORY))).toEqual(range(last - HISTORY + 1, last));
  });
});
