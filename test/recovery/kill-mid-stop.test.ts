/**
 * Scenario (3): the daemon is SIGKILLed while a StopProcess is in its grace period. The restarted
 * daemon must resume the stop: SIGKILL at the deadline recorded by the first daemon (not a fresh
 * grace period), and an exit with reason STOPPED, whatever ended the VMM meanwhile.
 */
import { expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  exitedAtMs,
  getProcess,
  isAlive,
  leftoverFilesOf,
  outcome,
  readJournalRecords,
  report,
  RPC_MS,
  sleep,
  useRecoverySuite,
  waitForJournalRecord,
  waitRecorded,
} from './support.js';

describeAsRoot('recovery: SIGKILL of the daemon mid-StopProcess', () => {
  const suite = useRecoverySuite();
  let daemon: DaemonProcess | undefined;

  async function serving(): Promise<DaemonProcess> {
    if (!daemon || daemon.exit) daemon = await suite.startDaemon();
    return daemon;
  }

  /** Starts `id`, asks to stop it with `graceMs`, and returns the journalled SIGKILL deadline. */
  async function startThenStop(id: string, knobs: Parameters<typeof suite.bootRequest>[1], graceMs: number) {
    const client = (await serving()).client();
    const pid = (await client.startProcess(await suite.bootRequest(id, knobs), { timeoutMs: RPC_MS })).process!.pid;
    const requestedAt = Date.now();
    const stopping = client
      .stopProcess({ sandboxId: id, gracePeriod: { seconds: BigInt(Math.floor(graceMs / 1000)), nanos: (graceMs % 1000) * 1e6 } }, { timeoutMs: 60_000 })
      .then((r) => r, (e: unknown) => e);
    const killAt = (await waitForJournalRecord(suite.stateDir, (r) => r.k === 'stop' && r.id === id)).killAt as number;
    expect(killAt - requestedAt).toBeGreaterThanOrEqual(graceMs - 50);
    expect(killAt - requestedAt).toBeLessThanOrEqual(graceMs + 1_000);
    return { pid, killAt, stopping };
  }

  it('resumes an interrupted stop: SIGKILL at the recorded deadline, exit STOPPED by SIGKILL', async () => {
    const id = 'stubborn';
    const graceMs = 2_000;
    const { pid, killAt, stopping } = await startThenStop(id, { ignore_sigterm: 1 }, graceMs);
    await sleep(Math.max(0, killAt - graceMs + 500 - Date.now())); // ~0.5 s into the grace
    await daemon!.kill('SIGKILL');
    const killedAt = Date.now();
    expect((await stopping) as { code?: number }).toMatchObject({ code: status.UNAVAILABLE });
    expect(killedAt).toBeLessThan(killAt - 500);
    expect(await isAlive(pid)).toBe(true);

    const client = (await serving()).client();
    const servingAt = daemon!.servingAt!;
    const during = await getProcess(client, id);
    // A StopProcess now joins the resumed stop (its own 30 s grace must not apply).
    const stopAgain = client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 30n } }, { timeoutMs: RPC_MS });
    const waited = (await client.waitProcess({ sandboxId: id }, { timeoutMs: RPC_MS })).process!;
    const exit = waited.exit!;
    report('resumed stop', {
      graceMs,
      daemonKilledIntoGraceMs: killedAt - (killAt - graceMs),
      servingBeforeDeadlineMs: killAt - servingAt,
      exitedAfterDeadlineMs: exitedAtMs(exit) - killAt,
    });
    expect(ProcessState[during.state]).toEqual(servingAt < killAt ? 'STOPPING' : expect.any(String));
    expect(outcome(exit)).toEqual({ sandboxId: id, reason: 'STOPPED', exitCode: undefined, signal: 'SIGKILL', signalSentByDaemon: true });
    expect(exitedAtMs(exit)).toBeGreaterThanOrEqual(killAt);
    expect(exitedAtMs(exit)).toBeLessThanOrEqual(Math.max(killAt, servingAt) + 1_000);
    expect(outcome((await stopAgain).process!.exit)).toEqual(outcome(exit));
    expect(await isAlive(pid)).toBe(false);
    expect(await leftoverFilesOf(suite, [id])).toEqual([]);
  });

  it('keeps the first deadline through a second SIGKILL during the resumed stop', async () => {
    const id = 'twice';
    const graceMs = 5_000;
    const { pid, killAt, stopping } = await startThenStop(id, { ignore_sigterm: 1 }, graceMs);
    await sleep(Math.max(0, killAt - graceMs + 300 - Date.now()));
    await daemon!.kill('SIGKILL');
    await stopping;
    await serving(); // resumes the stop...
    await daemon!.kill('SIGKILL'); // ...and dies too, well before the deadline
    expect(Date.now()).toBeLessThan(killAt - 500);
    expect(await isAlive(pid)).toBe(true);

    const client = (await serving()).client();
    const exit = (await client.waitProcess({ sandboxId: id }, { timeoutMs: RPC_MS })).process!.exit!;
    report('stop resumed twice', { exitedAfterDeadlineMs: exitedAtMs(exit) - killAt });
    expect(outcome(exit)).toEqual({ sandboxId: id, reason: 'STOPPED', exitCode: undefined, signal: 'SIGKILL', signalSentByDaemon: true });
    expect(exitedAtMs(exit)).toBeGreaterThanOrEqual(killAt);
    expect(exitedAtMs(exit)).toBeLessThanOrEqual(Math.max(killAt, daemon!.servingAt!) + 1_000);
    expect((await readJournalRecords(suite.stateDir)).filter((r) => r.k === 'stop' && r.id === id).map((r) => r.killAt)).toEqual([killAt, killAt, killAt]);
  });

  it('sends SIGKILL at once when the recorded deadline passed while the daemon was down', async () => {
    const id = 'overdue';
    const { pid, killAt, stopping } = await startThenStop(id, { ignore_sigterm: 1 }, 1_000);
    await daemon!.kill('SIGKILL');
    await stopping;
    await sleep(Math.max(0, killAt + 500 - Date.now()));
    expect(await isAlive(pid)).toBe(true);

    const restartAt = Date.now();
    const client = (await serving()).client();
    const exit = (await client.waitProcess({ sandboxId: id }, { timeoutMs: RPC_MS })).process!.exit!;
    expect(outcome(exit)).toEqual({ sandboxId: id, reason: 'STOPPED', exitCode: undefined, signal: 'SIGKILL', signalSentByDaemon: true });
    expect(exitedAtMs(exit)).toBeGreaterThanOrEqual(restartAt);
    expect(exitedAtMs(exit)).toBeLessThanOrEqual(daemon!.servingAt! + 1_000);
    expect(await isAlive(pid)).toBe(false);
  });

  it('classifies a VMM that honoured the SIGTERM while the daemon was down as STOPPED with its exit code', async () => {
    const id = 'polite';
    // Wide enough that the daemon is surely down before the VMM obeys, even on a loaded host.
    const { pid, stopping } = await startThenStop(id, { sigterm_delay_ms: 3_000 }, 10_000);
    await daemon!.kill('SIGKILL');
    await stopping;
    const recordedBy = await waitRecorded(pid, suite.statusFileOf(id));

    const client = (await serving()).client();
    const exit = (await client.waitProcess({ sandboxId: id }, { timeoutMs: RPC_MS })).process!.exit!;
    expect(outcome(exit)).toEqual({ sandboxId: id, reason: 'STOPPED', exitCode: 0, signal: undefined, signalSentByDaemon: false });
    expect(exitedAtMs(exit)).toBeLessThanOrEqual(recordedBy);
    // Ended before the next daemon existed (both clocks in whole milliseconds: the same one counts).
    expect(exitedAtMs(exit)).toBeLessThanOrEqual(daemon!.spawnedAt);
    expect(await leftoverFilesOf(suite, [id])).toEqual([]);
  });
});
