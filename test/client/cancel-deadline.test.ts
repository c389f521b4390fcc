/**
 * The client against the real daemon in this process: leaving a watch loop (or aborting it)
 * cancels the call on the server, and deadlines end calls with DEADLINE_EXCEEDED, while the
 * default deadline leaves room for what StartProcess and StopProcess legitimately take.
 */
import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { LaunchMode, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { isRpcError, Status } from '../../src/client/rpc-error.js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { type DaemonHarness, startDaemonHarness } from '../helpers/daemon-harness.js';
import { createTestNetns, type TestNetns } from '../helpers/netns.js';
import { killProcessesMentioning } from '../helpers/process-scan.js';
import { eventually } from '../helpers/wait.js';
import { describeAsRoot } from '../helpers/root.js';
import { createSandboxFixture, type SandboxFixture, type StandinKnobs } from '../helpers/sandbox-fixture.js';
import { ExitCollector, WAIT_MS } from './support.js';

describeAsRoot('client: cancellation and deadlines (in-process daemon)', () => {
  let fixture: SandboxFixture;
  let netns: TestNetns;
  let harness: DaemonHarness;
  let client: VmProcessClient;
  let counter = 0;
  const id = (prefix: string) => `${prefix}-${++counter}`;
  const subscribers = () => harness.daemon.supervisor.exchange.subscriberCount;

  async function request(sandboxId: string, knobs: StandinKnobs = {}) {
    return {
      sandboxId,
      mode: LaunchMode.BOOT,
      kernelPath: fixture.kernelPath,
      rootfsPath: await fixture.rootfs(sandboxId, knobs),
      networkNamespace: netns.name,
    };
  }
  const startAndStop = async (sandboxId: string) => {
    await client.startProcess(await request(sandboxId));
    await client.stopProcess({ sandboxId, gracePeriod: { seconds: 5n } });
  };

  beforeAll(async () => {
    netns = await createTestNetns('vmpd');
    fixture = await createSandboxFixture();
    harness = await startDaemonHarness(fixture);
    client = harness.client;
    await client.waitForReady(WAIT_MS);
  });

  afterAll(async () => {
    try {
      const { processes } = await client.listProcesses({ states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] });
      await Promise.all(processes.map((p) => client.stopProcess({ sandboxId: p.sandboxId, gracePeriod: { seconds: 0n } })));
      await harness.stop();
    } finally {
      await killProcessesMentioning(fixture.root);
      await netns.remove();
      await fixture.remove();
    }
  }, 60_000);

  it('breaking out of a reconnecting watch cancels its call on the server', async () => {
    const before = subscribers();
    const watch = client.watchExitsReconnecting();
    const collector = new ExitCollector(watch, () => true); // breaks after the first exit
    await eventually(() => subscribers() === before + 1, WAIT_MS);
    const sandboxId = id('brk');
    await startAndStop(sandboxId);
    await collector.waitForEnd();
    expect(collector.exits.map((e) => e.sandboxId)).toEqual([sandboxId]);
    expect(collector.error).toBeUndefined();
    await eventually(() => subscribers() === before, WAIT_MS);
    expect(watch.cursor).toBe(collector.exits[0]!.sequence);
  });

  it('breaking out of a plain watchExits loop cancels its call too', async () => {
    const before = subscribers();
    const collector = new ExitCollector(client.watchExits({ afterSequence: 0n }), () => true);
    await collector.waitForCount(1); // the replay of exit 1
    await collector.waitForEnd();
    await eventually(() => subscribers() === before, WAIT_MS);
  });

  it('aborting the signal ends an idle reconnecting watch quietly and cancels its call', async () => {
    const before = subscribers();
    const abort = new AbortController();
    const collector = new ExitCollector(client.watchExitsReconnecting({ signal: abort.signal }));
    await eventually(() => subscribers() === before + 1, WAIT_MS);
    abort.abort();
    await collector.waitForEnd();
    expect(collector.error).toBeUndefined();
    await eventually(() => subscribers() === before, WAIT_MS);
  });

  it('an explicit deadline ends WaitProcess, a stream and a unary call with DEADLINE_EXCEEDED', async () => {
    const sandboxId = id('dl');
    await client.startProcess(await request(sandboxId));
    const started = Date.now();
    await expect(client.waitProcess({ sandboxId }, { timeoutMs: 300 })).rejects.toMatchObject({ code: Status.DEADLINE_EXCEEDED });
    expect(Date.now() - started).toBeLessThan(5_000);
    const stream = new ExitCollector(client.watchExits({}, { timeoutMs: 300 }));
    await stream.waitForEnd();
    expect(isRpcError(stream.error, Status.DEADLINE_EXCEEDED)).toBe(true);
    await expect(client.getProcess({ sandboxId }, { timeoutMs: 0 })).rejects.toMatchObject({ code: Status.DEADLINE_EXCEEDED });
    await client.stopProcess({ sandboxId, gracePeriod: { seconds: 0n } });
  });

  it('a client deadline shorter than the VMM takes to be ready fails the start; the daemon abandons it', async () => {
    const sandboxId = id('slow');
    const error = await client.startProcess(await request(sandboxId, { socket_delay_ms: 1_500 }), { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(isRpcError(error, Status.DEADLINE_EXCEEDED)).toBe(true);
    const { process } = await client.waitProcess({ sandboxId }, { timeoutMs: WAIT_MS });
    expect(process?.state).toBe(ProcessState.EXITED);
  });

  it('the default deadline bounds unary calls, but leaves room for ready_timeout and grace_period, and not for WaitProcess', async () => {
    const short = new VmProcessClient(harness.address, { defaultTimeoutMs: 300 });
    try {
      // Ready after ~700 ms: within 300 ms + the 3 s ready_timeout.
      const sandboxId = id('dflt');
      await short.startProcess({ ...(await request(sandboxId, { socket_delay_ms: 700, ignore_sigterm: 1 })), readyTimeout: { seconds: 3n } });
      // WaitProcess has no default deadline: it outlives 300 ms and returns the exit.
      const waited = short.waitProcess({ sandboxId });
      // Ignores SIGTERM: the stop lasts the whole 1 s grace period, longer than the default 300 ms.
      const stopped = await short.stopProcess({ sandboxId, gracePeriod: { seconds: 1n } });
      expect(stopped.process?.exit?.signal).toBe('SIGKILL');
      expect((await waited).process?.exit?.sequence).toBe(stopped.process?.exit?.sequence);
    } finally {
      short.close();
    }
  });

  it('a reconnecting watch of an unreachable daemon waits for it; aborting ends it quietly', async () => {
    const nowhere = new VmProcessClient(`unix://${fixture.root}/nothing.sock`);
    try {
      const abort = new AbortController();
      const waiting = new ExitCollector(nowhere.watchExitsReconnecting({ startAfter: 0n, signal: abort.signal }));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(waiting.ended).toBe(false);
      abort.abort();
      await waiting.waitForEnd(2_000);
      expect(waiting.error).toBeUndefined();
    } finally {
      nowhere.close();
    }
  });
});
