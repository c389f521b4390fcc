/**
 * Fakes of the core's ports (src/core/ports.ts), so that the supervisor's use cases run in
 * milliseconds without root: processes that end when the test says (or as a VMM would on SIGTERM
 * and SIGKILL), a clock the test advances, a VMM API the test answers, and a store that records
 * what it was told.
 */
import type { ExitStatus, LaunchFiles, ProcessIdentity, ProcessExitEvent, RestoreSpec, SocketFiles, StartFailure, StartSpec, VmCounters, VmInfo, VmResize, VmState } from '../../../src/core/domain.js';
import { EventExchange } from '../../../src/core/event-exchange.js';
import type { ProcessEvent } from '../../../src/core/events.js';
import { ExitExchange } from '../../../src/core/exit-exchange.js';
import type {
  Clock,
  FoundLaunch,
  PersistedProcess,
  ProcessHandle,
  ProcessHost,
  Recorded,
  RunLayout,
  SnapshotDirs,
  StateStore,
  VmmApi,
  VmmEvent,
  VmmEventFeed,
  VmmEventSource,
} from '../../../src/core/ports.js';
import { signalName } from '../../../src/core/signals.js';
import { Supervisor } from '../../../src/core/supervisor.js';
import { VmprocError } from '../../../src/errors.js';

/** Lets every promise chain that is ready run (the core has no timers but the clock's). */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

// ------------------------------------------------------------------------------------------------

/** Time that moves only when the test says: advance() fires what has come due, in order. */
export class FakeClock implements Clock {
  #now: number;
  readonly #timers = new Set<{ at: number; callback: () => void }>();

  constructor(start = Date.UTC(2026, 11, 1, 12)) {
    this.#now = start;
  }

  now(): Date {
    return new Date(this.#now);
  }

  schedule(ms: number, callback: () => void): () => void {
    const timer = { at: this.#now + Math.max(0, ms), callback };
    this.#timers.add(timer);
    return () => this.#timers.delete(timer);
  }

  /** Timers still pending, with how far away each is. */
  get pending(): number[] {
    return [...this.#timers].map((t) => t.at - this.#now).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, firing due timers one at a time and letting each one's work run. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (;;) {
      const due = [...this.#timers].filter((t) => t.at <= target).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.#timers.delete(due);
      this.#now = Math.max(this.#now, due.at);
      due.callback();
      await settle();
    }
    this.#now = target;
    await settle();
  }
}

// ------------------------------------------------------------------------------------------------

export interface FakeBehaviour {
  /** SIGTERM does nothing (a VMM that ignores it). */
  ignoreSigterm?: boolean;
  /** Not even SIGKILL ends it (stuck in the kernel). */
  unkillable?: boolean;
}

let nextPid = 1000;

/** One fake VMM process: ends on SIGTERM/SIGKILL as a VMM does, or when the test calls end(). */
export class FakeProcess implements ProcessHandle {
  readonly identity: ProcessIdentity;
  readonly logOffset: number;
  readonly exited: Promise<ExitStatus | undefined>;
  readonly signals: Array<NodeJS.Signals | number> = [];
  behaviour: FakeBehaviour;
  #resolve!: (status: ExitStatus | undefined) => void;
  #ended = false;
  #dead = false;
  readonly #clock: Clock;

  constructor(clock: Clock, behaviour: FakeBehaviour = {}, identity?: ProcessIdentity, logOffset = 0) {
    const pid = nextPid++;
    this.identity = identity ?? { pid, startTime: BigInt(pid) * 100n, reaperPid: pid + 50_000, reaperStartTime: BigInt(pid) * 100n - 1n };
    this.logOffset = logOffset;
    this.behaviour = behaviour;
    this.#clock = clock;
    this.exited = new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** What networkInterfaces() reports: the interfaces of its network namespace. */
  interfaces = ['lo', 'tap0'];

  get alive(): boolean {
    return !this.#ended;
  }

  async networkInterfaces(): Promise<string[]> {
    return this.interfaces;
  }

  /** Ends the process: with an exit code, a signal, or (undefined) unobserved. */
  end(how: { code: number } | { signal: string } | undefined, logTail = ''): void {
    if (this.#ended) return;
    this.#ended = true;
    if (how === undefined) {
      this.#resolve(undefined);
      return;
    }
    const exitedAt = this.#clock.now();
    this.#resolve(
      'code' in how
        ? { pid: this.identity.pid, exitCode: how.code, coreDumped: false, exitedAt, logTail }
        : { pid: this.identity.pid, signal: how.signal, coreDumped: false, exitedAt, logTail },
    );
  }

  /** Dies without its exit being reported yet (the reaper has not read its status). */
  die(): void {
    this.#dead = true;
  }

  async signal(signal: NodeJS.Signals | number): Promise<'sent' | 'gone'> {
    if (this.#ended || this.#dead) return 'gone';
    if (signal === 0) return 'sent';
    this.signals.push(signal);
    const name = typeof signal === 'number' ? signalName(signal) : signal;
    if (name === 'SIGKILL' && !this.behaviour.unkillable) queueMicrotask(() => this.end({ signal: 'SIGKILL' }));
    if (name === 'SIGTERM' && !this.behaviour.ignoreSigterm && !this.behaviour.unkillable) queueMicrotask(() => this.end({ signal: 'SIGTERM' }));
    return 'sent';
  }
}

/** A launch the test has not let through yet (see FakeProcessHost.holdLaunches). */
interface HeldLaunch {
  readonly spec: StartSpec;
  readonly release: () => void;
  readonly fail: (error: unknown) => void;
}

export class FakeProcessHost implements ProcessHost {
  readonly #clock: Clock;
  /** Every process launched or adopted, in order. */
  readonly processes: FakeProcess[] = [];
  readonly launches: Array<{ spec: StartSpec; files: LaunchFiles }> = [];
  readonly held: HeldLaunch[] = [];
  /** What the next launches do. */
  behaviour: FakeBehaviour = {};
  /** Launches wait for release() instead of spawning at once. */
  holdLaunches = false;
  /** The next launch fails with this (nothing is spawned). */
  launchFailure: unknown;
  /** prepareLaunch fails with this. */
  notLaunchable: unknown;
  /** Processes a previous daemon left: alive on the host, adoptable by identity. */
  readonly survivors = new Map<number, { identity: ProcessIdentity; process?: FakeProcess; behaviour: FakeBehaviour }>();
  /** Reapers alive without their VMM (by pid). */
  readonly liveReapers = new Set<number>();
  /** Exit records the reapers left, by status path. */
  readonly recorded = new Map<string, ExitStatus>();
  /** Launches a previous daemon made without recording the PIDs, by status path. */
  readonly found = new Map<string, FoundLaunch>();
  boot = 'boot-1';
  closed = false;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  async prepareLaunch(spec: StartSpec): Promise<StartSpec> {
    if (this.notLaunchable) throw this.notLaunchable;
    return spec;
  }

  async launch(spec: StartSpec, files: LaunchFiles): Promise<ProcessHandle> {
    this.launches.push({ spec, files });
    if (this.launchFailure) {
      const failure = this.launchFailure;
      this.launchFailure = undefined;
      throw failure;
    }
    if (this.holdLaunches) {
      await new Promise<void>((release, fail) => this.held.push({ spec, release, fail }));
    }
    const process = new FakeProcess(this.#clock, { ...this.behaviour });
    this.processes.push(process);
    return process;
  }

  /** A VMM a previous daemon launched, still running. */
  survivor(behaviour: FakeBehaviour = {}): ProcessIdentity {
    const process = new FakeProcess(this.#clock, behaviour);
    this.survivors.set(process.identity.pid, { identity: process.identity, behaviour });
    return process.identity;
  }

  adopt(identity: ProcessIdentity, _files: LaunchFiles, logOffset: number): ProcessHandle {
    const survivor = this.survivors.get(identity.pid);
    const process = new FakeProcess(this.#clock, survivor?.behaviour ?? {}, identity, logOffset);
    if (survivor) survivor.process = process;
    this.processes.push(process);
    return process;
  }

  async findLaunch(files: LaunchFiles): Promise<FoundLaunch | undefined> {
    return this.found.get(files.statusPath);
  }

  async recordedExit(files: LaunchFiles): Promise<ExitStatus | undefined> {
    return this.recorded.get(files.statusPath);
  }

  async isAlive(pid: number, startTime: bigint): Promise<boolean> {
    const survivor = this.survivors.get(pid);
    if (survivor && survivor.identity.startTime === startTime) return survivor.process?.alive ?? true;
    if (this.liveReapers.has(pid)) return true;
    return this.processes.some((p) => p.identity.pid === pid && p.identity.startTime === startTime && p.alive);
  }

  async bootId(): Promise<string> {
    return this.boot;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

// ------------------------------------------------------------------------------------------------

export class FakeRunLayout implements RunLayout {
  readonly removedSockets: string[] = [];
  readonly releasedSocketFiles: SocketFiles[] = [];
  readonly removedLogs: string[] = [];
  readonly removedLaunchFiles: string[] = [];
  orphanSweeps: Array<readonly LaunchFiles[]> = [];
  logTail = '';
  #launch = 0;

  async prepare(): Promise<void> {}

  launchFiles(sandboxId: string): LaunchFiles {
    return { logPath: `/run/fake/logs/${sandboxId}.log`, statusPath: `/run/fake/exits/${sandboxId}.${++this.#launch}.status` };
  }

  async readLogTail(): Promise<string> {
    return this.logTail;
  }

  async removeLogs(logPath: string): Promise<void> {
    this.removedLogs.push(logPath);
  }

  async claimSocket(): Promise<SocketFiles> {
    return {};
  }

  async socketFiles(socketPath: string, claimed: SocketFiles): Promise<SocketFiles> {
    return { ...claimed, socket: `socket:${socketPath}` };
  }

  /** While set, releaseSocket removes the socket at once but returns only when this settles (a slow unlink of the lock file). */
  releaseGate: Promise<void> | undefined;

  async releaseSocket(socketPath: string, known: SocketFiles): Promise<void> {
    this.removedSockets.push(socketPath);
    this.releasedSocketFiles.push(known);
    await this.releaseGate;
  }

  async removeLaunchFiles(files: LaunchFiles): Promise<void> {
    this.removedLaunchFiles.push(files.statusPath);
  }

  /** Status paths still in the exits dir (orphanStatusPaths reports those not kept). */
  readonly statusFilesOnDisk = new Set<string>();

  async orphanStatusPaths(keep: readonly LaunchFiles[]): Promise<ReadonlySet<string>> {
    const kept = new Set(keep.map((files) => files.statusPath));
    return new Set([...this.statusFilesOnDisk].filter((path) => !kept.has(path)));
  }

  async removeOrphanLaunchFiles(live: readonly LaunchFiles[]): Promise<void> {
    this.orphanSweeps.push(live);
  }
}

// ------------------------------------------------------------------------------------------------

/** The VMM's API: ready at once unless told otherwise; a held call waits for the test or an abort. */
export class FakeVmmApi implements VmmApi {
  version = '53.0.0';
  /** waitReady waits until ready() is called (or the start is aborted). */
  holdReady = false;
  /** restore() fails with this. */
  restoreFailure: unknown;
  /** What vm.info says; undefined: no VM. */
  state: string | undefined;
  readonly restores: Array<{ socketPath: string; restore: RestoreSpec }> = [];
  readonly #waiting = new Set<() => void>();

  /** Lets every held waitReady answer. */
  ready(): void {
    for (const resolve of this.#waiting) resolve();
    this.#waiting.clear();
  }

  waitReady(_socketPath: string, signal: AbortSignal): Promise<{ version: string }> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (!this.holdReady) return Promise.resolve({ version: this.version });
    return new Promise((resolve, reject) => {
      const answer = () => {
        signal.removeEventListener('abort', onAbort);
        resolve({ version: this.version });
      };
      const onAbort = () => {
        this.#waiting.delete(answer);
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiting.add(answer);
    });
  }

  async restore(socketPath: string, restore: RestoreSpec, signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw signal.reason;
    this.restores.push({ socketPath, restore });
    if (this.restoreFailure) throw this.restoreFailure;
    this.state = restore.resume ? 'Running' : 'Paused';
  }

  async vmState(): Promise<string | undefined> {
    return this.state;
  }

  /** Every VM call, in order: `create`, `boot`, `pause`, `snapshot <url>`, ... */
  readonly calls: string[] = [];
  /** The next call of this name fails with the error (once). */
  readonly failures = new Map<string, unknown>();
  /** Calls of these names wait until release(name) (or forever). */
  readonly #held = new Map<string, Array<() => void>>();
  readonly holding = new Set<string>();
  counters: VmCounters = { rootfs: { read_bytes: 0n, write_bytes: 0n } };
  vcpus = 1;

  release(name: string): void {
    for (const resume of this.#held.get(name) ?? []) resume();
    this.#held.delete(name);
  }

  async #call(name: string, detail?: string): Promise<void> {
    this.calls.push(detail ? `${name} ${detail}` : name);
    if (this.holding.has(name)) await new Promise<void>((resume) => this.#held.set(name, [...(this.#held.get(name) ?? []), resume]));
    const failure = this.failures.get(name);
    if (failure !== undefined) {
      this.failures.delete(name);
      throw failure;
    }
  }

  async createVm(): Promise<void> {
    await this.#call('create');
    this.state = 'Created';
  }

  async bootVm(): Promise<void> {
    await this.#call('boot');
    this.state = 'Running';
  }

  async pauseVm(): Promise<void> {
    await this.#call('pause');
    if (this.state !== 'Running') throw new VmprocError('failed-precondition', `pausing the VM: the VMM refused: VM is ${this.state}`);
    this.state = 'Paused';
  }

  async resumeVm(): Promise<void> {
    await this.#call('resume');
    if (this.state !== 'Paused') throw new VmprocError('failed-precondition', 'resuming the VM: the VMM refused: Invalid transition');
    this.state = 'Running';
  }

  async snapshotVm(_socketPath: string, url: string): Promise<void> {
    await this.#call('snapshot', url);
    if (this.state !== 'Paused') throw new VmprocError('failed-precondition', 'snapshotting the VM: the VMM refused: Trying to snapshot while VM is running');
  }

  async vmInfo(): Promise<VmInfo> {
    await this.#call('info');
    const state = ({ Created: 'created', Running: 'running', Paused: 'paused' } as const)[this.state as 'Created'] ?? 'not-created';
    return { state, vcpus: this.vcpus, maxVcpus: 2, memoryBytes: 64 << 20, memoryActualBytes: 64 << 20, devices: [], rawJson: '{}' };
  }

  async vmCounters(): Promise<VmCounters> {
    await this.#call('counters');
    return this.counters;
  }

  async resizeVm(_socketPath: string, resize: VmResize): Promise<void> {
    await this.#call('resize', JSON.stringify(resize));
    if (resize.vcpus !== undefined) this.vcpus = resize.vcpus;
  }
}

/** Snapshot directories as names only: made, and removed on failure. */
export class FakeSnapshotDirs implements SnapshotDirs {
  readonly made: string[] = [];
  readonly removed: string[] = [];
  /** create() fails with this. */
  failure: unknown;

  async create(_field: string, url: string): Promise<{ url: string; path: string }> {
    if (this.failure) throw this.failure;
    const path = url.slice('file://'.length);
    this.made.push(path);
    return { url, path };
  }

  async remove(path: string): Promise<void> {
    this.removed.push(path);
  }
}

// ------------------------------------------------------------------------------------------------

/** A store that keeps what it is told, as a list of operations (and fails when told to). */
export class RecordingStore implements StateStore {
  readonly operations: Array<{ op: string; id?: string; detail?: unknown }> = [];
  /** Operations that reject, by name. */
  readonly failing = new Set<string>();
  /** What they reject with; by default an `internal` error naming the operation. */
  failure: ((op: string) => VmprocError) | undefined;

  #record(op: string, id?: string, detail?: unknown): Promise<void> {
    this.operations.push({ op, ...(id !== undefined ? { id } : {}), ...(detail !== undefined ? { detail } : {}) });
    if (!this.failing.has(op)) return Promise.resolve();
    return Promise.reject(this.failure?.(op) ?? new VmprocError('internal', `store: ${op} failed`));
  }

  /** The operations recorded for `id`, by name. */
  of(id: string): string[] {
    return this.operations.filter((o) => o.id === id).map((o) => o.op);
  }

  launching(sandboxId: string, launch: Pick<PersistedProcess, 'spec' | 'logPath' | 'statusPath' | 'startedAt' | 'bootId'>): Recorded {
    const written = this.#record('launching', sandboxId, launch);
    written.catch(() => undefined);
    return { written, durable: written };
  }

  spawned(sandboxId: string, identity: ProcessIdentity, logOffset: number): Promise<void> {
    return this.#record('spawned', sandboxId, { identity, logOffset });
  }

  ready(sandboxId: string, readyAt: Date, vmmVersion: string, socketFiles: SocketFiles): Promise<void> {
    return this.#record('ready', sandboxId, { readyAt, vmmVersion, socketFiles });
  }

  stopping(sandboxId: string, killAt: Date, snapshotUrl?: string): Promise<void> {
    return this.#record('stopping', sandboxId, { killAt, ...(snapshotUrl ? { snapshotUrl } : {}) });
  }

  vmState(sandboxId: string, state: VmState): Promise<void> {
    return this.#record('vmState', sandboxId, state);
  }

  signalled(sandboxId: string, signal: string): Promise<void> {
    return this.#record('signalled', sandboxId, { signal });
  }

  startFailed(sandboxId: string, failure: StartFailure): Promise<void> {
    return this.#record('startFailed', sandboxId, failure);
  }

  exited(event: ProcessExitEvent): Promise<void> {
    return this.#record('exited', event.sandboxId, event);
  }

  /** Events recorded, with the monitor offset each came with; apart from `operations`, which they would crowd. */
  readonly events: Array<{ event: ProcessEvent; monitorOffset?: number }> = [];

  event(event: ProcessEvent, monitorOffset?: number): Promise<void> {
    this.events.push({ event, ...(monitorOffset !== undefined ? { monitorOffset } : {}) });
    if (!this.failing.has('event')) return Promise.resolve();
    return Promise.reject(this.failure?.('event') ?? new VmprocError('internal', 'store: event failed'));
  }

  abandoned(sandboxId: string): Promise<void> {
    return this.#record('abandoned', sandboxId);
  }

  booted(bootId: string): Promise<void> {
    return this.#record('booted', undefined, bootId);
  }

  async close(): Promise<void> {}
}

// ------------------------------------------------------------------------------------------------

/** Event monitors the test writes to: emit() hands a sandbox's latest feed one batch, as the file reader would. */
export class FakeVmmEvents implements VmmEventSource {
  readonly follows: Array<{ files: LaunchFiles; fromOffset: number; closed: boolean; offset: number; onEvents: (events: readonly VmmEvent[]) => Promise<void>; pending: Promise<void> }> = [];

  follow(files: LaunchFiles, fromOffset: number, onEvents: (events: readonly VmmEvent[]) => Promise<void>): VmmEventFeed {
    const entry = { files, fromOffset, closed: false, offset: fromOffset, onEvents, pending: Promise.resolve() };
    this.follows.push(entry);
    return {
      monitored: false,
      drain: () => entry.pending,
      close: () => {
        entry.closed = true;
      },
    };
  }

  /** The VMM of `sandboxId` (its latest launch) reports `events` (`source/event`); resolves once they are handled. */
  emit(sandboxId: string, ...events: Array<string | { name: string; properties: Record<string, string> }>): Promise<void> {
    const entry = this.follows.findLast((f) => f.files.logPath.endsWith(`/${sandboxId}.log`));
    if (!entry || entry.closed) throw new Error(`no open event feed for ${sandboxId}`);
    const batch = events.map((e) => {
      const { name, properties } = typeof e === 'string' ? { name: e, properties: undefined } : e;
      const [source, event] = name.split('/') as [string, string];
      entry.offset += 100;
      return { source, event, ...(properties ? { properties } : {}), end: entry.offset };
    });
    entry.pending = entry.pending.then(() => entry.onEvents(batch));
    return entry.pending;
  }
}

// ------------------------------------------------------------------------------------------------

export interface CoreHarness {
  readonly supervisor: Supervisor;
  readonly clock: FakeClock;
  readonly host: FakeProcessHost;
  readonly layout: FakeRunLayout;
  readonly vmm: FakeVmmApi;
  readonly store: RecordingStore;
  readonly snapshotDirs: FakeSnapshotDirs;
  readonly exchange: ExitExchange;
  /** Every exit published, in order. */
  readonly exits: ProcessExitEvent[];
  readonly events: EventExchange;
  /** Every event published, in order. */
  readonly published: ProcessEvent[];
  readonly vmmEvents: FakeVmmEvents;
}

export const DEFAULTS = { runDir: '/run/fake', sandboxDir: '/run/fake/sandbox', vmmBin: '/usr/bin/cloud-hypervisor', netnsDir: '/var/run/netns' };

/** A supervisor over fakes, prepared; `exitedRecordLimit` bounds retention as --exit-history does. */
export async function coreHarness(options: { exitedRecordLimit?: number; initialSequence?: number } = {}): Promise<CoreHarness> {
  const clock = new FakeClock();
  const host = new FakeProcessHost(clock);
  const layout = new FakeRunLayout();
  const vmm = new FakeVmmApi();
  const store = new RecordingStore();
  const snapshotDirs = new FakeSnapshotDirs();
  const exchange = new ExitExchange({ historyLimit: 1000, subscriberBufferLimit: 1000, initialSequence: options.initialSequence ?? 0 });
  const exits: ProcessExitEvent[] = [];
  const subscription = exchange.subscribe();
  void (async () => {
    for await (const exit of subscription) exits.push(exit);
  })();
  const events = new EventExchange({ historyLimit: 1000, subscriberBufferLimit: 1000 });
  const published: ProcessEvent[] = [];
  const eventSubscription = events.subscribe();
  void (async () => {
    for await (const item of eventSubscription) if (item.kind !== 'progress') published.push(item);
  })();
  const vmmEvents = new FakeVmmEvents();
  const supervisor = new Supervisor({
    host,
    layout,
    store,
    vmm,
    clock,
    snapshotDirs,
    vmmEvents,
    defaults: DEFAULTS,
    exchange,
    events,
    exitedRecordLimit: options.exitedRecordLimit ?? 100,
  });
  await supervisor.prepare();
  return { supervisor, clock, host, layout, vmm, store, snapshotDirs, exchange, exits, events, published, vmmEvents };
}

/** A boot-mode start request for `sandboxId`. */
export function bootRequest(sandboxId: string, extra: Record<string, unknown> = {}) {
  return {
    sandboxId,
    mode: 'boot' as const,
    kernelPath: '/images/vmlinux',
    rootfsPath: '/images/rootfs.ext4',
    networkNamespace: 'ns-1',
    labels: { team: 'a' },
    ...extra,
  };
}

/** A live view of how a promise settles: read it after settle() or clock.advance(). */
export interface Tracked<T> {
  settled: boolean;
  value?: T;
  error?: unknown;
}

export function track<T>(promise: Promise<T>): Tracked<T> {
  const state: Tracked<T> = { settled: false };
  promise.then(
    (value) => {
      state.settled = true;
      state.value = value;
    },
    (error: unknown) => {
      state.settled = true;
      state.error = error;
    },
  );
  return state;
}
