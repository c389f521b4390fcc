/**
 * Scenario (4): the daemon is SIGKILLed while VMMs exit in a burst. Twenty VMMs crash, each with
 * its own exit code, over a window that starts before the kill and ends after the restart. Every
 * one must have exactly one exit with its code, and a watcher that reconnects with the last
 * sequence it saw must get the rest with no gap and no duplicate.
 */
import { expect, it } from '@jest/globals';
import { ExitReason, type ProcessExit, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  describeExits,
  ExitCollector,
  exitedAtMs,
  leftoverFilesOf,
  range,
  replayExits,
  report,
  RPC_MS,
  sequencesOf,
  useRecoverySuite,
} from './support.js';

const COUNT = 20;
const FIRST_CRASH_MS = 2_500;
const SPACING_MS = 150;
/** The daemon is killed once this many exits were delivered. */
const KILL_AFTER_EXITS = 5;

describeAsRoot('recovery: SIGKILL of the daemon during a burst of exits', () => {
  const suite = useRecoverySuite();

  it('publishes every exit exactly once, with its code, and watchers resume with no gap or duplicate', async () => {
    const ids = range(0, COUNT - 1).map((i) => `b${i}`);
    const codeOf = (id: string) => 10 + Number(id.slice(1));
    const daemon1 = await suite.startDaemon();
    const client1 = daemon1.client();
    const watcher1 = ExitCollector.watch(client1, { afterSequence: 0n });
    const requests = await Promise.all(
      ids.map((id, i) => suite.bootRequest(id, { crash_after_ms: FIRST_CRASH_MS + i * SPACING_MS, crash_exit_code: codeOf(id) })),
    );
    const pids = new Map<string, number>();
    await Promise.all(
      requests.map(async (request) => {
        const info = (await client1.startProcess(request, { timeoutMs: RPC_MS })).process!;
        pids.set(info.sandboxId, info.pid);
      }),
    );

    await watcher1.until((e) => e.length >= KILL_AFTER_EXITS, 20_000, `${KILL_AFTER_EXITS} exits before the kill`);
    await daemon1.kill('SIGKILL');
    const killedAt = Date.now();
    await watcher1.waitForEnd();
    const seenBefore = [...watcher1.exits];

    const daemon2 = await suite.startDaemon();
    const client2 = daemon2.client();
    const watcher2 = ExitCollector.watch(client2, { afterSequence: watcher1.lastSequence });
    await watcher2.until((e) => new Set([...seenBefore, ...e].map((x) => x.sandboxId)).size >= COUNT, 20_000, 'the exits of all VMMs');
    await watcher2.close();
    const union = [...seenBefore, ...watcher2.exits];

    const exitTimes = union.map(exitedAtMs);
    const exitedWhileDown = exitTimes.filter((t) => t > killedAt && t < daemon2.servingAt!).length;
    report('exit burst', {
      seenBeforeKill: seenBefore.length,
      exitedWhileDown,
      exitedAfterRestart: exitTimes.filter((t) => t >= daemon2.servingAt!).length,
      restartToServingMs: daemon2.servingAt! - killedAt,
    });

    // No gap, no duplicate, each VMM once, with its own code.
    expect(sequencesOf(union)).toEqual(range(1, COUNT));
    expect(union.map((e) => e.sandboxId).sort()).toEqual([...ids].sort());
    for (const e of union) {
      expect({ id: e.sandboxId, reason: ExitReason[e.reason], code: e.exitCode, signal: e.signal, pid: e.pid }).toEqual({
        id: e.sandboxId,
        reason: 'EXITED',
        code: codeOf(e.sandboxId),
        signal: undefined,
        pid: pids.get(e.sandboxId),
      });
    }
    // The burst really straddled the kill: some ended while no daemon was running.
    expect(exitedWhileDown).toBeGreaterThanOrEqual(1);

    // A fresh full replay says exactly the same: sequences were not renumbered by the restart.
    const replay = await replayExits(client2, 0n, COUNT);
    const key = (e: ProcessExit) => `${e.sequence}:${e.sandboxId}:${e.exitCode}:${exitedAtMs(e)}`;
    expect(replay.map(key)).toEqual(union.map(key));
    const { processes, exitSequence } = await client2.listProcesses({}, { timeoutMs: RPC_MS });
    expect(exitSequence).toBe(BigInt(COUNT));
    expect(processes.filter((p) => p.state !== ProcessState.EXITED).map((p) => p.sandboxId)).toEqual([]);
    expect(await leftoverFilesOf(suite, ids)).toEqual([]);
    if (union.length !== COUNT) throw new Error(`union: ${describeExits(union)}`);
  });
});
