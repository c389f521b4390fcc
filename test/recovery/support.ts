/**
 * Shared plumbing for the fault-injection suites: one network namespace and one sandbox fixture
 * per suite, daemons run as real processes (test/helpers/daemon-process.ts) that the tests kill
 * and restart, readers for the journal and /proc, and an exit watcher that survives its daemon.
 *
 * afterAll brings every state directory the suite used back under a daemon (starting one if the
 * last was killed), stops every live VMM through it, stops it, and then FAILS the suite if any
 * process still mentions the fixture root (killing them anyway so nothing leaks), or if a step
 * given to onTeardown fails.
 */
import { afterAll, beforeAll, expect } from '@jest/globals';
import { existsSync, readdirSync } from 'node:fs';
import { appendFile, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ServiceError, status } from '@grpc/grpc-js';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import {
  ExitReason,
  LaunchMode,
  type ProcessExit,
  type ProcessInfo,
  ProcessState,
  type StartProcessRequestSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { Init, VmProcessClient } from '../../src/client/vm-process-client.js';
import { readProcessStat } from '../../src/launch/proc-stat.js';
import { encodeRecord, readJournal } from '../../src/store/journal.js';
import { DaemonProcess, type DaemonProcessOptions } from '../helpers/daemon-process.js';
import { createTestNetns, type TestNetns } from '../helpers/netns.js';
import { collectLeftovers } from '../helpers/leak-check.js';
import { processesMentioning } from '../helpers/process-scan.js';
import { ExitCollector } from '../helpers/exit-collector.js';
import { expectRpcError } from '../helpers/rpc-errors.js';
import { eventually, sleep, WAIT_MS } from '../helpers/wait.js';
import { createSandboxFixture, type SandboxFixture, type StandinKnobs } from '../helpers/sandbox-fixture.js';

export { eventually, ExitCollector, expectRpcError, processesMentioning, sleep };

/** Generous bound for anything event-driven on a noisy 2-core machine. */
export { WAIT_MS };
/** Bound for a single RPC. */
export const RPC_MS = 15_000;

export type StartInit = Init<typeof StartProcessRequestSchema>;

/** A journal record as the state store writes it (see src/store/state-store.ts). */
export type JournalRecord = Record<string, unknown> & { k: string; id?: string; event?: Record<string, unknown> };

export interface RecoverySuite {
  readonly fixture: SandboxFixture;
  readonly netns: TestNetns;
  /** The state directory of the default daemon: `<root>/state`. */
  readonly stateDir: string;
  /** Starts a daemon and resolves once it serves; remembered for afterAll. */
  startDaemon(options?: DaemonProcessOptions): Promise<DaemonProcess>;
  /** Spawns a daemon without waiting (for daemons expected to fail); remembered for afterAll. */
  launchDaemon(options?: DaemonProcessOptions): DaemonProcess;
  /** A process the test started that afterAll must kill (e.g. a PID-reuse stranger). */
  adopt(pid: number): void;
  /**
   * A step for afterAll once every daemon is stopped and the leak check is done, before the
   * fixture is removed, run whatever happened before (e.g. unmounting a file system in it).
   */
  onTeardown(step: () => Promise<void>): void;
  /** Boot-mode StartProcess request with a rootfs carrying `knobs`. */
  bootRequest(sandboxId: string, knobs?: StandinKnobs, extra?: Partial<StartInit>): Promise<StartInit>;
  socketOf(sandboxId: string): string;
  statusFileOf(sandboxId: string): string;
}

export function useRecoverySuite(): RecoverySuite {
  const daemons: Array<{ daemon: DaemonProcess; options: DaemonProcessOptions }> = [];
  const strangers = new Set<number>();
  const teardownSteps: Array<() => Promise<void>> = [];
  const suite = {
    daemons,
    get stateDir() {
      return join(suite.fixture.root, 'state');
    },
    async startDaemon(options: DaemonProcessOptions = {}) {
      const daemon = await DaemonProcess.start(suite.fixture, options);
      daemons.push({ daemon, options });
      return daemon;
    },
    launchDaemon(options: DaemonProcessOptions = {}) {
      const daemon = DaemonProcess.launch(suite.fixture, options);
      daemons.push({ daemon, options });
      return daemon;
    },
    adopt(pid: number) {
      strangers.add(pid);
    },
    onTeardown(step: () => Promise<void>) {
      teardownSteps.push(step);
    },
    async bootRequest(sandboxId: string, knobs: StandinKnobs = {}, extra: Partial<StartInit> = {}): Promise<StartInit> {
      return {
        sandboxId,
        mode: LaunchMode.BOOT,
        kernelPath: suite.fixture.kernelPath,
        rootfsPath: await suite.fixture.rootfs(sandboxId, knobs),
        networkNamespace: suite.netns.name,
        readyTimeout: { seconds: 20n },
        ...extra,
      } as StartInit;
    },
    socketOf: (sandboxId: string) => join(suite.fixture.runDir, `${sandboxId}.sock`),
    statusFileOf: (sandboxId: string) => statusFileIn(join(suite.fixture.runDir, 'exits'), sandboxId),
  } as RecoverySuite & { fixture: SandboxFixture; netns: TestNetns; daemons: typeof daemons };

  beforeAll(async () => {
    suite.netns = await createTestNetns('vmpr');
    suite.fixture = await createSandboxFixture();
  });

  afterAll(async () => {
    const problems: string[] = [];
    let leftovers: string[] = [];
    try {
      if (suite.fixture) {
        // Every state directory used, with its serving daemon, or else its latest one.
        const byStateDir = new Map<string, { daemon: DaemonProcess; options: DaemonProcessOptions }>();
        for (const entry of daemons) {
          const key = entry.options.stateDir ?? suite.stateDir;
          const current = byStateDir.get(key);
          if (!current || current.daemon.exit || !current.daemon.servingLine) byStateDir.set(key, entry);
        }
        for (const { daemon, options } of byStateDir.values()) {
          await stopEverything(suite, daemon, options).catch((error: unknown) => problems.push(`stopping through the daemon failed: ${String(error)}`));
        }
        for (const { daemon } of daemons) {
          if (!daemon.exit) await daemon.kill('SIGKILL').catch(() => undefined);
        }
        for (const pid of strangers) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        // A SIGKILL is not a death yet: on a loaded host the stranger can still be found, whole, by
        // the leak check's read of /proc. Wait for it to be gone (or a zombie) first.
        await eventually(async () => (await Promise.all([...strangers].map(isAlive))).every((alive) => !alive), WAIT_MS).catch(() => undefined);
        leftovers = await collectLeftovers(suite.fixture.root);
      }
    } finally {
      for (const step of teardownSteps.reverse()) {
        await step().catch((error: unknown) => problems.push(`teardown step failed: ${String(error)}`));
      }
      await suite.netns?.remove();
      await suite.fixture?.remove();
    }
    expect({ leftovers, problems }).toEqual({ leftovers: [], problems: [] });
  }, 60_000);

  return suite;
}

/** Brings a state directory under a serving daemon, stops every live VMM (SIGKILL), stops it. */
async function stopEverything(suite: RecoverySuite, last: DaemonProcess, options: DaemonProcessOptions): Promise<void> {
  let daemon = last;
  if (daemon.exit || !daemon.servingLine) {
    if (!daemon.exit) await daemon.kill('SIGKILL');
    try {
      daemon = await suite.startDaemon(options);
    } catch {
      return; // e.g. a journal a test left corrupt: the leak check reports what is left
    }
  }
  const client = daemon.client();
  const { processes } = await client.listProcesses(
    { states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] },
    { timeoutMs: RPC_MS },
  );
  await Promise.allSettled(processes.map((p) => client.stopProcess({ sandboxId: p.sandboxId, gracePeriod: { seconds: 0n } }, { timeoutMs: RPC_MS })));
  await daemon.stop();
}


// ------------------------------------------------------------------------------------------------
// Journal
// ------------------------------------------------------------------------------------------------

export function journalPath(stateDir: string): string {
  return join(stateDir, 'state.journal');
}

export async function readJournalRecords(stateDir: string): Promise<JournalRecord[]> {
  return (await readJournal(journalPath(stateDir))).records as JournalRecord[];
}

/** Appends records with valid checksums, as the daemon would have written them. */
export async function appendJournalRecords(stateDir: string, records: readonly JournalRecord[]): Promise<void> {
  await appendFile(journalPath(stateDir), records.map(encodeRecord).join(''));
}

/**
 * Rewrites the journal without the records `drop` matches (every other line is kept byte for
 * byte): what the file looks like when the daemon died before it wrote them.
 */
export async function dropJournalRecords(stateDir: string, drop: (r: JournalRecord) => boolean): Promise<number> {
  const path = journalPath(stateDir);
  const lines = (await readFile(path, 'utf8')).split('\n').filter((line) => line !== '');
  const kept = lines.filter((line) => !drop(JSON.parse(line.slice(line.indexOf(' ') + 1)) as JournalRecord));
  await writeFile(path, kept.map((line) => `${line}\n`).join(''));
  return lines.length - kept.length;
}

/** Polls the journal until a record matches; returns it. */
export async function waitForJournalRecord(stateDir: string, match: (r: JournalRecord) => boolean, timeoutMs = WAIT_MS): Promise<JournalRecord> {
  let found: JournalRecord | undefined;
  await eventually(async () => {
    found = (await readJournalRecords(stateDir).catch(() => [] as JournalRecord[])).find(match);
    return found !== undefined;
  }, timeoutMs);
  return found!;
}

// ------------------------------------------------------------------------------------------------
// Processes
// ------------------------------------------------------------------------------------------------

/** True while `pid` exists and is not a zombie. */
export async function isAlive(pid: number): Promise<boolean> {
  const stat = await readProcessStat(pid);
  return stat !== undefined && stat.state !== 'Z';
}

/** Parent PID (field 4 of /proc/PID/stat), or undefined when gone. */
export async function parentOf(pid: number): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/**
 * Resolves once `pid` has ended and its reaper has recorded how (the status file exists); returns
 * when that was seen (Date.now()), an upper bound of the recorded exit time.
 */
export async function waitRecorded(pid: number, statusFile: string, timeoutMs = WAIT_MS): Promise<number> {
  await eventually(async () => !(await isAlive(pid)) && existsSync(statusFile), timeoutMs, 5);
  return Date.now();
}

/** Resolves once `pid` is gone or a zombie; returns when that was seen (Date.now()). */
export async function waitGone(pid: number, timeoutMs = WAIT_MS): Promise<number> {
  await eventually(async () => !(await isAlive(pid)), timeoutMs, 5);
  return Date.now();
}

// ------------------------------------------------------------------------------------------------
// Exits
// ------------------------------------------------------------------------------------------------

/** Reads a whole replay: WatchExits(after) until `count` exits arrived, then cancels. */
export async function replayExits(client: VmProcessClient, afterSequence: bigint, count: number, timeoutMs = WAIT_MS): Promise<ProcessExit[]> {
  const watcher = ExitCollector.watch(client, { afterSequence });
  try {
    return [...(await watcher.until((e) => e.length >= count, timeoutMs, `${count} replayed exits`))];
  } finally {
    await watcher.close();
  }
}

/** The error a WatchExits call ends with, or undefined if it delivered an exit or stayed open for `windowMs`. */
export async function watchError(client: VmProcessClient, afterSequence: bigint, windowMs = 2_000): Promise<ServiceError | undefined> {
  const watcher = ExitCollector.watch(client, { afterSequence });
  try {
    await watcher.until((e) => e.length > 0, windowMs).catch(() => undefined);
    return watcher.error as ServiceError | undefined;
  } finally {
    await watcher.close();
  }
}

/** WatchExits(after) must fail at once with `code`, its details containing each fragment. */
export async function expectWatchError(client: VmProcessClient, afterSequence: bigint, code: status, ...fragments: string[]): Promise<void> {
  const error = await watchError(client, afterSequence);
  expect({ code: error ? (status[error.code] ?? error.code) : 'no error' }).toEqual({ code: status[code] });
  for (const fragment of fragments) expect(error!.details).toContain(fragment);
}

export function describeExits(exits: readonly ProcessExit[]): string {
  return JSON.stringify(exits.map((e) => ({ seq: Number(e.sequence), id: e.sandboxId, code: e.exitCode, signal: e.signal, reason: e.reason })));
}

export function sequencesOf(exits: readonly ProcessExit[]): number[] {
  return exits.map((e) => Number(e.sequence));
}

/** [from, from+1, ..., to] */
export function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}

export function exitedAtMs(exit: ProcessExit): number {
  return timestampMs(exit.exitedAt!);
}

/** The fields of an exit that say how it ended, for compact assertions. */
export function outcome(exit: ProcessExit | undefined): Record<string, unknown> | undefined {
  if (!exit) return undefined;
  return {
    sandboxId: exit.sandboxId,
    reason: ExitReason[exit.reason],
    exitCode: exit.exitCode,
    signal: exit.signal,
    signalSentByDaemon: exit.signalSentByDaemon,
  };
}

// ------------------------------------------------------------------------------------------------
// Daemon-side views
// ------------------------------------------------------------------------------------------------

export async function getProcess(client: VmProcessClient, sandboxId: string): Promise<ProcessInfo> {
  return (await client.getProcess({ sandboxId }, { timeoutMs: RPC_MS })).process!;
}

/** Polls GetProcess until `match` holds; returns the last answer. */
export async function waitProcess(client: VmProcessClient, sandboxId: string, match: (p: ProcessInfo) => boolean, timeoutMs = WAIT_MS): Promise<ProcessInfo> {
  let last: ProcessInfo | undefined;
  try {
    await eventually(async () => {
      last = await getProcess(client, sandboxId);
      return match(last);
    }, timeoutMs, 20);
  } catch (error) {
    throw new Error(`${sandboxId}: ${String(error)}; last seen state ${last ? ProcessState[last.state] : 'none'}`);
  }
  return last!;
}

/** A reaper file of a sandbox: `<id>.<launch>.status`, `.pids`, `.tmp` (or `<id>.status` in crafted journals). */
function reaperFileOf(sandboxId: string): RegExp {
  return new RegExp(`^${sandboxId.replace(/[.]/g, '\\.')}\\.([0-9a-f]{8}\\.)?status(\\..*)?$`);
}

/**
 * The status file of a sandbox's current launch (each launch has its own name): found through the
 * `.pids`, `.events` (the VMM's event monitor) or `.status` file of the launch, else `<id>.status`
 * (the name crafted journals use).
 */
function statusFileIn(exitsDir: string, sandboxId: string): string {
  const pattern = reaperFileOf(sandboxId);
  const name = (existsSync(exitsDir) ? readdirSync(exitsDir) : []).find((entry) => pattern.test(entry) && !entry.endsWith('.tmp'));
  return join(exitsDir, name ? name.replace(/\.(pids|events)$/, '') : `${sandboxId}.status`);
}

/** Files a sandbox leaves while live: none of them may outlive its published exit. */
export async function leftoverFilesOf(suite: RecoverySuite, sandboxIds: readonly string[]): Promise<string[]> {
  const runFiles = await readdir(suite.fixture.runDir);
  const exitFiles = await readdir(join(suite.fixture.runDir, 'exits')).catch(() => [] as string[]);
  const found: string[] = [];
  for (const id of sandboxIds) {
    for (const name of runFiles) if (name === `${id}.sock` || name === `${id}.sock.lock`) found.push(join(suite.fixture.runDir, name));
    for (const name of exitFiles) if (reaperFileOf(id).test(name)) found.push(join(suite.fixture.runDir, 'exits', name));
  }
  return found;
}

/** Logs one measurement where a CI log shows it. */
export function report(label: string, values: Record<string, unknown>): void {
  process.stderr.write(`[recovery] ${label}: ${JSON.stringify(values)}\n`);
}

export { inspectStandin, type StandinInspect } from '../helpers/standin-inspect.js';
