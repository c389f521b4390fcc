import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdir, unlink } from 'node:fs/promises';
import type { Socket } from 'node:net';
import * as path from 'node:path';
import { openDirectoryWatches } from '../../../src/util/directory-watch.js';
import { ChClient, VmmApiError, waitForVmmReady, type VmmApiErrorKind, type VmmPinger } from '../../../src/vmm/index.js';
import { chBytes, makeStaleSocket, makeTempDir, PING_BODY, startFakeVmm, type FakeVmm } from './fake-vmm.js';

let dir: string;
let cleanup: () => Promise<void>;
let socketPath: string;
const fakes: FakeVmm[] = [];

beforeEach(async () => {
  ({ dir, cleanup } = await makeTempDir());
  socketPath = path.join(dir, 'api.sock');
});

afterEach(async () => {
  // Every wait, however it ended, must have released its share of the directory watcher.
  expect(openDirectoryWatches()).toEqual([]);
  await Promise.all(fakes.splice(0).map((fake) => fake.close()));
  await cleanup();
});

const answerPing = () => (_request: unknown, socket: Socket) => socket.write(chBytes.json(200, PING_BODY));

async function startVmm(at = socketPath): Promise<FakeVmm> {
  const fake = await startFakeVmm(at, answerPing());
  fakes.push(fake);
  return fake;
}

/** Wraps a real client and records what each attempt ended with. */
function recordingClient(at = socketPath): VmmPinger & { outcomes: (VmmApiErrorKind | 'ok' | 'other')[] } {
  const client = new ChClient(at);
  const outcomes: (VmmApiErrorKind | 'ok' | 'other')[] = [];
  return {
    outcomes,
    async ping(options) {
      try {
        const ping = await client.ping(options);
        outcomes.push('ok');
        return ping;
      } catch (error) {
        outcomes.push(error instanceof VmmApiError ? error.kind : 'other');
        throw error;
      }
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const never = () => new AbortController().signal;

describe('waitForVmmReady', () => {
  it('resolves at once when the VMM already answers', async () => {
    await startVmm();
    await expect(waitForVmmReady(socketPath, { signal: never() })).resolves.toMatchObject({ pid: 1234 });
  });

  it('resolves soon after the socket appears', async () => {
    const client = recordingClient();
    const ready = waitForVmmReady(socketPath, { signal: never(), client, timeoutMs: 5000 });
    await sleep(150);
    expect(openDirectoryWatches()).toEqual([{ directory: dir, listeners: 1 }]);
    await startVmm();
    const listeningAt = performance.now();
    await expect(ready).resolves.toMatchObject({ buildVersion: 'v53.0' });
    const detectionMs = performance.now() - listeningAt;
    expect(detectionMs).toBeLessThan(1000); // generous bound; typically ~1 ms thanks to inotify
    expect(client.outcomes.at(-1)).toBe('ok');
    expect(client.outcomes.slice(0, -1).every((kind) => kind === 'socket-missing')).toBe(true);
  });

  it('does not take a stale socket for readiness, and resolves once a VMM listens there', async () => {
    await makeStaleSocket(socketPath);
    const client = recordingClient();
    const ready = waitForVmmReady(socketPath, { signal: never(), client, timeoutMs: 5000 });
    await sleep(60);
    expect(client.outcomes.length).toBeGreaterThan(1);
    expect(client.outcomes.every((kind) => kind === 'refused')).toBe(true);

    // What CH v53+ does: unlink the stale socket, bind, listen.
    await unlink(socketPath);
    await startVmm();
    await expect(ready).resolves.toMatchObject({ pid: 1234 });
  });

  it('keeps retrying a socket that refuses connections, by backoff alone (no directory events)', async () => {
    await makeStaleSocket(socketPath);
    const client = recordingClient();
    const ready = waitForVmmReady(socketPath, { signal: never(), client, timeoutMs: 300 });
    const error = await ready.catch((reason: unknown) => reason);
    expect(error).toBeInstanceOf(VmmApiError);
    expect(error).toMatchObject({ kind: 'timeout', endpoint: 'GET vmm.ping' });
    expect((error as VmmApiError).cause).toMatchObject({ kind: 'refused' });
    // Backoff 1, 2, 4 … capped at 32 ms: more than a handful of attempts in 300 ms, far fewer than a 1 ms poll.
    expect(client.outcomes.length).toBeGreaterThan(5);
    expect(client.outcomes.length).toBeLessThan(60);
  });

  it('times out with the last failure as cause and an actionable message', async () => {
    const startedAt = performance.now();
    const error = (await waitForVmmReady(socketPath, { signal: never(), timeoutMs: 80 }).catch((e: unknown) => e)) as VmmApiError;
    expect(performance.now() - startedAt).toBeLessThan(1000);
    expect(error).toBeInstanceOf(VmmApiError);
    expect(error.kind).toBe('timeout');
    expect(error.cause).toMatchObject({ kind: 'socket-missing' });
    expect(error.message).toBe(
      `GET vmm.ping on ${socketPath} failed: the VMM was not ready within 80 ms ` +
        '(last attempt failed: the API socket does not exist (ENOENT))',
    );
  });

  it('times out when the VMM accepts but never answers the ping', async () => {
    const fake = await startFakeVmm(socketPath, () => {});
    fakes.push(fake);
    const error = await waitForVmmReady(socketPath, { signal: never(), timeoutMs: 80 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'timeout' });
    expect(fake.connections).toBe(1); // one attempt in flight at a time: no connection pile-up
  });

  it('rejects with the signal reason when aborted while waiting, promptly', async () => {
    const controller = new AbortController();
    const ready = waitForVmmReady(socketPath, { signal: controller.signal, timeoutMs: 10_000 });
    await sleep(20);
    const reason = new Error('VMM exited');
    const abortedAt = performance.now();
    controller.abort(reason);
    await expect(ready).rejects.toBe(reason);
    expect(performance.now() - abortedAt).toBeLessThan(100);
  });

  it('rejects with the signal reason when aborted during an attempt that hangs', async () => {
    fakes.push(await startFakeVmm(socketPath, () => {}));
    const controller = new AbortController();
    const ready = waitForVmmReady(socketPath, { signal: controller.signal, timeoutMs: 10_000 });
    await sleep(20);
    controller.abort('stop requested');
    await expect(ready).rejects.toBe('stop requested');
  });

  it('rejects at once, without watching, when the signal is already aborted', async () => {
    const reason = new Error('already gone');
    await expect(waitForVmmReady(socketPath, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it('does not retry a failure that waiting cannot fix', async () => {
    const fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(404, ['Not Found'])));
    fakes.push(fake);
    const error = await waitForVmmReady(socketPath, { signal: never(), timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'http-status', status: 404 });
    expect(fake.requests).toHaveLength(1);
  });

  it('retries a 503 (VMM busy with 10 connections)', async () => {
    let answered = 0;
    const fake = await startFakeVmm(socketPath, (_r, socket) => {
      answered += 1;
      socket.write(answered < 3 ? chBytes.serverFull() : chBytes.json(200, PING_BODY));
    });
    fakes.push(fake);
    await expect(waitForVmmReady(socketPath, { signal: never(), timeoutMs: 5000 })).resolves.toMatchObject({ pid: 1234 });
    expect(fake.requests).toHaveLength(3);
  });

  it('falls back to polling when the socket directory does not exist yet', async () => {
    const laterDir = path.join(dir, 'later');
    const laterSocket = path.join(laterDir, 'api.sock');
    const ready = waitForVmmReady(laterSocket, { signal: never(), timeoutMs: 5000 });
    await sleep(30);
    await mkdir(laterDir);
    await startVmm(laterSocket);
    await expect(ready).resolves.toMatchObject({ pid: 1234 });
  });

  it('serves many concurrent waiters in one directory with a single watcher', async () => {
    const count = 200;
    const paths = Array.from({ length: count }, (_, i) => path.join(dir, `vm-${i}.sock`));
    const waits = paths.map((at) => waitForVmmReady(at, { signal: never(), timeoutMs: 10_000 }));
    await sleep(20);
    expect(openDirectoryWatches()).toEqual([{ directory: dir, listeners: count }]);

    for (const at of paths) await startVmm(at);
    const pings = await Promise.all(waits);
    expect(pings).toHaveLength(count);
    expect(openDirectoryWatches()).toEqual([]);
  });
});
