/**
 * StopProcess and client cancellation that arrive while a start is still spawning, i.e. before
 * the VMM's PID is known (GetProcess shows STARTING with pid 0). On a loaded host that window is
 * the launch request's trip through the spawner helper; here a stand-in for the spawner that holds
 * each request for ~1 s widens it so the race is deterministic. The contract is the
 * same as for any other moment of a start: ABORTED / CANCELLED, a published START_FAILED exit,
 * and no process or socket left behind.
 */
import { expect, it } from '@jest/globals';
import { chmod, writeFile } from 'node:fs/promises';
import { status } from '@grpc/grpc-js';
import { ExitReason, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { nativeBin } from '../../src/package-paths.js';
import { killProcessesMentioning } from '../helpers/process-scan.js';
import { describeAsRoot } from '../helpers/root.js';
import { eventually, processesMentioning, useGrpcSuite, WAIT_MS } from './support.js';

const SPAWN_DELAY_S = 1;
const HELPER_LINGER_MS = 300;

describeAsRoot('gRPC end to end: stop and cancel before the VMM PID is known', () => {
  const s = useGrpcSuite(async (fixture) => {
    // The daemon forks reapers through one long-lived `vmprocd-reaper --spawner`: this stand-in
    // for it holds every launch request for SPAWN_DELAY_S before passing it to the real spawner.
    const wrapper = `${fixture.root}/slow-spawner`;
    await writeFile(
      wrapper,
      `#!${process.execPath}\n` +
        `const { spawn } = require('node:child_process');\n` +
        `const real = spawn(${JSON.stringify(nativeBin('vmprocd-reaper'))}, process.argv.slice(2), { stdio: ['pipe', 'inherit', 'inherit'] });\n` +
        `const held = new Set();\n` +
        `process.stdin.on('data', (chunk) => { const t = setTimeout(() => { held.delete(t); real.stdin.write(chunk); }, ${SPAWN_DELAY_S * 1000}); held.add(t); });\n` +
        // The daemon is gone: requests it can no longer hear are dropped, and the real spawner ends with us.
        `process.stdin.on('end', () => { for (const t of held) clearTimeout(t); real.stdin.end(); });\n` +
        // It also lingers a moment after the real spawner ended, as a helper on a loaded host may:
        // the suite's leak check then fails unless the daemon's stop waits for its helper to end.
        `real.on('exit', (code) => setTimeout(() => process.exit(code ?? 1), ${HELPER_LINGER_MS}));\n`,
    );
    await chmod(wrapper, 0o755);
    return { reaperBin: wrapper };
  });

  /** Waits until the start is registered but not yet spawned (STARTING, pid 0). */
  async function reservedNotSpawned(sandboxId: string): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      try {
        const p = (await s.client.getProcess({ sandboxId })).process!;
        expect({ state: ProcessState[p.state], pid: p.pid }).toEqual({ state: 'STARTING', pid: 0 });
        return;
      } catch (error) {
        if ((error as { code?: number }).code !== status.NOT_FOUND) throw error;
      }
      if (Date.now() > deadline) throw new Error(`${sandboxId} was never registered`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  const outcome = (p: Promise<unknown>) =>
    p.then(
      (value) => ({ ok: value as { process?: { state: ProcessState; exit?: { reason: ExitReason } } } }),
      (error: { code: number; details: string }) => ({ code: status[error.code], details: error.details }),
    );

  it('control: a normal start through the slow reaper succeeds', async () => {
    const id = s.id('control');
    const started = (await s.startBoot(id)).process!;
    expect(started.state).toBe(ProcessState.RUNNING);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('StopProcess before the PID is known: StopProcess returns the exit, StartProcess is ABORTED, nothing is left', async () => {
    const id = s.id('stop-early');
    const socket = s.socketOf(id);
    try {
      const start = outcome(s.startBoot(id));
      await reservedNotSpawned(id);
      const stop = await outcome(s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } }));
      const started = await start;
      const left = await processesMentioning(socket);
      expect({ stop, start: started, left }).toEqual({
        stop: { ok: expect.objectContaining({ process: expect.objectContaining({ state: ProcessState.EXITED }) }) },
        start: { code: 'ABORTED', details: `sandbox ${id}: stopped by StopProcess while starting` },
        left: [],
      });
      expect(s.recorder.exitsOf(id)).toHaveLength(1);
    } finally {
      await killProcessesMentioning(socket);
      await eventually(async () => (await processesMentioning(socket)).length === 0, WAIT_MS);
    }
  }, 20_000);

  it('SignalProcess before the PID is known is FAILED_PRECONDITION (nothing to signal yet); the start goes on', async () => {
    const id = s.id('signal-early');
    const start = s.startBoot(id);
    await reservedNotSpawned(id);
    await expect(s.client.signalProcess({ sandboxId: id, signal: 'SIGUSR1' })).rejects.toMatchObject({
      code: status.FAILED_PRECONDITION,
      details: expect.stringContaining(`sandbox ${id} is being launched and has no process yet`),
    });
    expect((await start).process?.state).toBe(ProcessState.RUNNING);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('a client that cancels before the PID is known gets CANCELLED, and the VMM does not start behind its back', async () => {
    const id = s.id('cancel-early');
    const socket = s.socketOf(id);
    const abort = new AbortController();
    try {
      const start = outcome(s.client.startProcess(await s.bootRequest(id), { signal: abort.signal }));
      await reservedNotSpawned(id);
      abort.abort();
      expect(await start).toMatchObject({ code: 'CANCELLED' });
      // The daemon must abandon the start: a START_FAILED exit is published and nothing keeps running.
      const exit = await s.recorder.exitOf(id, 0n, SPAWN_DELAY_S * 1000 + 5_000).catch(() => undefined);
      const state = ProcessState[(await s.client.getProcess({ sandboxId: id })).process!.state];
      expect({
        exitReason: exit ? ExitReason[exit.reason] : 'no exit published',
        exitMessage: exit?.message,
        state,
        left: await processesMentioning(socket),
      }).toEqual({ exitReason: 'START_FAILED', exitMessage: 'start cancelled by the client', state: 'EXITED', left: [] });
    } finally {
      await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } }).catch(() => undefined);
      await killProcessesMentioning(socket);
      await eventually(async () => (await processesMentioning(socket)).length === 0, WAIT_MS);
    }
  }, 20_000);
});
