/**
 * Events across a SIGKILL of the daemon: what a re-adopted VMM's event monitor wrote while the
 * daemon was down is published once the next daemon is up (a pause made on the VMM's own socket),
 * an exit that happened meanwhile gets its EXITED event, nothing recorded before the kill is
 * published twice (the monitor is read on from the offset journalled with the last event), and a
 * reconnecting watcher sees every event exactly once, in order, across the restart.
 */
import { expect, it } from '@jest/globals';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EventKind, EventOrigin, type ProcessEvent } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { nativeBin } from '../../src/package-paths.js';
import { describeAsRoot } from '../helpers/root.js';
import { rawRequest } from '../standin/raw-http.js';
import { eventually, RPC_MS, useRecoverySuite, waitGone, WAIT_MS } from './support.js';

const brief = (events: readonly ProcessEvent[]) => events.map((e) => `${e.sandboxId} ${EventKind[e.kind]} ${EventOrigin[e.origin]}`);

describeAsRoot('recovery: events across a SIGKILL of the daemon', () => {
  const suite = useRecoverySuite();

  it('publishes what the VMMs reported while the daemon was down, once, and every event exactly once', async () => {
    const kernelPath = join(suite.fixture.root, 'tiny-guest.elf');
    await copyFile(nativeBin('tiny-guest.elf'), kernelPath);
    const vm = { vcpus: 1, memoryMib: 64n, cmdline: 'console=ttyS0 tick_ms=100' };
    const daemon1 = await suite.startDaemon();
    const client1 = daemon1.client();
    const received: ProcessEvent[] = [];
    const controller = new AbortController();
    // A client of its own, which outlives each daemon's (they are closed with their daemon).
    const watcher = new VmProcessClient(daemon1.address);
    const watch = watcher.watchEventsReconnecting({ startAfter: 0n, signal: controller.signal, backoff: { initialDelayMs: 50, maxDelayMs: 200 } });
    const reading = (async () => {
      for await (const event of watch) received.push(event);
    })().catch((error: unknown) => error);

    const a = (await client1.startProcess(await suite.bootRequest('a', {}, { kernelPath, vm }), { timeoutMs: RPC_MS })).process!;
    const b = (await client1.startProcess(await suite.bootRequest('b'), { timeoutMs: RPC_MS })).process!;
    await client1.pauseVm({ sandboxId: 'a' }, { timeoutMs: RPC_MS });
    await eventually(() => received.length >= 6, WAIT_MS).catch((error: unknown) => {
      throw new Error(`${String(error)}; got ${brief(received).join(', ')}`);
    });
    await daemon1.kill('SIGKILL');

    // While nobody watches: someone pauses... no, resumes a, then pauses it again on its own socket; b dies.
    expect((await rawRequest(a.socketPath, 'PUT', 'vm.resume')).status).toBe(204);
    expect((await rawRequest(a.socketPath, 'PUT', 'vm.pause')).status).toBe(204);
    process.kill(b.pid, 'SIGKILL');
    await waitGone(b.pid);

    const daemon2 = await suite.startDaemon();
    const client2 = daemon2.client();
    await eventually(() => received.some((e) => e.sandboxId === 'b' && e.kind === EventKind.EXITED), WAIT_MS).catch(async (error: unknown) => {
      controller.abort();
      throw new Error(`${String(error)}; got ${brief(received).join(', ')}; watch ended with ${String(await reading)}`);
    });
    await eventually(() => received.filter((e) => e.sandboxId === 'a').length >= 6, WAIT_MS);
    await client2.resumeVm({ sandboxId: 'a' }, { timeoutMs: RPC_MS });
    await client2.stopProcess({ sandboxId: 'a', gracePeriod: { seconds: 5n } }, { timeoutMs: RPC_MS });
    await eventually(() => received.some((e) => e.sandboxId === 'a' && e.kind === EventKind.EXITED), WAIT_MS);
    controller.abort();
    await reading;
    watcher.close();

    expect(received.map((e) => Number(e.sequence))).toEqual(received.map((_, i) => i + 1));
    expect(brief(received.filter((e) => e.sandboxId === 'a'))).toEqual([
      'a STARTED DAEMON',
      'a VM_BOOTED DAEMON',
      'a READY DAEMON',
      'a PAUSED DAEMON',
      'a RESUMED VMM',
      'a PAUSED VMM',
      'a RESUMED DAEMON',
      'a EXITED DAEMON',
    ]);
    expect(brief(received.filter((e) => e.sandboxId === 'b'))).toEqual(['b STARTED DAEMON', 'b READY DAEMON', 'b EXITED DAEMON']);
    // The daemon's own list of events agrees after another restart: replay from 0 gives the same.
    await daemon2.kill('SIGKILL');
    const daemon3 = await suite.startDaemon();
    const replayed: ProcessEvent[] = [];
    for await (const event of daemon3.client().watchEvents({ afterSequence: 0n }, { timeoutMs: 3_000 })) {
      replayed.push(event);
      if (replayed.length === received.length) break;
    }
    expect(replayed.map((e) => `${e.sequence} ${e.sandboxId} ${EventKind[e.kind]}`)).toEqual(received.map((e) => `${e.sequence} ${e.sandboxId} ${EventKind[e.kind]}`));
    expect((await daemon3.client().getLatestSequence()).latestEventSequence).toBe(BigInt(received.length));
  });
});
