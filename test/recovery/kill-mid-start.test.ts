/**
 * Scenario (2): the daemon is SIGKILLed while a StartProcess is pending. The restarted daemon
 * must finish the start within the original ready timeout (the VMM becomes RUNNING, re-adopted),
 * or kill it and publish START_TIMEOUT when that timeout has run out.
 *
 * A kill between the journal's launch record and its spawn record (the PID) is reproduced by
 * taking the spawn record (and what followed it) out of the journal of a killed daemon: the file
 * is append-only, so that is exactly what such a kill leaves.
 */
import { expect, it } from '@jest/globals';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { LaunchMode, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { VmProcessClient } from '../../src/client/vm-process-client.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  appendJournalRecords,
  dropJournalRecords,
  eventually,
  exitedAtMs,
  expectRpcError,
  getProcess,
  inspectStandin,
  isAlive,
  leftoverFilesOf,
  outcome,
  readJournalRecords,
  replayExits,
  report,
  RPC_MS,
  sleep,
  type StartInit,
  useRecoverySuite,
  waitForJournalRecord,
  waitProcess,
  waitRecorded,
  WAIT_MS,
} from './support.js';

describeAsRoot('recovery: SIGKILL of the daemon mid-StartProcess', () => {
  const suite = useRecoverySuite();
  let daemon: DaemonProcess | undefined;

  /** The serving daemon, started (or restarted) if need be. */
  async function serving(): Promise<DaemonProcess> {
    if (!daemon || daemon.exit) daemon = await suite.startDaemon();
    return daemon;
  }

  async function killDaemon(): Promise<void> {
    await daemon!.kill('SIGKILL');
  }

  /** Starts a StartProcess without awaiting it; the result (or error) is kept. */
  function pendingStart(client: VmProcessClient, request: StartInit): Promise<unknown> {
    return client.startProcess(request, { timeoutMs: 60_000 }).then(
      (r) => r,
      (e: unknown) => e,
    );
  }

  async function spawnRecordOf(id: string) {
    return waitForJournalRecord(suite.stateDir, (r) => r.k === 'spawn' && r.id === id);
  }

  async function launchRecordOf(id: string) {
    const records = await readJournalRecords(suite.stateDir);
    return records.filter((r) => r.k === 'launch' && r.id === id).at(-1)!;
  }

  it('finishes an interrupted start: the VMM becomes RUNNING under the restarted daemon', async () => {
    const id = 'slow';
    const started = pendingStart((await serving()).client(), await suite.bootRequest(id, { socket_delay_ms: 3_000 }, { readyTimeout: { seconds: 20n } }));
    const spawn = await spawnRecordOf(id);
    const pid = spawn.pid as number;
    expect(await isAlive(pid)).toBe(true);
    await killDaemon();
    expect((await started) as { code?: number }).toMatchObject({ code: status.UNAVAILABLE });

    const restartAt = Date.now();
    const client = (await serving()).client();
    const info = await waitProcess(client, id, (p) => p.state !== ProcessState.STARTING);
    report('interrupted start finished', { restartToRunningMs: Date.now() - restartAt, readyAfterLaunchMs: timestampMs(info.readyAt!) - timestampMs(info.startedAt!) });
    expect({ state: ProcessState[info.state], pid: info.pid, vmmVersion: info.vmmVersion, exit: info.exit }).toEqual({
      state: 'RUNNING',
      pid,
      vmmVersion: '53.0.0',
      exit: undefined,
    });
    // The readiness was recorded by the new daemon, after the old one's launch and spawn records.
    expect((await readJournalRecords(suite.stateDir)).filter((r) => r.id === id).map((r) => r.k)).toEqual(['launch', 'spawn', 'ready']);
  });

  it('kills an interrupted start whose ready timeout ran out while the daemon was down: START_TIMEOUT', async () => {
    const id = 'late';
    const request = await suite.bootRequest(id, { socket_delay_ms: 60_000 }, { readyTimeout: { seconds: 1n } });
    const started = pendingStart((await serving()).client(), request);
    const pid = (await spawnRecordOf(id)).pid as number;
    await killDaemon();
    expect((await started) as { code?: number }).toMatchObject({ code: status.UNAVAILABLE });
    const startedAt = (await launchRecordOf(id)).startedAt as number;
    await sleep(Math.max(0, startedAt + 1_500 - Date.now()));
    expect(await isAlive(pid)).toBe(true);

    const restartAt = Date.now();
    const client = (await serving()).client();
    const exit = (await client.waitProcess({ sandboxId: id }, { timeoutMs: RPC_MS })).process!.exit!;
    expect(outcome(exit)).toEqual({ sandboxId: id, reason: 'START_TIMEOUT', exitCode: undefined, signal: 'SIGKILL', signalSentByDaemon: true });
    expect(exit.pid).toBe(pid);
    expect(exitedAtMs(exit)).toBeGreaterThanOrEqual(restartAt);
    expect(await isAlive(pid)).toBe(false);
    expect(await leftoverFilesOf(suite, [id])).toEqual([]);
  });

  it('keeps the original ready deadline across the restart (not a fresh timeout from the restart)', async () => {
    const id = 'deadline';
    const DEADLINE_MS = 4_000;
    const request = await suite.bootRequest(id, { socket_delay_ms: 60_000 }, { readyTimeout: { seconds: BigInt(DEADLINE_MS / 1000) } });
    const started = pendingStart((await serving()).client(), request);
    const pid = (await spawnRecordOf(id)).pid as number;
    await killDaemon();
    await started;
    const startedAt = (await launchRecordOf(id)).startedAt as number;

    const client = (await serving()).client();
    const restartedAt = daemon!.servingAt!;
    expect(restartedAt).toBeLessThan(startedAt + DEADLINE_MS); // else this is the previous test again
    const exit = (await client.waitProcess({ sandboxId: id }, { timeoutMs: RPC_MS })).process!.exit!;
    report('resumed ready deadline', { deadlineMs: DEADLINE_MS, exitedAfterLaunchMs: exitedAtMs(exit) - startedAt, restartAfterLaunchMs: restartedAt - startedAt });
    expect(outcome(exit)).toEqual({ sandboxId: id, reason: 'START_TIMEOUT', exitCode: undefined, signal: 'SIGKILL', signalSentByDaemon: true });
    expect(exitedAtMs(exit) - startedAt).toBeGreaterThanOrEqual(DEADLINE_MS);
    expect(exitedAtMs(exit) - startedAt).toBeLessThan(DEADLINE_MS + 1_500);
    expect(await isAlive(pid)).toBe(false);
  });

  it('restores a snapshot the killed daemon had not asked for yet, once, in restore mode', async () => {
    const id = 'restore-late';
    const sourceUrl = await suite.fixture.snapshot(id);
    const request = await suite.bootRequest(id, { socket_delay_ms: 2_000 }, {
      mode: LaunchMode.RESTORE,
      kernelPath: '',
      restore: { sourceUrl, resume: true },
    });
    const started = pendingStart((await serving()).client(), request);
    const pid = (await spawnRecordOf(id)).pid as number;
    await killDaemon();
    await started;

    const client = (await serving()).client();
    const info = await waitProcess(client, id, (p) => p.state !== ProcessState.STARTING);
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid });
    const inspect = await inspectStandin(suite.socketOf(id));
    expect({ restores: inspect.restore_count, state: inspect.state, source: inspect.last_restore?.source_url }).toEqual({
      restores: 1,
      state: 'Running',
      source: sourceUrl,
    });
  });

  it('does not restore twice when the daemon was killed while the restore was under way', async () => {
    const id = 'restore-busy';
    const sourceUrl = await suite.fixture.snapshot(id);
    const request = await suite.bootRequest(id, { restore_delay_ms: 2_000 }, {
      mode: LaunchMode.RESTORE,
      kernelPath: '',
      restore: { sourceUrl, resume: true },
    });
    const started = pendingStart((await serving()).client(), request);
    const pid = (await spawnRecordOf(id)).pid as number;
    // The stand-in serves one request at a time: once it stops answering, it is inside vm.restore.
    await eventually(async () => inspectStandin(suite.socketOf(id), 150).then(() => false, () => true), WAIT_MS, 50);
    await killDaemon();
    await started;

    const client = (await serving()).client();
    const info = await waitProcess(client, id, (p) => p.state !== ProcessState.STARTING);
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid });
    const inspect = await inspectStandin(suite.socketOf(id));
    expect({ restores: inspect.restore_count, state: inspect.state }).toEqual({ restores: 1, state: 'Running' });
  });

  it('drops a launch the daemon journalled but never spawned: no process, no exit, nothing left', async () => {
    const id = 'never';
    const d0 = await serving();
    const before = (await d0.client().listProcesses({}, { timeoutMs: RPC_MS })).exitSequence;
    await killDaemon();
    // What a kill right after the launch record leaves: that record, and nothing ran.
    const template = (await readJournalRecords(suite.stateDir)).find((r) => r.k === 'launch')!;
    await appendJournalRecords(suite.stateDir, [{
      ...template,
      id,
      spec: { ...(template.spec as object), sandboxId: id, socketPath: suite.socketOf(id) },
      logPath: join(suite.fixture.runDir, 'logs', `${id}.log`),
      statusPath: suite.statusFileOf(id),
      startedAt: Date.now(),
    }]);

    const d = await serving();
    const client = d.client();
    await expectRpcError(getProcess(client, id), status.NOT_FOUND);
    expect((await client.listProcesses({}, { timeoutMs: RPC_MS })).exitSequence).toBe(before);
    expect(d.logs.some((l) => l.msg === 'dropped a launch that never produced a process' && l.sandboxId === id)).toBe(true);
    expect(await leftoverFilesOf(suite, [id])).toEqual([]);
  });

  it('re-adopts a VMM spawned after the launch record but before its PID was journalled', async () => {
    const id = 'unrecorded';
    const started = pendingStart((await serving()).client(), await suite.bootRequest(id, { socket_delay_ms: 2_000 }, { readyTimeout: { seconds: 20n } }));
    const pid = (await spawnRecordOf(id)).pid as number;
    await killDaemon();
    await started;
    await dropJournalRecords(suite.stateDir, (r) => r.id === id && r.k !== 'launch');
    expect((await readJournalRecords(suite.stateDir)).filter((r) => r.id === id).map((r) => r.k)).toEqual(['launch']);

    const client = (await serving()).client();
    const info = await waitProcess(client, id, (p) => p.state !== ProcessState.STARTING);
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid });
    expect((await readJournalRecords(suite.stateDir)).filter((r) => r.id === id).map((r) => r.k)).toEqual(['launch', 'spawn', 'ready']);
    const stopped = (await client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS })).process!;
    expect(outcome(stopped.exit)).toEqual({ sandboxId: id, reason: 'STOPPED', exitCode: 0, signal: undefined, signalSentByDaemon: false });
    expect(await isAlive(pid)).toBe(false);
  });

  it('publishes the recorded exit of a VMM that was spawned but not journalled and died while the daemon was down', async () => {
    const id = 'unrecorded-died';
    const client0 = (await serving()).client();
    const pid = (await client0.startProcess(await suite.bootRequest(id, { crash_after_ms: 1_500, crash_exit_code: 7 }), { timeoutMs: RPC_MS })).process!.pid;
    await killDaemon();
    await dropJournalRecords(suite.stateDir, (r) => r.id === id && r.k !== 'launch');
    const recordedBy = await waitRecorded(pid, suite.statusFileOf(id));

    const d = await serving();
    const client = d.client();
    const exit = (await client.waitProcess({ sandboxId: id }, { timeoutMs: RPC_MS })).process!.exit!;
    // As far as the journal knows it never became ready.
    expect(outcome(exit)).toEqual({ sandboxId: id, reason: 'START_FAILED', exitCode: 7, signal: undefined, signalSentByDaemon: false });
    expect(exit.pid).toBe(pid);
    expect(exitedAtMs(exit)).toBeLessThanOrEqual(recordedBy);
    expect(await leftoverFilesOf(suite, [id])).toEqual([]);
  });

  // The exit above is journalled with the VMM's PID, but the record never got a `spawn` record, and
  // the store attaches an exit to its process only when the PIDs match (state-store.ts, applyRecord,
  // case 'exit'). So the next restart sees a live launch with no PID, no reaper and no status file,
  // and drops it as "never produced a process": the sandbox vanishes although its exit was published.
  it('still knows that exit after another restart (GetProcess/WaitProcess, not NOT_FOUND)', async () => {
    const id = 'unrecorded-died';
    await daemon!.stop();
    const client = (await serving()).client();
    const info = await getProcess(client, id);
    expect({ state: ProcessState[info.state], exit: outcome(info.exit) }).toEqual({
      state: 'EXITED',
      exit: { sandboxId: id, reason: 'START_FAILED', exitCode: 7, signal: undefined, signalSentByDaemon: false },
    });
  });

  it('published each of those exits exactly once across all the restarts', async () => {
    const client = (await serving()).client();
    const { exitSequence } = await client.listProcesses({}, { timeoutMs: RPC_MS });
    const all = await replayExits(client, 0n, Number(exitSequence));
    const counts = new Map<string, number>();
    for (const e of all) counts.set(e.sandboxId, (counts.get(e.sandboxId) ?? 0) + 1);
    expect(Object.fromEntries(counts)).toEqual({ late: 1, deadline: 1, unrecorded: 1, 'unrecorded-died': 1 });
    expect(all.map((e) => Number(e.sequence))).toEqual(all.map((_, i) => i + 1));
  });
});
