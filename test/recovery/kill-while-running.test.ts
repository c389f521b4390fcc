/**
 * Scenario (1): the daemon is SIGKILLed while VMMs run. While it is down, one VMM crashes on its
 * own, one is SIGKILLed by the test, one loses its reaper and then dies (nothing can record its
 * status), and two keep running. The restarted daemon must re-adopt the two live ones (same PID,
 * stoppable, signallable, waitable) and publish the three exits with what really happened.
 */
import { expect, it } from '@jest/globals';
import { ProcessState, type ProcessExit, type ProcessInfo } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  ExitCollector,
  exitedAtMs,
  getProcess,
  isAlive,
  leftoverFilesOf,
  outcome,
  parentOf,
  range,
  replayExits,
  report,
  RPC_MS,
  sequencesOf,
  useRecoverySuite,
  waitGone,
  waitRecorded,
} from './support.js';

/** Long enough that the daemon is surely dead before it fires, short enough to keep the test quick. */
const CRASH_AFTER_MS = 2_500;
const CRASH_CODE = 42;

describeAsRoot('recovery: SIGKILL of the daemon while VMMs run', () => {
  const suite = useRecoverySuite();
  const ids = { keep: 'keep', signalled: 'sig', crash: 'crash', killed: 'killed', lost: 'lost' } as const;
  let before: Record<string, ProcessInfo> = {};
  let daemon2: DaemonProcess;
  let daemon1KilledAt = 0;
  let restartedAt = 0;
  /** When the test saw each VMM's end recorded by its reaper, and when it sent the SIGKILL. */
  const recordedBy: Record<string, number> = {};
  let killSentAt = 0;
  let firstList: ProcessInfo[] = [];

  it('restarts after the kill and lists the surviving VMMs RUNNING with their old PIDs', async () => {
    const daemon1 = await suite.startDaemon();
    const client1 = daemon1.client();
    const watcher = ExitCollector.watch(client1, { afterSequence: 0n });
    for (const id of [ids.keep, ids.signalled, ids.killed, ids.lost]) {
      before[id] = (await client1.startProcess(await suite.bootRequest(id), { timeoutMs: RPC_MS })).process!;
    }
    // The crasher last, so its timer runs out well after the daemon is gone.
    before[ids.crash] = (
      await client1.startProcess(await suite.bootRequest(ids.crash, { crash_after_ms: CRASH_AFTER_MS, crash_exit_code: CRASH_CODE }), { timeoutMs: RPC_MS })
    ).process!;
    const crashReadyAt = Date.now();

    await daemon1.kill('SIGKILL');
    daemon1KilledAt = Date.now();
    expect(daemon1KilledAt - crashReadyAt).toBeLessThan(CRASH_AFTER_MS); // else the crash was not "while down"
    await watcher.waitForEnd();
    expect(watcher.exits).toEqual([]);

    // While it is down: a crash, a kill, and a VMM whose reaper dies first (its status is lost).
    const reaperOfLost = await parentOf(before[ids.lost]!.pid);
    expect(reaperOfLost).toBeGreaterThan(1);
    process.kill(reaperOfLost!, 'SIGKILL');
    await waitGone(reaperOfLost!);
    process.kill(before[ids.lost]!.pid, 'SIGKILL');
    killSentAt = Date.now();
    process.kill(before[ids.killed]!.pid, 'SIGKILL');
    recordedBy[ids.killed] = await waitRecorded(before[ids.killed]!.pid, suite.statusFileOf(ids.killed));
    await waitGone(before[ids.lost]!.pid);
    recordedBy[ids.crash] = await waitRecorded(before[ids.crash]!.pid, suite.statusFileOf(ids.crash), CRASH_AFTER_MS + 10_000);
    expect(await isAlive(before[ids.keep]!.pid)).toBe(true);

    restartedAt = Date.now();
    daemon2 = await suite.startDaemon();
    const client2 = daemon2.client();
    firstList = (await client2.listProcesses({}, { timeoutMs: RPC_MS })).processes;
    report('restart after SIGKILL', {
      downtimeMs: restartedAt - daemon1KilledAt,
      restartToServingMs: daemon2.servingAt! - restartedAt,
      readopted: daemon2.servingLine!.readopted,
      exitSequence: daemon2.servingLine!.exitSequence,
    });

    for (const id of [ids.keep, ids.signalled]) {
      const now = await getProcess(client2, id);
      expect({ id, state: ProcessState[now.state], pid: now.pid, readyAt: now.readyAt }).toEqual({
        id,
        state: 'RUNNING',
        pid: before[id]!.pid,
        readyAt: before[id]!.readyAt,
      });
    }
  });

  it('publishes each exit that happened while it was down with its real code or signal and time', async () => {
    const client = daemon2.client();
    const exits = await replayExits(client, 0n, 3);
    expect(sequencesOf(exits)).toEqual(range(1, 3));
    const byId = new Map(exits.map((e) => [e.sandboxId, e]));
    expect({
      crash: outcome(byId.get(ids.crash)),
      killed: outcome(byId.get(ids.killed)),
      lost: outcome(byId.get(ids.lost)),
    }).toEqual({
      crash: { sandboxId: ids.crash, reason: 'EXITED', exitCode: CRASH_CODE, signal: undefined, signalSentByDaemon: false },
      killed: { sandboxId: ids.killed, reason: 'SIGNALED', exitCode: undefined, signal: 'SIGKILL', signalSentByDaemon: false },
      lost: { sandboxId: ids.lost, reason: 'LOST', exitCode: undefined, signal: undefined, signalSentByDaemon: false },
    });
    // exited_at is when the VMM really ended (the reaper's clock), not when the daemon came back.
    const killedAt = exitedAtMs(byId.get(ids.killed)!);
    expect(killedAt).toBeGreaterThanOrEqual(killSentAt - 5);
    expect(killedAt).toBeLessThanOrEqual(recordedBy[ids.killed]!);
    const crashedAt = exitedAtMs(byId.get(ids.crash)!);
    expect(crashedAt).toBeGreaterThan(daemon1KilledAt);
    expect(crashedAt).toBeLessThanOrEqual(recordedBy[ids.crash]!);
    expect(crashedAt).toBeLessThan(restartedAt);
    for (const e of exits) expect({ id: e.sandboxId, pid: e.pid }).toEqual({ id: e.sandboxId, pid: before[e.sandboxId]!.pid });
    // Get agrees with the stream.
    for (const id of [ids.crash, ids.killed, ids.lost]) {
      const info = await getProcess(client, id);
      expect({ id, state: ProcessState[info.state], exit: outcome(info.exit) }).toEqual({ id, state: 'EXITED', exit: outcome(byId.get(id)) });
    }
  });

  it('signals, waits for and stops the re-adopted VMMs, and sees their exits promptly', async () => {
    const client = daemon2.client();
    const watcher = ExitCollector.watch(client, { afterSequence: 3n });

    // Signal: SIGCONT is harmless to the stand-in; SIGUSR1 kills it (default action).
    await client.signalProcess({ sandboxId: ids.keep, signal: 'SIGCONT' }, { timeoutMs: RPC_MS });
    expect(await isAlive(before[ids.keep]!.pid)).toBe(true);
    const waitSignalled = client.waitProcess({ sandboxId: ids.signalled }, { timeoutMs: RPC_MS });
    await client.signalProcess({ sandboxId: ids.signalled, signal: 'USR1' }, { timeoutMs: RPC_MS });
    const signalled = (await waitSignalled).process!;
    const signalledSeenAt = Date.now();

    const waitKeep = client.waitProcess({ sandboxId: ids.keep }, { timeoutMs: RPC_MS });
    const stopAt = Date.now();
    const stopped = (await client.stopProcess({ sandboxId: ids.keep, gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS })).process!;
    const stopReturnedAt = Date.now();
    const waited = (await waitKeep).process!;

    const keepExit = stopped.exit!;
    const stopLatency = {
      stopRpcMs: stopReturnedAt - stopAt,
      exitToStopReturnMs: stopReturnedAt - exitedAtMs(keepExit),
      exitToWaitReturnMs: signalledSeenAt - exitedAtMs(signalled.exit!),
    };
    report('adopted-exit detection latency', stopLatency);

    expect({ state: ProcessState[stopped.state], exit: outcome(keepExit) }).toEqual({
      state: 'EXITED',
      exit: { sandboxId: ids.keep, reason: 'STOPPED', exitCode: 0, signal: undefined, signalSentByDaemon: false },
    });
    expect(outcome(waited.exit)).toEqual(outcome(keepExit));
    expect(outcome(signalled.exit)).toEqual({
      sandboxId: ids.signalled, reason: 'SIGNALED', exitCode: undefined, signal: 'SIGUSR1', signalSentByDaemon: true,
    });
    // Not a SIGKILL after the grace: SIGTERM was honoured, and the exit was seen within moments.
    expect(stopLatency.stopRpcMs).toBeLessThan(2_000);
    expect(stopLatency.exitToStopReturnMs).toBeLessThan(1_000);
    expect(stopLatency.exitToWaitReturnMs).toBeLessThan(1_000);

    // Sequences go on from the exits replayed at restart.
    const live = await watcher.until((e) => e.length >= 2, RPC_MS, 'two live exits');
    expect(live.map((e: ProcessExit) => [Number(e.sequence), e.sandboxId])).toEqual([
      [4, ids.signalled],
      [5, ids.keep],
    ]);
    await watcher.close();
    expect(await isAlive(before[ids.keep]!.pid)).toBe(false);
  });

  it('leaves no socket or status file behind for any exited sandbox', async () => {
    expect(await leftoverFilesOf(suite, Object.values(ids))).toEqual([]);
  });

  // Recovery is documented to settle every record before the daemon serves ("Nothing is served
  // before recovery has settled every record"). It does not wait for the exits of VMMs found dead:
  // the serving line counts them as re-adopted, and the first List shows them RUNNING (the one
  // whose reaper died stays RUNNING until the 1 s sweep).
  it('settles the VMMs that died while it was down before it serves (not re-adopted, not listed RUNNING)', async () => {
    const stateAtFirstList = (id: string) => {
      const p = firstList.find((x) => x.sandboxId === id);
      return p ? ProcessState[p.state] : 'missing';
    };
    report('state at the first List after serving', {
      readopted: daemon2.servingLine!.readopted,
      exitSequence: daemon2.servingLine!.exitSequence,
      crash: stateAtFirstList(ids.crash),
      killed: stateAtFirstList(ids.killed),
      lost: stateAtFirstList(ids.lost),
    });
    expect({
      readopted: daemon2.servingLine!.readopted,
      exitSequence: daemon2.servingLine!.exitSequence,
      crash: stateAtFirstList(ids.crash),
      killed: stateAtFirstList(ids.killed),
      lost: stateAtFirstList(ids.lost),
    }).toEqual({ readopted: 2, exitSequence: 3, crash: 'EXITED', killed: 'EXITED', lost: 'EXITED' });
  });
});
