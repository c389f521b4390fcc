/**
 * Stateful fuzz test (issue 8): random sequences of every RPC, with random and boundary values,
 * some calls overlapping, WatchExits and StreamLogs streams opened and cancelled, against the real
 * daemon binary and the stand-in VMM. fast-check generates the sequences (fuzz-commands.ts) and
 * shrinks a failing one.
 *
 * Invariants: every status is one its RPC documents (never UNKNOWN or INTERNAL); the daemon never
 * crashes and writes nothing to stderr (an unhandled rejection, a timer overflow warning); every
 * exit is published once, in one gap-free sequence, and every VMM a start returned has exactly
 * one; after each run nothing of it is live, and at the end no process, mount, socket or status
 * file is left.
 *
 * Bounded by time: VMPROCD_FUZZ_SECONDS (default 60) and VMPROCD_FUZZ_RUNS (default unbounded
 * within the time). VMPROCD_FUZZ_SEED replays a run; the seed is printed at the start and in the
 * failure, with the shrunk case's path: VMPROCD_FUZZ_SEED, VMPROCD_FUZZ_PATH and VMPROCD_FUZZ_REPLAY_PATH
 * (the counterexample's replayPath) together replay that case alone (against a real system, so not always to the same outcome). VMPROCD_FUZZ_SHRINK=0 reports the first failing sequence unshrunk; VMPROCD_FUZZ_DEBUG=1
 * prints how each run ended.
 *
 *   VMPROCD_FUZZ_SECONDS=600 npm run -s test:jest -- test/fuzz/stateful-fuzz.test.ts
 */
import { afterAll, beforeAll, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { ExitCollector } from '../helpers/exit-collector.js';
import { collectLeftovers } from '../helpers/leak-check.js';
import { createTestNetns, type TestNetns } from '../helpers/netns.js';
import { hostMountsUnder } from '../helpers/process-scan.js';
import { describeAsRoot } from '../helpers/root.js';
import { createSandboxFixture, type SandboxFixture } from '../helpers/sandbox-fixture.js';
import { eventually, WAIT_MS } from '../helpers/wait.js';
import { COMMANDS } from './fuzz-commands.js';
import { type FuzzHost, World } from './fuzz-world.js';

const SECONDS = Number(process.env.VMPROCD_FUZZ_SECONDS ?? 60);
const RUNS = Number(process.env.VMPROCD_FUZZ_RUNS ?? 1_000_000);
const SEED = Number(process.env.VMPROCD_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
/** Hostile sandbox IDs the commands use besides each run's pool, some of them valid. */
const SHARED_IDS = ['vmprocd', 'a'.repeat(63)];

describeAsRoot('stateful fuzz of the daemon', () => {
  let netns: TestNetns;
  let fixture: SandboxFixture;
  let daemon: DaemonProcess;
  let host: FuzzHost;

  beforeAll(async () => {
    netns = await createTestNetns('vmpf');
    fixture = await createSandboxFixture();
    await mkdir(join(fixture.root, 'snaps'));
    daemon = await DaemonProcess.start(fixture);
    const recorder = ExitCollector.watch(daemon.client(), { afterSequence: 0n });
    host = { client: daemon.client(), fixture, netns: netns.name, snapsDir: join(fixture.root, 'snaps'), recorder, started: [], violations: [], outcomes: new Map() };
    await host.client.waitForReady(WAIT_MS);
  });

  afterAll(async () => {
    try {
      if (daemon && !daemon.exit) await daemon.stop();
      if (fixture) expect(await collectLeftovers(fixture.root)).toEqual([]);
    } finally {
      await netns?.remove();
      await fixture?.remove();
    }
  }, 60_000);

  /**
   * Ends a run: waits for what is in flight, closes its streams, stops what it started, checks its
   * exits. Every step runs even when an earlier one failed (nothing of the run may outlive it);
   * the first failure is thrown at the end.
   */
  async function endRun(world: World): Promise<void> {
    const problems: unknown[] = [];
    const step = async (work: () => Promise<unknown>) => {
      try {
        await work();
      } catch (error) {
        problems.push(error);
      }
    };
    await step(async () => {
      const inFlight = await withTimeout(Promise.allSettled(world.pending), 60_000, `${world.tag}: calls still in flight after 60 s`);
      for (const r of inFlight) if (r.status === 'rejected') problems.push(r.reason);
    });
    for (const stream of world.streams.splice(0)) {
      await step(() => {
        stream.abort.abort();
        return withTimeout(stream.done, 10_000, `${world.tag}: ${stream.label} did not end when cancelled`);
      });
    }
    for (const sandboxId of [...world.pool, ...SHARED_IDS]) {
      await step(() => withTimeout(
        world.call('stopProcess', `${sandboxId} (end of run)`, world.client.stopProcess({ sandboxId, gracePeriod: { seconds: 0n } })),
        30_000,
        `${world.tag}: StopProcess ${sandboxId} with grace 0 did not return within 30 s`,
      ));
    }
    await step(async () => {
      const live = await world.client.listProcesses({ states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] });
      const left = live.processes.filter((p) => p.sandboxId.startsWith(`${world.tag}-`) || SHARED_IDS.includes(p.sandboxId));
      if (left.length > 0) world.fail(`${world.tag}: still live after stopping everything: ${left.map((p) => `${p.sandboxId} ${ProcessState[p.state]}`).join(', ')}`);
    });
    const mine = host.started.filter((s) => s.sandboxId.startsWith(`${world.tag}-`));
    await eventually(() => mine.every((s) => exitsOf(s).length >= 1), WAIT_MS).catch(() => undefined);
    for (const s of mine) {
      const count = exitsOf(s).length;
      if (count !== 1) await step(async () => world.fail(`${s.sandboxId} (pid ${s.pid}): its exit was published ${count} times`));
    }
    if (problems.length > 0) throw problems[0];
  }

  const exitsOf = (s: FuzzHost['started'][number]) =>
    host.recorder.exits.filter((e) => e.sandboxId === s.sandboxId && e.pid === s.pid && timestampMs(e.startedAt!) === s.startedAtMs);

  it(`holds its invariants for ${SECONDS}s of random RPC sequences`, async () => {
    process.stderr.write(`stateful fuzz: seed ${SEED}, ${SECONDS}s (replay with VMPROCD_FUZZ_SEED=${SEED})\n`);
    let runs = 0;
    let commands = 0;
    /** The run in progress: fast-check's time limit abandons it, but it must finish (and clean up). */
    let current: Promise<void> = Promise.resolve();
    const runOnce = async (cmds: Iterable<fc.AsyncCommand<World, World>>) => {
      const world = new World(host, `f${++runs}`);
      let failure: unknown;
      try {
        await fc.asyncModelRun(() => ({ model: world, real: world }), cmds);
      } catch (error) {
        failure = error;
      }
      commands += [...cmds].length;
      try {
        await endRun(world);
      } catch (error) {
        failure ??= error;
      }
      if (daemon.exit) {
        host.violations.push(`the daemon exited (${JSON.stringify(daemon.exit)})`);
        failure ??= new Error(`the daemon exited (${JSON.stringify(daemon.exit)}):\n${daemon.output.slice(-4000)}`);
      }
      if (process.env.VMPROCD_FUZZ_DEBUG) process.stderr.write(`${world.tag} ended ${failure ? `with ${String(failure).slice(0, 300)}` : 'well'}\n`);
      if (failure) throw failure;
    };
    const property = fc.asyncProperty(fc.commands(COMMANDS, { maxCommands: 30, size: 'max', ...(process.env.VMPROCD_FUZZ_REPLAY_PATH ? { replayPath: process.env.VMPROCD_FUZZ_REPLAY_PATH } : {}) }), (cmds) => {
      current = runOnce(cmds);
      return current;
    });
    try {
      await fc.assert(property, {
        seed: SEED,
        numRuns: RUNS,
        ...(process.env.VMPROCD_FUZZ_PATH ? { path: process.env.VMPROCD_FUZZ_PATH } : {}),
        // Stops at the time limit, shrinking included: a failure found late is shrunk less (replay
        // its seed with more VMPROCD_FUZZ_SECONDS to shrink it further).
        interruptAfterTimeLimit: SECONDS * 1000,
        markInterruptAsFailure: false,
        endOnFailure: process.env.VMPROCD_FUZZ_SHRINK === '0',
      });
    } catch (error) {
      await current.catch(() => undefined);
      const cause = (error as Error).cause;
      throw new Error(
        `stateful fuzz failed; replay with VMPROCD_FUZZ_SEED=${SEED} (VMPROCD_FUZZ_PATH=<path> VMPROCD_FUZZ_REPLAY_PATH=<replayPath> for the shrunk case alone)\n` +
          `${(error as Error).message}\nThe failure: ${cause instanceof Error ? cause.stack ?? cause.message : String(cause)}\nViolations: ${JSON.stringify(host.violations, null, 2)}`,
      );
    }
    // A run the time limit cut short still ends, and what it broke is in host.violations.
    await current.catch(() => undefined);
    const outcomes = [...host.outcomes].sort(([a], [b]) => a.localeCompare(b)).map(([key, n]) => `${key} ${n}`).join(', ');
    process.stderr.write(`stateful fuzz: ${runs} runs, ${commands} commands, ${host.started.length} VMMs started, ${host.recorder.exits.length} exits\n  ${outcomes}\n`);

    // The whole test's exits: one gap-free sequence, each VMM once.
    const sequences = host.recorder.exits.map((e) => Number(e.sequence));
    expect(sequences).toEqual(sequences.map((_, i) => i + 1));
    const keys = host.recorder.exits.map((e) => `${e.sandboxId}/${e.pid}/${timestampMs(e.startedAt!)}`);
    expect(keys.filter((key, i) => keys.indexOf(key) !== i)).toEqual([]);
    expect(host.violations).toEqual([]);

    // The daemon: alive, silent on stderr, no error logged; then stopped cleanly with nothing left.
    expect(daemon.exit).toBeUndefined();
    expect(daemon.stderr).toBe('');
    expect(daemon.logs.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
    const recorderError = await host.recorder.close();
    expect(recorderError).toBeUndefined();
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    expect(await hostMountsUnder(fixture.root)).toEqual([]);
    expect(readdirSync(fixture.runDir).filter((name) => name.endsWith('.sock') || name.endsWith('.lock'))).toEqual([]);
    const exitsDir = join(fixture.runDir, 'exits');
    expect(existsSync(exitsDir) ? readdirSync(exitsDir) : []).toEqual([]);
  }, SECONDS * 1000 + 240_000);
});

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(what)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}
