/**
 * One daemon per state directory: a second one exits non-zero with a clear message while the
 * first keeps serving; once the first is SIGKILLed (its VMMs and reapers still running), a new
 * one takes over at once: no stale lock, no stale listen socket.
 */
import { expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { describeAsRoot } from '../helpers/root.js';
import { getProcess, isAlive, parentOf, RPC_MS, useRecoverySuite } from './support.js';

describeAsRoot('recovery: the state directory lock', () => {
  const suite = useRecoverySuite();

  it('refuses a second daemon on the same state directory, and frees the lock when the first is SIGKILLed', async () => {
    const first = await suite.startDaemon();
    const pid = (await first.client().startProcess(await suite.bootRequest('locked'), { timeoutMs: RPC_MS })).process!.pid;
    const pidFile = join(suite.stateDir, 'vmprocd.pid');
    expect((await readFile(pidFile, 'utf8')).trim()).toBe(String(first.pid));

    const otherSocket = join(suite.fixture.root, 'e.sock');
    const second = suite.launchDaemon({ socketPath: otherSocket });
    const exit = await second.waitExit(15_000);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(second.output).toContain(`another vmprocd is already using the state directory ${suite.stateDir}`);
    expect(second.servingLine).toBeUndefined();
    expect(existsSync(otherSocket)).toBe(false);

    // The first one never noticed.
    expect(first.exit).toBeUndefined();
    expect(ProcessState[(await getProcess(first.client(), 'locked')).state]).toBe('RUNNING');
    expect((await readFile(pidFile, 'utf8')).trim()).toBe(String(first.pid));

    // SIGKILL: the VMM and its reaper (children of the dead daemon once) live on; the lock must not.
    const reaper = (await parentOf(pid))!;
    await first.kill('SIGKILL');
    expect(await isAlive(pid)).toBe(true);
    expect(await isAlive(reaper)).toBe(true);
    expect(existsSync(first.socketPath)).toBe(true); // stale: the next daemon must cope

    const third = await suite.startDaemon();
    expect(third.servingLine!.readopted).toBe(1);
    expect((await readFile(pidFile, 'utf8')).trim()).toBe(String(third.pid));
    const info = await getProcess(third.client(), 'locked');
    expect({ state: ProcessState[info.state], pid: info.pid }).toEqual({ state: 'RUNNING', pid });

    // A clean stop leaves no listen socket either.
    await third.client().stopProcess({ sandboxId: 'locked', gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS });
    expect((await third.stop()).code).toBe(0);
    expect(existsSync(third.socketPath)).toBe(false);
  });
});
