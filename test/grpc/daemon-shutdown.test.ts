/**
 * Stopping the daemon: open WatchExits streams end with UNAVAILABLE, health turns NOT_SERVING,
 * running VMMs keep running (a VMM's lifetime is not tied to the daemon's), and a start that is
 * not yet ready is abandoned: its VMM killed, its caller told UNAVAILABLE.
 */
import { expect, it } from '@jest/globals';
import { create } from '@bufbuild/protobuf';
import { type ClientReadableStream, credentials, makeGenericClientConstructor, Metadata, status } from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import {
  Health,
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
} from '../../gen/grpc/health/v1/health_pb.js';
import { ExitReason, type ProcessExit, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { grpcServiceDefinition } from '../../src/rpc/grpc-service-definition.js';
import { startDaemonHarness } from '../helpers/daemon-harness.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  eventually,
  ExitStream,
  expectRpcError,
  inspectStandin,
  processesMentioning,
  type GrpcSuite,
  useGrpcSuite,
  WAIT_MS,
} from './support.js';

/** Waits until GetProcess shows a PID for `sandboxId` (the VMM is spawned). */
async function spawned(s: GrpcSuite, sandboxId: string): Promise<number> {
  let pid = 0;
  await eventually(async () => {
    pid = (await s.client.getProcess({ sandboxId }).catch(() => undefined))?.process?.pid ?? 0;
    return pid > 0;
  }, WAIT_MS);
  return pid;
}

describeAsRoot('gRPC end to end: daemon shutdown with running VMMs', () => {
  const s = useGrpcSuite({}, { daemonStoppedByTest: true });

  it('ends WatchExits with UNAVAILABLE and leaves running VMMs running', async () => {
    const exchange = s.harness.daemon.supervisor.exchange;
    const survivor = (await s.startBoot(s.id('survivor'), {}, { labels: { keep: 'running' } })).process!;
    expect(survivor.state).toBe(ProcessState.RUNNING);

    const watcher = new ExitStream(s.harness.newClient());
    await eventually(() => exchange.subscriberCount === 2, WAIT_MS);
    try {
      const begun = Date.now();
      await s.harness.daemon.stop();
      // WatchExits streams are ended by the daemon itself, so they do not hold the shutdown's grace period.
      expect(Date.now() - begun).toBeLessThan(3_000);

      await expectRpcError(watcher.next(), status.UNAVAILABLE, 'vmprocd is shutting down', 'reconnect with after_sequence');

      // The running VMM outlives the daemon: same PID, still answering on its socket.
      const inspect = await inspectStandin(survivor.socketPath);
      expect(inspect.pid).toBe(survivor.pid);
      expect(() => process.kill(survivor.pid, 0)).not.toThrow();
      expect(await processesMentioning(survivor.socketPath)).toContain(survivor.pid);

      // Nobody listens any more.
      expect(existsSync(s.harness.address.replace(/^unix:\/\//, ''))).toBe(false);
      await expect(s.client.listProcesses({}, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: expect.any(Number) });
    } finally {
      await watcher.close();
      // The daemon is gone: clean the survivor up ourselves, and wait for it and its reaper.
      try {
        process.kill(-survivor.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await eventually(async () => (await processesMentioning(survivor.socketPath)).length === 0, WAIT_MS);
    }
  }, 30_000);
});

describeAsRoot('gRPC end to end: daemon shutdown with a health watcher', () => {
  const s = useGrpcSuite({}, { daemonStoppedByTest: true });

  it('health turns NOT_SERVING for a Health/Watch client when the daemon stops', async () => {
    const HealthClient = makeGenericClientConstructor(grpcServiceDefinition(Health), 'Health');
    const health = new HealthClient(s.harness.address, credentials.createInsecure(), {}) as unknown as {
      watch: (req: unknown, md: Metadata) => ClientReadableStream<HealthCheckResponse>;
      close(): void;
    };
    const statuses: string[] = [];
    const watch = health.watch(create(HealthCheckRequestSchema, { service: 'vmprocess.v1.VmProcessService' }), new Metadata());
    watch.on('data', (r: HealthCheckResponse) => statuses.push(HealthCheckResponse_ServingStatus[r.status]));
    watch.on('error', () => undefined);
    try {
      await eventually(() => statuses.length > 0, WAIT_MS);
      expect(statuses).toEqual(['SERVING']);
      const stopped = s.harness.daemon.stop();
      await eventually(() => statuses.includes('NOT_SERVING'), WAIT_MS);
      expect(statuses).toEqual(['SERVING', 'NOT_SERVING']);
      const begun = Date.now();
      await stopped;
      process.stderr.write(`daemon.stop() finished ${Date.now() - begun} ms after NOT_SERVING, with a Health/Watch open\n`);
    } finally {
      watch.cancel();
      health.close();
    }
  }, 30_000);
});

describeAsRoot('gRPC end to end: daemon shutdown during a start', () => {
  const s = useGrpcSuite({}, { daemonStoppedByTest: true });

  it('abandons a start that is not ready: StartProcess is UNAVAILABLE at once, the VMM is killed, the exit survives a restart', async () => {
    const id = s.id('unready');
    const socket = s.socketOf(id);
    const lastBefore = s.recorder.lastSequence;
    const start = s.startBoot(id, { socket_delay_ms: 30_000 }, { readyTimeout: { seconds: 20n } });
    const pid = await spawned(s, id);

    const begun = Date.now();
    const stopped = s.harness.daemon.stop();
    const outcome = await start.then(
      () => ({ code: 'OK', details: '' }),
      (e: { code: number; details: string }) => ({ code: status[e.code], details: e.details }),
    );
    const answeredAfterMs = Date.now() - begun;
    await stopped;
    const left = await processesMentioning(socket);
    const socketLeft = existsSync(socket);

    // The start's exit was published after the watchers were closed; a watcher resuming against the next
    // daemon instance (same state directory) must still get it, exactly once.
    const next = await startDaemonHarness(s.fixture); // same fixture, so the same state directory
    let exit: ProcessExit | undefined;
    try {
      const resumed = new ExitStream(next.client, { afterSequence: lastBefore });
      exit = await resumed.next();
      await resumed.close();
    } finally {
      await next.stop();
    }
    // "Abandons unready starts": the caller hears UNAVAILABLE right away, not after the server's grace period,
    // and the exit says why.
    expect({
      outcome,
      answeredPromptly: answeredAfterMs < 3_000,
      left,
      socketLeft,
      exit: exit && { sandboxId: exit.sandboxId, pid: exit.pid, reason: ExitReason[exit.reason], message: exit.message },
    }).toEqual({
      outcome: { code: 'UNAVAILABLE', details: `sandbox ${id}: the daemon is shutting down; the VMM was killed before it was ready` },
      answeredPromptly: true,
      left: [],
      socketLeft: false,
      exit: { sandboxId: id, pid, reason: 'START_FAILED', message: 'daemon shut down during the start' },
    });
  }, 30_000);
});
