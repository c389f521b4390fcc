/**
 * The per-VMM reaper is the piece that makes exit statuses survive the daemon; it can die too
 * (an operator's kill, the OOM killer). Without it nobody can record how the VMM ends, but the
 * VMM itself may still run: it must stay supervised (stoppable, no orphan), and its eventual exit
 * is published as LOST.
 */
import { expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import { getProcess, isAlive, outcome, parentOf, report, RPC_MS, sleep, useRecoverySuite, waitGone } from './support.js';

describeAsRoot('recovery: a reaper killed while its VMM runs', () => {
  const suite = useRecoverySuite();
  let daemon: DaemonProcess | undefined;

  async function serving(): Promise<DaemonProcess> {
    if (!daemon || daemon.exit) daemon = await suite.startDaemon();
    return daemon;
  }

  it('re-adopts a VMM whose reaper died while the daemon was down, and can still stop it', async () => {
    const client = (await serving()).client();
    const pid = (await client.startProcess(await suite.bootRequest('orphan-down'), { timeoutMs: RPC_MS })).process!.pid;
    await daemon!.kill('SIGKILL');
    const reaper = (await parentOf(pid))!;
    process.kill(reaper, 'SIGKILL');
    await waitGone(reaper);
    expect(await isAlive(pid)).toBe(true);

    const after = (await serving()).client();
    const info = await getProcess(after, 'orphan-down');
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid });
    const stopAt = Date.now();
    const stopped = (await after.stopProcess({ sandboxId: 'orphan-down', gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS })).process!;
    report('stop of a VMM without a reaper', { stopRpcMs: Date.now() - stopAt, reason: outcome(stopped.exit)?.reason });
    expect(ProcessState[stopped.state]).toBe('EXITED');
    expect(outcome(stopped.exit)?.reason).toEqual(expect.stringMatching(/^(STOPPED|LOST)$/));
    expect(await isAlive(pid)).toBe(false);
  });

  // At 10dca1a this failed: spawnVmm settled `exited` when the reaper (the daemon's child) exited,
  // found no status file, and #onEnded published LOST and removed the API socket while the VMM
  // still ran, an orphan nobody supervised. Since e68f605 reapers are the spawner's children and
  // a reaper that ends without a record leaves the VMM watched as an orphan.
  it('keeps supervising a VMM whose reaper was killed while the daemon runs, and can still stop it', async () => {
    const client = (await serving()).client();
    const pid = (await client.startProcess(await suite.bootRequest('orphan-up'), { timeoutMs: RPC_MS })).process!.pid;
    const reaper = (await parentOf(pid))!;
    process.kill(reaper, 'SIGKILL');
    await waitGone(reaper);
    await sleep(1_500); // longer than the orphan sweep
    const alive = await isAlive(pid);
    const info = await getProcess(client, 'orphan-up');
    const socketLeft = existsSync(suite.socketOf('orphan-up'));
    if (alive && info.state === ProcessState.EXITED) {
      // Leave nothing behind for the other tests: the daemon no longer will.
      process.kill(pid, 'SIGKILL');
    }
    expect({ vmmAlive: alive, state: ProcessState[info.state], socketLeft }).toEqual({ vmmAlive: true, state: 'RUNNING', socketLeft: true });

    const stopped = (await client.stopProcess({ sandboxId: 'orphan-up', gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS })).process!;
    expect(ProcessState[stopped.state]).toBe('EXITED');
    expect(await isAlive(pid)).toBe(false);
  });
});
