/**
 * Shared plumbing for the gRPC end-to-end suites: one network namespace, one sandbox fixture and
 * one real daemon (in-process, on a unix socket) per suite, an exit recorder that sees every exit
 * the daemon publishes, and helpers for starts, RPC errors and leak checks.
 */
import { afterAll, beforeAll, expect } from '@jest/globals';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { type ServiceError, status } from '@grpc/grpc-js';
import {
  EventKind,
  LaunchMode,
  type ProcessEvent,
  type ProcessExit,
  ProcessState,
  type StartProcessRequest,
  type StartProcessRequestSchema,
  type StartProcessResponse,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { Init, VmProcessClient } from '../../src/client/vm-process-client.js';
import type { DaemonConfig } from '../../src/daemon/config.js';
import { type DaemonHarness, startDaemonHarness } from '../helpers/daemon-harness.js';
import { createTestNetns, type TestNetns } from '../helpers/netns.js';
import { EventRecorder } from '../helpers/event-recorder.js';
import { ExitCollector } from '../helpers/exit-collector.js';
import { collectLeftovers } from '../helpers/leak-check.js';
import { processesMentioning } from '../helpers/process-scan.js';
import { expectRpcError } from '../helpers/rpc-errors.js';
import { eventually, WAIT_MS } from '../helpers/wait.js';
import { createSandboxFixture, type SandboxFixture, type StandinKnobs } from '../helpers/sandbox-fixture.js';

export { eventually, expectRpcError, processesMentioning };
export { sequencesOf } from '../helpers/exit-collector.js';

export { WAIT_MS };

// ------------------------------------------------------------------------------------------------
// Suite setup
// ------------------------------------------------------------------------------------------------

/** A StartProcess request as a plain object (the init form, not a built message). */
export type StartInit = Exclude<Init<typeof StartProcessRequestSchema>, StartProcessRequest>;

export interface GrpcSuite {
  fixture: SandboxFixture;
  netns: TestNetns;
  harness: DaemonHarness;
  client: VmProcessClient;
  /** Every exit the daemon publishes, in order, from one WatchExits{after_sequence: 0} opened before the first start. */
  recorder: ExitCollector;
  /** Every event the daemon publishes, in order, from one WatchEvents{after_sequence: 0} opened before the first start. */
  events: EventRecorder;
  /** A fresh sandbox ID, unique within the suite. */
  id(prefix: string): string;
  /** StartProcess in boot mode with a rootfs carrying `knobs`; `extra` overrides request fields. */
  startBoot(sandboxId: string, knobs?: StandinKnobs, extra?: Partial<StartInit>): Promise<StartProcessResponse>;
  /** The request startBoot would send (for tests that call the client themselves). */
  bootRequest(sandboxId: string, knobs?: StandinKnobs, extra?: Partial<StartInit>): Promise<StartInit>;
  /** Stops every process the daemon still has live (for suites whose tests share a TAP or a name). */
  stopLive(): Promise<void>;
  /** Default API socket path of a sandbox. */
  socketOf(sandboxId: string): string;
}

/**
 * Registers beforeAll/afterAll for one suite and returns its context (filled in by beforeAll).
 * afterAll stops every process the daemon still has live, stops the daemon, then FAILS the suite
 * if any process mentioning the fixture is left (after killing them, so nothing leaks anyway).
 */
export interface SuiteOptions {
  /** A test stops the daemon itself: afterAll then neither lists nor stops through it, and the
   * recorder's stream ending with UNAVAILABLE is expected. */
  readonly daemonStoppedByTest?: boolean;
}

/** Daemon configuration overrides, or a function of the suite's fixture that returns them. */
export type SuiteOverrides = Partial<DaemonConfig> | ((fixture: SandboxFixture) => Promise<Partial<DaemonConfig>>);

export function useGrpcSuite(overrides: SuiteOverrides = {}, options: SuiteOptions = {}): GrpcSuite {
  let counter = 0;
  const suite = {
    id: (prefix: string) => `${prefix}-${++counter}`,
    socketOf: (sandboxId: string) => `${suite.fixture.runDir}/${sandboxId}.sock`,
    async bootRequest(sandboxId: string, knobs: StandinKnobs = {}, extra: Partial<StartInit> = {}): Promise<StartInit> {
      return {
        sandboxId,
        mode: LaunchMode.BOOT,
        kernelPath: suite.fixture.kernelPath,
        rootfsPath: await suite.fixture.rootfs(sandboxId, knobs),
        networkNamespace: suite.netns.name,
        ...extra,
      };
    },
    async startBoot(sandboxId: string, knobs: StandinKnobs = {}, extra: Partial<StartInit> = {}) {
      return suite.client.startProcess(await suite.bootRequest(sandboxId, knobs, extra));
    },
    async stopLive() {
      const { processes } = await suite.client.listProcesses(
        { states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] },
        { timeoutMs: 5_000 },
      );
      await Promise.allSettled(
        processes.map((p) => suite.client.stopProcess({ sandboxId: p.sandboxId, gracePeriod: { seconds: 0n } }, { timeoutMs: 10_000 })),
      );
    },
  } as GrpcSuite;

  beforeAll(async () => {
    suite.netns = await createTestNetns('vmpg');
    suite.fixture = await createSandboxFixture();
    const requested = typeof overrides === 'function' ? await overrides(suite.fixture) : overrides;
    suite.harness = await startDaemonHarness(suite.fixture, requested);
    suite.client = suite.harness.client;
    await suite.client.waitForReady(WAIT_MS);
    suite.recorder = ExitCollector.watch(suite.harness.newClient(), { afterSequence: 0n });
    suite.events = new EventRecorder(suite.harness.address);
    await eventually(() => suite.harness.daemon.supervisor.exchange.subscriberCount >= 1 && suite.harness.daemon.supervisor.events.subscriberCount >= 1, WAIT_MS);
  });

  afterAll(async () => {
    const problems: string[] = [];
    let leftovers: string[] = [];
    // Every step is bounded, so the netns and fixture are always removed within the hook's timeout.
    const step = async (what: string, work: () => Promise<unknown>, timeoutMs: number) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          work(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs}ms`)), timeoutMs);
          }),
        ]);
      } catch (error) {
        problems.push(`${what}: ${String(error)}`);
      } finally {
        clearTimeout(timer);
      }
    };
    try {
      if (suite.harness && !options.daemonStoppedByTest) {
        // Stop what is still live (the tests should have; this is the backstop before the leak check).
        await step('stopping live processes', () => suite.stopLive(), 15_000);
      }
      if (suite.recorder) {
        await step('closing the exit recorder', async () => {
          const recorderFailure = await suite.recorder.close();
          const expectedEnd = options.daemonStoppedByTest && (recorderFailure as ServiceError | undefined)?.code === status.UNAVAILABLE;
          if (recorderFailure && !expectedEnd) problems.push(`the exit recorder stream failed: ${String(recorderFailure)}`);
        }, 5_000);
        const sequences = suite.recorder.exits.map((e) => Number(e.sequence));
        const expected = sequences.map((_, i) => i + 1);
        if (JSON.stringify(sequences) !== JSON.stringify(expected)) {
          problems.push(`the recorder did not see sequences 1..n exactly once: ${JSON.stringify(sequences)}`);
        }
      }
      if (suite.events) {
        // The last events (an EXITED among them) may still be on their way.
        const exited = () => suite.events.events.filter((e) => e.kind === EventKind.EXITED).length;
        await step('waiting for every EXITED event', () => eventually(() => exited() >= (suite.recorder?.exits.length ?? 0), WAIT_MS), WAIT_MS + 1_000);
        await step('closing the event recorder', async () => {
          const failure = await suite.events.close();
          const expectedEnd = options.daemonStoppedByTest && (failure as ServiceError | undefined)?.code === status.UNAVAILABLE;
          if (failure && !expectedEnd) problems.push(`the event recorder stream failed: ${String(failure)}`);
        }, 5_000);
        problems.push(...checkEvents(suite.events.events, suite.recorder?.exits ?? []));
      }
      if (suite.harness) await step('stopping the daemon', () => suite.harness.stop(), 15_000);
      if (suite.fixture) {
        await step('collecting leftovers', async () => {
          leftovers = await collectLeftovers(suite.fixture.root);
        }, WAIT_MS + 5_000);
      }
    } finally {
      await suite.netns?.remove();
      await suite.fixture?.remove();
    }
    expect({ leftovers, problems }).toEqual({ leftovers: [], problems: [] });
  }, 90_000);

  return suite;
}

/**
 * What every suite's events must show: sequences 1..n exactly once; one EXITED event per exit,
 * carrying it, and the last of its launch; a STARTED before every EXITED of a launch that spawned.
 */
function checkEvents(events: readonly ProcessEvent[], exits: readonly ProcessExit[]): string[] {
  const problems: string[] = [];
  const sequences = events.map((e) => Number(e.sequence));
  if (JSON.stringify(sequences) !== JSON.stringify(sequences.map((_, i) => i + 1))) {
    problems.push(`the event recorder did not see sequences 1..n exactly once: ${JSON.stringify(sequences)}`);
  }
  const exitedEvents = events.filter((e) => e.kind === EventKind.EXITED);
  const exitSequences = exitedEvents.map((e) => (e.detail.case === 'exit' ? e.detail.value.sequence : -1n));
  if (JSON.stringify(exitSequences.map(String)) !== JSON.stringify(exits.map((e) => String(e.sequence)))) {
    problems.push(`EXITED events carry exits ${exitSequences.join(',')}, WatchExits sent ${exits.map((e) => e.sequence).join(',')}`);
  }
  for (const exited of exitedEvents) {
    const exit = exited.detail.case === 'exit' ? exited.detail.value : undefined;
    const launch = events.filter((e) => e.sandboxId === exited.sandboxId && e.pid === exited.pid && e.sequence <= exited.sequence);
    if (exit && exit.pid !== 0 && !launch.some((e) => e.kind === EventKind.STARTED)) problems.push(`EXITED ${exited.sequence} of ${exited.sandboxId} has no STARTED before it`);
    const after = events.find((e) => e.sandboxId === exited.sandboxId && e.pid === exited.pid && e.sequence > exited.sequence && e.kind !== EventKind.STARTED);
    if (after) problems.push(`${EventKind[after.kind]} ${after.sequence} of ${exited.sandboxId} came after its EXITED ${exited.sequence}`);
  }
  return problems;
}

// ------------------------------------------------------------------------------------------------
// RPC errors
// ------------------------------------------------------------------------------------------------

// ------------------------------------------------------------------------------------------------
// Leak checks and the stand-in's inspect endpoint
// ------------------------------------------------------------------------------------------------

/** After a failed start: no process mentions the socket path, and no socket file is left. */
export async function expectNothingLeft(socketPath: string): Promise<void> {
  // The reaper reports the exit and then ends: it may still be on its way out for a moment.
  await eventually(async () => (await processesMentioning(socketPath)).length === 0, 2000).catch(() => undefined);
  expect({ processes: await processesMentioning(socketPath), socketExists: existsSync(socketPath) }).toEqual({
    processes: [],
    socketExists: false,
  });
}

/** The network namespace inode link (`net:[...]`) of a process started inside `netnsName`. */
export async function netnsIdentity(netnsName: string): Promise<string> {
  const { stdout } = await execa('ip', ['netns', 'exec', netnsName, 'readlink', '/proc/self/ns/net']);
  return stdout.trim();
}

/** Resolves with `value` after `ms` (for "has it settled yet?" races, never for waiting on events). */
export function delay<T>(ms: number, value?: T): Promise<T | undefined> {
  return new Promise((resolve) => setTimeout(() => resolve(value), ms));
}

/** True when the promise has settled by the time a macrotask has run. */
export async function hasSettled(promise: Promise<unknown>, withinMs = 0): Promise<boolean> {
  const marker = Symbol('pending');
  const winner = await Promise.race([promise.then(() => true, () => true), delay(withinMs, marker)]);
  return winner === true;
}

// ------------------------------------------------------------------------------------------------
// Reading a WatchExits stream step by step
// ------------------------------------------------------------------------------------------------

/**
 * One WatchExits call read on demand: `next()` with a timeout, `until()` a condition holds.
 * `close()` cancels the call (the client's iterator cancels on return()).
 */
export class ExitStream {
  readonly received: ProcessExit[] = [];
  readonly #iterator: AsyncIterator<ProcessExit>;
  #pending: Promise<IteratorResult<ProcessExit>> | undefined;
  #error: unknown;
  #ended = false;

  constructor(client: VmProcessClient, request: Parameters<VmProcessClient['watchExits']>[0] = {}) {
    this.#iterator = client.watchExits(request)[Symbol.asyncIterator]();
    // Ask for the first exit at once: an error the server sends before anyone reads must land in
    // this promise (see the client test in watch-exits.test.ts for what happens otherwise).
    this.#pending = this.#iterator.next();
    this.#pending.catch(() => undefined);
  }

  /** The next exit, or rejects with the stream's error; `undefined` at a normal end. */
  async next(timeoutMs = WAIT_MS): Promise<ProcessExit | undefined> {
    if (this.#error) throw this.#error;
    if (this.#ended) return undefined;
    this.#pending ??= this.#iterator.next();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = Symbol('timeout');
    try {
      const result = await Promise.race([
        this.#pending,
        new Promise<typeof timedOut>((resolve) => {
          timer = setTimeout(() => resolve(timedOut), timeoutMs);
        }),
      ]);
      if (result === timedOut) throw new Error(`no exit on the stream within ${timeoutMs}ms (received so far: ${this.received.length})`);
      this.#pending = undefined;
      if (result.done) {
        this.#ended = true;
        return undefined;
      }
      this.received.push(result.value);
      return result.value;
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('no exit on the stream'))) {
        this.#pending = undefined;
        this.#error = error;
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads until `done(received)` is true; returns everything received so far. */
  async until(done: (received: ProcessExit[]) => boolean, timeoutMs = WAIT_MS): Promise<ProcessExit[]> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.received)) {
      const exit = await this.next(Math.max(1, deadline - Date.now()));
      if (!exit) throw new Error(`the stream ended after ${this.received.length} exits`);
    }
    return this.received;
  }

  /** Reads until an exit of each of `sandboxIds` has arrived. */
  untilExitsOf(sandboxIds: readonly string[], timeoutMs = WAIT_MS): Promise<ProcessExit[]> {
    return this.until((r) => sandboxIds.every((id) => r.some((e) => e.sandboxId === id)), timeoutMs);
  }

  async close(): Promise<void> {
    this.#ended = true;
    await this.#iterator.return?.();
  }
}

/** [from, from+1, ..., to] */
export function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}

export { inspectStandin, type StandinInspect } from '../helpers/standin-inspect.js';
