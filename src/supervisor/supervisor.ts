import { mkdir, readdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import { VmprocError, asVmprocError } from '../errors.js';
import { describeExitStatus, type ExitStatus } from '../launch/exit-status.js';
import { findLaunchByStatusPath } from '../launch/find-reaper.js';
import { buildLaunchEnvironment, type LaunchStrategy, planLaunch } from '../launch/launch-command.js';
import { removeLogFiles } from '../launch/log-files.js';
import { readLogTail } from '../launch/log-tail.js';
import { signalProcessGroup } from '../launch/process-group.js';
import { isSameLiveProcess, readBootId } from '../launch/proc-stat.js';
import { parseSignalName } from '../launch/signals.js';
import { removeFile, removeSocketFiles, removeStaleSocket } from '../launch/socket-files.js';
import type { VmmLauncher } from '../launch/vmm-launcher.js';
import { readExitStatus, UNKNOWN_START_TIME, type VmmProcess } from '../launch/vmm-process.js';
import { type Logger, silentLogger } from '../logger.js';
import type { Appended } from '../store/journal.js';
import { ephemeralStore, type PersistedProcess, type PersistedState, type StateStore } from '../store/state-store.js';
import { type StartDefaults, checkStartPreconditions, validateStartRequest } from '../validation/start-request.js';
import { classifyExit, describeStartFailure, type StartAbortReason } from './exit-classification.js';
import type { ExitExchange, ExitSubscription, SubscribeOptions, UnsequencedExit } from './exit-exchange.js';
import { ManagedProcess } from './managed-process.js';
import { isLive } from './process-state.js';
import type { ProcessSnapshot, ProcessState, StartRequest, StartSpec } from './process-types.js';
import { observeStart, type SupervisorObserver } from './supervisor-observer.js';
import { TIMED_OUT, untilAborted, withinTimeout } from './timing.js';
import type { VmmApi } from './vmm-api.js';

export const DEFAULT_STOP_GRACE_MS = 10_000;
/** How long a process may survive SIGKILL before a stop reports it as stuck. */
export const KILL_BACKSTOP_MS = 5_000;

export interface SupervisorOptions {
  readonly defaults: StartDefaults;
  /** Starts VMMs under reapers and reports their ends (src/launch/vmm-launcher.ts). */
  readonly launcher: VmmLauncher;
  /** How a VMM gets into its sandbox (see LaunchStrategy); default `native`. */
  readonly launchStrategy?: LaunchStrategy;
  readonly exchange: ExitExchange;
  readonly vmmApi: VmmApi;
  /** How many exited processes stay visible to Get/List/Wait before the oldest are forgotten. */
  readonly exitedRecordLimit: number;
  /** Durable memory; the default remembers nothing across restarts. */
  readonly store?: StateStore;
  readonly logger?: Logger;
  readonly now?: () => Date;
  /** This host boot, if the caller has read it already; prepare() reads it otherwise. */
  readonly bootId?: string;
  /** Told of spawns and start outcomes (metrics, log rotation); nothing by default. */
  readonly observer?: SupervisorObserver;
}

export interface ListFilter {
  readonly states?: readonly ProcessState[];
  readonly labels?: Readonly<Record<string, string>>;
}

/**
 * Launches, watches and stops VMM processes. It knows nothing of gRPC: requests come in as
 * plain values, failures leave as VmprocError, exits go out through the ExitExchange.
 *
 * Invariants: at most one live process per sandbox ID and per socket path; every spawned
 * process gets exactly one exit event, whatever path ends it, recorded in the store before it is
 * published; a failed start leaves no process and no socket behind.
 */
export class Supervisor {
  readonly #options: SupervisorOptions;
  readonly #logger: Logger;
  readonly #store: StateStore;
  readonly #launcher: VmmLauncher;
  readonly #now: () => Date;
  readonly #records = new Map<string, ManagedProcess>();
  /** Live processes by socket path: a socket belongs to one live process at a time. */
  readonly #socketOwners = new Map<string, ManagedProcess>();
  /** Exited sandbox IDs, oldest first, for bounded retention. */
  readonly #exitedOrder = new Set<string>();
  /** Log removals of forgotten sandboxes still in progress, by sandbox ID. */
  readonly #logRemovals = new Map<string, Promise<void>>();
  #bootId = '';
  #closed = false;
  /** Set once shut down: ends seen from then on are left for the next daemon to record. */
  #detached = false;

  constructor(options: SupervisorOptions) {
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.#store = options.store ?? ephemeralStore;
    this.#launcher = options.launcher;
    this.#now = options.now ?? (() => new Date());
  }

  /** Creates the run directory layout the launches write to. */
  async prepare(): Promise<void> {
    const { runDir } = this.#options.defaults;
    await mkdir(posix.join(runDir, 'logs'), { recursive: true, mode: 0o750 });
    await mkdir(posix.join(runDir, 'exits'), { recursive: true, mode: 0o750 });
    this.#bootId = this.#options.bootId ?? (await readBootId());
  }

  get exchange(): ExitExchange {
    return this.#options.exchange;
  }

  /** The directory where reapers record exit statuses. */
  get exitsDir(): string {
    return posix.join(this.#options.defaults.runDir, 'exits');
  }

  /**
   * Launches a VMM and resolves once it is ready (ping answered, restore done). `signal` is the
   * caller's interest: aborting it before ready abandons the start; after ready it has no effect.
   */
  start(request: StartRequest, signal?: AbortSignal): Promise<ProcessSnapshot> {
    return observeStart(this.#options.observer, this.#start(request, signal));
  }

  async #start(request: StartRequest, signal?: AbortSignal): Promise<ProcessSnapshot> {
    this.#assertOpen();
    const { defaults } = this.#options;
    const spec = validateStartRequest(request, defaults);
    await checkStartPreconditions(spec, defaults);
    if (signal?.aborted) throw new VmprocError('cancelled', `start of sandbox ${spec.sandboxId} was cancelled by the client`);
    this.#assertOpen();

    // Reserve the ID and socket synchronously, after the last await of validation: two
    // concurrent starts of one ID cannot both get here.
    const previous = this.#records.get(spec.sandboxId);
    if (previous && isLive(previous.state)) {
      throw new VmprocError(
        'already-exists',
        `sandbox ${spec.sandboxId} is already ${previous.state} (pid ${previous.vmm?.pid ?? 'not yet known'}); stop it first`,
      );
    }
    const socketOwner = this.#socketOwners.get(spec.socketPath);
    if (socketOwner) {
      throw new VmprocError(
        'failed-precondition',
        `socket_path ${spec.socketPath} belongs to sandbox ${socketOwner.sandboxId}, which is ${socketOwner.state}`,
      );
    }
    const record = this.#newRecord(spec, this.#now());
    this.#records.set(spec.sandboxId, record);
    this.#exitedOrder.delete(spec.sandboxId);
    this.#socketOwners.set(spec.socketPath, record);
    // From here on a cancel must reach the start, whichever step it is at (a listener added later
    // would never hear an abort that already happened).
    const onCallerAbort = () => record.startAbort.abort({ kind: 'cancelled' } satisfies StartAbortReason);
    signal?.addEventListener('abort', onCallerAbort, { once: true });
    try {
      return await this.#launch(record, previous);
    } finally {
      signal?.removeEventListener('abort', onCallerAbort);
    }
  }

  /** Spawns the reserved record's VMM and waits until it is ready. */
  async #launch(record: ManagedProcess, previous: ManagedProcess | undefined): Promise<ProcessSnapshot> {
    const { spec } = record;
    const { defaults } = this.#options;
    await this.#logRemovals.get(spec.sandboxId);

    let vmm: VmmProcess;
    let launchRecord: Appended;
    try {
      // Recorded before the spawn, so a daemon that dies right after it can still find the reaper.
      // Written is enough for that; the disk sync (against a host crash) overlaps the launch.
      launchRecord = this.#store.launching(spec.sandboxId, { spec, logPath: record.logPath, statusPath: record.statusPath, startedAt: record.startedAt, bootId: this.#bootId });
      await Promise.all([launchRecord.written, removeStaleSocket(spec.socketPath)]);
      vmm = await this.#launcher.launch({
        sandboxId: spec.sandboxId,
        program: planLaunch({ ...spec, vmmBin: defaults.vmmBin }, this.#options.launchStrategy ?? 'native', defaults.netnsDir),
        env: buildLaunchEnvironment(spec.sandboxId, spec.sandboxDir),
        logPath: record.logPath,
        statusPath: record.statusPath,
      });
    } catch (error) {
      // Nothing was spawned: release the reservation and bring back the previous record.
      record.spawnFailed();
      this.#socketOwners.delete(spec.socketPath);
      if (previous) {
        this.#records.set(spec.sandboxId, previous);
        this.#exitedOrder.add(spec.sandboxId);
      } else {
        this.#records.delete(spec.sandboxId);
      }
      await this.#store.abandoned(spec.sandboxId).catch(() => undefined);
      throw asVmprocError(error, `cannot launch sandbox ${spec.sandboxId}`);
    }
    this.#watch(record, vmm, vmm.exited);
    this.#options.observer?.spawned?.(spec.sandboxId, record.logPath);
    this.#logger.info({ sandboxId: spec.sandboxId, pid: vmm.pid, mode: spec.mode }, 'vmm spawned');
    // The PID is journalled while the VMM comes up; both records are on file before ready.
    const recorded = Promise.all([launchRecord.durable, this.#recordSpawn(record, vmm)]).then(() => undefined);
    recorded.catch(() => undefined); // awaited before ready; a failure then abandons the start
    return this.#awaitReady(record, spec.readyTimeoutMs, recorded);
  }

  /** A record for a new launch, or (with `paths`) for one a previous daemon made. */
  #newRecord(spec: StartSpec, startedAt: Date, paths?: { logPath: string; statusPath: string }): ManagedProcess {
    const { runDir } = this.#options.defaults;
    return new ManagedProcess(
      spec,
      paths ?? {
        logPath: posix.join(runDir, 'logs', `${spec.sandboxId}.log`),
        // One name per launch: a relaunch of the same ID must never meet the last run's files.
        statusPath: posix.join(runDir, 'exits', `${spec.sandboxId}.${randomBytes(4).toString('hex')}.status`),
      },
      startedAt,
    );
  }

  /** Attaches the process and routes its one end to #onEnded. */
  #watch(record: ManagedProcess, vmm: VmmProcess, ended: Promise<ExitStatus | undefined>, lostBecause?: string): void {
    record.attach(vmm);
    ended.then(
      (status) => this.#onEnded(record, status, status ? undefined : lostBecause),
      (error) => this.#onEnded(record, undefined, `the exit status could not be read: ${asVmprocError(error, 'reading the exit status').message}`),
    );
  }

  async #recordSpawn(record: ManagedProcess, vmm: VmmProcess): Promise<void> {
    const { pid, startTime, reaperPid, reaperStartTime, logOffset } = vmm;
    await this.#store.spawned(record.sandboxId, { pid, startTime, reaperPid, reaperStartTime, logOffset }).catch((error: unknown) =>
      this.#logger.error({ sandboxId: record.sandboxId, err: error }, 'cannot record the spawned process'));
  }

  /**
   * Waits for readiness until the first of: ready, exit, timeout, stop, cancel (all of which abort
   * `record.startAbort` with their reason).
   */
  async #awaitReady(record: ManagedProcess, timeoutMs: number, recorded: Promise<void> = Promise.resolve()): Promise<ProcessSnapshot> {
    const { spec, startAbort } = record;
    const abort = (reason: StartAbortReason) => startAbort.abort(reason);
    const timer = setTimeout(() => abort({ kind: 'timeout' }), timeoutMs);
    record.exited.then(() => abort({ kind: 'exited' }));
    try {
      const api = this.#options.vmmApi;
      const ready = await api.waitReady(spec.socketPath, startAbort.signal);
      // A restarted daemon may find the restore already done (or under way: the ping waited for it).
      if (spec.restore && (await api.vmState(spec.socketPath, startAbort.signal)) === undefined) {
        await api.restore(spec.socketPath, spec.restore, startAbort.signal);
      }
      if (startAbort.signal.aborted) throw startAbort.signal.reason;
      await recorded;
      const readyAt = this.#now();
      await this.#store.ready(spec.sandboxId, readyAt, ready.version);
      if (startAbort.signal.aborted) throw startAbort.signal.reason;
      record.markReady(readyAt, ready.version);
      this.#logger.info({ sandboxId: spec.sandboxId, pid: record.vmm!.pid, vmmVersion: ready.version }, 'vmm ready');
      return record.snapshot();
    } catch (error) {
      throw await this.#abandonStart(record, error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills what a failed start left, waits for its exit event, and returns the caller's error. */
  async #abandonStart(record: ManagedProcess, error: unknown): Promise<VmprocError> {
    const { spec } = record;
    const vmm = record.vmm!;
    const signal = record.startAbort.signal;
    const aborted = signal.aborted ? (signal.reason as StartAbortReason) : undefined;
    const failure = describeStartFailure(spec.readyTimeoutMs, aborted, error);
    if (failure.exit && !record.startFailure) {
      // Nobody else is ending this process: it is ours to kill, and its exit carries our reason.
      record.startFailure = failure.exit;
      await this.#store.startFailed(spec.sandboxId, failure.exit).catch(() => undefined);
      await signalProcessGroup(vmm.pid, vmm.startTime, 'SIGKILL');
    }
    if (aborted?.kind === 'stopped') {
      // The stop owns the process now, with its own grace period and SIGKILL backstop.
      const stopped = await (record.stopping ?? record.exited).then(() => undefined, (stopError: unknown) => stopError);
      return stopped ? asVmprocError(stopped, `stopping sandbox ${spec.sandboxId}`) : new VmprocError(failure.code, `sandbox ${spec.sandboxId}: ${failure.callerMessage}`, { cause: error });
    }
    const ended = await withinTimeout(record.exited, KILL_BACKSTOP_MS);
    if (ended === TIMED_OUT) {
      return new VmprocError(
        'internal',
        `sandbox ${spec.sandboxId} (pid ${vmm.pid}) failed to start and survived SIGKILL for ${KILL_BACKSTOP_MS / 1000}s`,
        { cause: error },
      );
    }
    if (aborted?.kind === 'exited') {
      const exit = ended.exit!;
      const how = describeExitStatus({ exitCode: exit.exitCode, signal: exit.signal, coreDumped: false });
      const tail = exit.stderrTail ? `; its stderr ends with:\n${exit.stderrTail}` : '; it wrote nothing to stderr';
      return new VmprocError('failed-precondition', `VMM of sandbox ${spec.sandboxId} exited before it was ready (${how})${tail}`);
    }
    return new VmprocError(failure.code, `sandbox ${spec.sandboxId}: ${failure.callerMessage}`, { cause: error });
  }

  /**
   * Sends SIGTERM to the process group, SIGKILL after `graceMs`, and resolves once the exit is
   * observed. Concurrent stops share one; stopping an exited process returns its record.
   */
  stop(sandboxId: string, graceMs: number = DEFAULT_STOP_GRACE_MS): Promise<ProcessSnapshot> {
    const record = this.#find(sandboxId);
    if (record.state === 'exited') return Promise.resolve(record.snapshot());
    if (record.stopping) return record.stopping;
    if (!(graceMs >= 0)) throw new VmprocError('invalid-argument', 'grace_period must not be negative');
    if (record.state !== 'stopping') {
      record.stopRequested = true;
      if (record.state === 'starting') record.startAbort.abort({ kind: 'stopped' } satisfies StartAbortReason);
      record.moveTo('stopping');
    }
    this.#logger.info({ sandboxId, pid: record.vmm?.pid, graceMs }, 'stopping vmm');
    const stopping = this.#terminate(record, new Date(this.#now().getTime() + graceMs));
    record.stopping = stopping;
    // A failed stop (process stuck after SIGKILL) may be retried by a later StopProcess.
    stopping.catch(() => {
      if (record.stopping === stopping) record.stopping = undefined;
    });
    return stopping;
  }

  /** SIGTERM now, SIGKILL at `killAt` (at once if that has passed), then wait for the exit. */
  async #terminate(record: ManagedProcess, killAt: Date): Promise<ProcessSnapshot> {
    const vmm = await record.spawned;
    if (!vmm) throw new VmprocError('not-found', `sandbox ${record.sandboxId} never got a process: its launch failed`);
    const { pid, startTime } = vmm;
    await this.#store.stopping(record.sandboxId, killAt);
    const graceMs = killAt.getTime() - this.#now().getTime();
    if (graceMs > 0) {
      await signalProcessGroup(pid, startTime, 'SIGTERM');
      const ended = await withinTimeout(record.exited, graceMs);
      if (ended !== TIMED_OUT) return ended;
      this.#logger.warn({ sandboxId: record.sandboxId, pid, graceMs }, 'vmm ignored SIGTERM; sending SIGKILL');
    }
    await signalProcessGroup(pid, startTime, 'SIGKILL');
    const ended = await withinTimeout(record.exited, KILL_BACKSTOP_MS);
    if (ended !== TIMED_OUT) return ended;
    throw new VmprocError(
      'internal',
      `sandbox ${record.sandboxId} (pid ${pid}) survived SIGKILL for ${KILL_BACKSTOP_MS / 1000}s; it may be stuck in the kernel (state D)`,
    );
  }

  /** Signals the process group by name (`SIGUSR1` or `USR1`). */
  async signal(sandboxId: string, signalName: string): Promise<ProcessSnapshot> {
    const signal = parseSignalName(signalName);
    if (!signal) {
      throw new VmprocError('invalid-argument', `unknown signal ${JSON.stringify(signalName)}; use a name such as SIGTERM, SIGUSR1 or USR1`);
    }
    const record = this.#find(sandboxId);
    const vmm = record.vmm;
    if (!vmm && record.state === 'starting') {
      throw new VmprocError('failed-precondition', `sandbox ${sandboxId} is being launched and has no process yet; retry shortly`);
    }
    if (record.state === 'exited' || !vmm) throw this.#notRunning(record);
    record.signalsSent.add(signal.name);
    await this.#store.signalled(sandboxId, signal.name);
    if ((await signalProcessGroup(vmm.pid, vmm.startTime, signal.number)) === 'gone') throw this.#notRunning(record);
    this.#logger.info({ sandboxId, pid: vmm.pid, signal: signal.name }, 'signalled vmm');
    return record.snapshot();
  }

  get(sandboxId: string): ProcessSnapshot {
    return this.#find(sandboxId).snapshot();
  }

  /** The matching processes and the latest exit sequence, taken at one instant. */
  list(filter: ListFilter = {}): { processes: ProcessSnapshot[]; exitSequence: number } {
    const states = filter.states && filter.states.length > 0 ? new Set(filter.states) : undefined;
    const labels = Object.entries(filter.labels ?? {});
    const processes: ProcessSnapshot[] = [];
    for (const record of this.#records.values()) {
      if (states && !states.has(record.state)) continue;
      if (labels.some(([key, value]) => record.spec.labels[key] !== value)) continue;
      processes.push(record.snapshot());
    }
    return { processes, exitSequence: this.#options.exchange.latestSequence };
  }

  /** Resolves once the process has exited (at once if it has). */
  async wait(sandboxId: string, signal?: AbortSignal): Promise<ProcessSnapshot> {
    return untilAborted(this.#find(sandboxId).exited, signal);
  }

  watchExits(options: SubscribeOptions): ExitSubscription {
    return this.#options.exchange.subscribe(options);
  }

  /**
   * Stops taking starts and abandons those not yet ready (their VMMs are killed and their exits
   * published). Running VMMs are left alone: they outlive the daemon.
   */
  async shutdown(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const starting = [...this.#records.values()].filter((r) => r.state === 'starting');
    for (const record of starting) record.startAbort.abort({ kind: 'shutdown' } satisfies StartAbortReason);
    await Promise.allSettled(starting.map((r) => withinTimeout(r.exited, KILL_BACKSTOP_MS)));
    this.#detached = true;
    await this.#launcher.close();
  }

  /**
   * Takes over what a previous daemon left (see src/store): exited records come back for Get and
   * Wait; live ones are re-adopted if their VMM still runs (same PID and start time), or get the
   * exit their reaper recorded, or a `lost` exit when nothing was recorded. A start the previous
   * daemon did not finish is finished now, within its original ready timeout, or killed.
   * Call before serving; resolves once every record is settled or supervised again.
   */
  async recover(state: PersistedState): Promise<void> {
    const exited: ManagedProcess[] = [];
    const resumed: Array<Promise<void>> = [];
    for (const persisted of state.processes.values()) {
      const record = this.#newRecord(persisted.spec, persisted.startedAt, persisted);
      this.#records.set(record.sandboxId, record);
      if (persisted.exit) {
        record.restoreExited(persisted.exit);
        exited.push(record);
        continue;
      }
      this.#socketOwners.set(persisted.spec.socketPath, record);
      for (const signal of persisted.signalsSent) record.signalsSent.add(signal);
      if (persisted.startFailure) record.startFailure = persisted.startFailure;
      resumed.push(
        this.#readopt(record, persisted).catch((error: unknown) =>
          this.#logger.error({ sandboxId: record.sandboxId, err: error }, 'cannot re-adopt vmm')),
      );
    }
    // Retention forgets the oldest exits first, so they go in in the order they exited.
    exited.sort((a, b) => a.exit!.sequence - b.exit!.sequence);
    for (const record of exited) this.#retainExited(record.sandboxId);
    await Promise.all(resumed);
    await this.#removeOrphanStatusFiles();
  }

  /**
   * Picks one live record up again. Resolves once it is either supervised again or, when it ended
   * while nobody watched, once its exit is published: nothing is served before that.
   */
  async #readopt(record: ManagedProcess, persisted: PersistedProcess): Promise<void> {
    const { sandboxId } = record;
    // Where it was in its lifecycle first: an exit found now is classified by it.
    record.resume({ ...(persisted.readyAt ? { readyAt: persisted.readyAt, vmmVersion: persisted.vmmVersion } : {}), stopping: persisted.stopKillAt !== undefined });
    const settle = async (pid: number, status: ExitStatus | undefined, lostBecause?: string) => {
      this.#watch(record, pseudoProcess(pid, persisted.logOffset), Promise.resolve(status), lostBecause);
      await record.exited;
    };
    let identity = persisted.pid !== undefined
      ? { pid: persisted.pid, startTime: persisted.startTime!, reaperPid: persisted.reaperPid!, reaperStartTime: persisted.reaperStartTime! }
      : undefined;
    if (persisted.bootId !== this.#bootId) {
      // The host rebooted: whatever the PID names now is not ours.
      return settle(identity?.pid ?? 0, undefined, 'the host rebooted while vmprocd was down; the VMM ended with it');
    }
    if (!identity) {
      // The previous daemon died between spawning and recording the PID: find the reaper.
      const found = await findLaunchByStatusPath(record.statusPath);
      if (found?.vmm) {
        identity = { pid: found.vmm.pid, startTime: found.vmm.startTime, reaperPid: found.reaperPid, reaperStartTime: found.reaperStartTime };
        const { pid, startTime, reaperPid, reaperStartTime } = identity;
        await this.#store.spawned(sandboxId, { pid, startTime, reaperPid, reaperStartTime, logOffset: 0 });
      } else {
        const status = await readExitStatus(record.statusPath);
        if (status) return settle(status.pid, status);
        // It never got as far as a process: nothing ran, so there is no exit to publish.
        this.#records.delete(sandboxId);
        this.#socketOwners.delete(record.spec.socketPath);
        await this.#store.abandoned(sandboxId);
        this.#logger.warn({ sandboxId }, 'dropped a launch that never produced a process');
        return;
      }
    }
    // Ended while nobody watched: its reaper recorded how, or (reaper gone too) nobody knows.
    const status = await readExitStatus(record.statusPath);
    if (status) return settle(identity.pid, status);
    if (!(await isSameLiveProcess(identity.pid, identity.startTime)) && !(await isSameLiveProcess(identity.reaperPid, identity.reaperStartTime))) {
      return settle(identity.pid, undefined, 'it ended while vmprocd was down, and its reaper left no status');
    }

    const vmm: VmmProcess = {
      ...identity,
      logOffset: persisted.logOffset ?? 0,
      exited: this.#launcher.adopt({ ...identity, statusPath: record.statusPath }),
    };
    this.#watch(record, vmm, vmm.exited, 'its reaper ended without recording the exit status');
    this.#logger.info({ sandboxId, pid: vmm.pid, state: record.state }, 're-adopted vmm');

    if (record.state === 'stopping') {
      const stopping = this.#terminate(record, persisted.stopKillAt!);
      record.stopping = stopping;
      stopping.catch((error: unknown) => this.#logger.error({ sandboxId, err: error }, 'resumed stop failed'));
    } else if (record.state === 'starting' && record.startFailure) {
      // The previous daemon was already abandoning this start: finish killing it.
      await signalProcessGroup(vmm.pid, vmm.startTime, 'SIGKILL');
    } else if (record.state === 'starting') {
      // Finish the start the previous daemon began, within what is left of its ready timeout.
      const remainingMs = record.startedAt.getTime() + record.spec.readyTimeoutMs - this.#now().getTime();
      if (remainingMs <= 0) record.startAbort.abort({ kind: 'timeout' } satisfies StartAbortReason);
      this.#awaitReady(record, Math.max(remainingMs, 1)).catch((error: unknown) =>
        this.#logger.warn({ sandboxId, err: error }, 'interrupted start did not complete'));
    }
  }

  /** Reaper files with no live record: left by a previous daemon after it recorded the exit. */
  async #removeOrphanStatusFiles(): Promise<void> {
    const live = new Set([...this.#records.values()].filter((r) => isLive(r.state)).map((r) => posix.basename(r.statusPath)));
    for (const name of await readdir(this.exitsDir).catch(() => [] as string[])) {
      // <id>.status, <id>.status.pids, <id>.status.tmp all belong to <id>.status.
      if (!live.has(name.replace(/\.status(\..*)?$/, '.status'))) await removeFile(posix.join(this.exitsDir, name));
    }
  }

  /** The single place a process's end becomes an exit event. */
  async #onEnded(record: ManagedProcess, status: ExitStatus | undefined, lostBecause?: string): Promise<void> {
    // After shutdown the journal is closed: leave the reaper's record for the next daemon.
    if (this.#detached) return;
    const { spec } = record;
    const vmm = record.vmm!;
    const { reason, message } = classifyExit(record, status, lostBecause);
    // The reaper read the log's tail at the exit; only an exit nobody recorded needs the log here.
    let stderrTail = status?.logTail;
    if (stderrTail === undefined) {
      stderrTail = await readLogTail(record.logPath, vmm.logOffset).catch((error: unknown) => {
        this.#logger.warn({ sandboxId: spec.sandboxId, err: error }, 'cannot read the vmm log tail');
        return '';
      });
    }

    const exit: UnsequencedExit = {
      sandboxId: spec.sandboxId,
      pid: vmm.pid,
      ...(status?.exitCode !== undefined ? { exitCode: status.exitCode } : {}),
      ...(status?.signal !== undefined ? { signal: status.signal } : {}),
      reason,
      exitedAt: status?.exitedAt ?? this.#now(),
      startedAt: record.startedAt,
      labels: spec.labels,
      stderrTail,
      message,
      signalSentByDaemon:
        status?.signal !== undefined &&
        ((record.stopRequested && (status.signal === 'SIGTERM' || status.signal === 'SIGKILL')) ||
          record.signalsSent.has(status.signal) ||
          record.startFailure !== undefined),
    };
    const { exchange } = this.#options;
    const event = exchange.assign(exit);
    // The socket goes while the exit is recorded: once the exit is published, the sandbox ID and
    // its socket path may be taken again at once.
    const [written] = await Promise.allSettled([this.#store.exited(event), removeSocketFiles(spec.socketPath)]);
    if (written.status === 'rejected') {
      // Publishing matters more than the record: a watcher must not miss this exit. The reaper's
      // status stays, so a restarted daemon still knows how the VMM ended.
      this.#logger.error({ sandboxId: spec.sandboxId, sequence: event.sequence, err: written.reason }, 'cannot record the exit; publishing it anyway');
    }
    // Publishing and the state change happen in one synchronous step, so a List taken at any
    // moment agrees with the exit sequence it reports.
    exchange.deliver(event);
    record.markExited(event);
    this.#socketOwners.delete(spec.socketPath);
    this.#retainExited(spec.sandboxId);
    if (written.status === 'fulfilled') {
      // The exit is recorded, so the reaper's files may go; off the way to the watchers. (A restart
      // before they are gone removes them as orphans: the journal has the exit.)
      Promise.all([removeFile(record.statusPath), removeFile(`${record.statusPath}.pids`)]).catch((error: unknown) =>
        this.#logger.warn({ sandboxId: spec.sandboxId, err: error }, 'cannot remove the reaper status files'));
    }
    this.#logger.info(
      { sandboxId: spec.sandboxId, pid: vmm.pid, sequence: event.sequence, reason, exitCode: event.exitCode, signal: event.signal },
      'vmm exited',
    );
  }

  #retainExited(sandboxId: string): void {
    this.#exitedOrder.add(sandboxId);
    while (this.#exitedOrder.size > this.#options.exitedRecordLimit) {
      const oldest = this.#exitedOrder.values().next().value!;
      this.#exitedOrder.delete(oldest);
      const record = this.#records.get(oldest);
      if (record?.state !== 'exited') continue;
      this.#records.delete(oldest);
      // Its logs go with it. A start of the same ID waits for that (see #start), so it never
      // writes into a file about to be removed.
      const removal = removeLogFiles(record.logPath)
        .catch((error: unknown) => this.#logger.warn({ sandboxId: oldest, err: error }, 'cannot remove the logs of a forgotten sandbox'))
        .finally(() => {
          if (this.#logRemovals.get(oldest) === removal) this.#logRemovals.delete(oldest);
        });
      this.#logRemovals.set(oldest, removal);
    }
  }

  #find(sandboxId: string): ManagedProcess {
    const record = this.#records.get(sandboxId);
    if (!record) throw new VmprocError('not-found', `no process for sandbox ${JSON.stringify(sandboxId)}`);
    return record;
  }

  #notRunning(record: ManagedProcess): VmprocError {
    const exit = record.exit;
    const how = exit ? ` (${exit.reason}${exit.exitCode !== undefined ? `, exit code ${exit.exitCode}` : ''}${exit.signal ? `, ${exit.signal}` : ''})` : '';
    return new VmprocError('failed-precondition', `sandbox ${record.sandboxId} has exited${how}; nothing to signal`);
  }

  #assertOpen(): void {
    if (this.#closed) throw new VmprocError('unavailable', 'the daemon is shutting down; retry against the next instance');
  }
}

/** A process known only by PID (it has already ended): never signalled, its end already known. */
function pseudoProcess(pid: number, logOffset: number | undefined): VmmProcess {
  return { pid, startTime: UNKNOWN_START_TIME, reaperPid: 0, reaperStartTime: UNKNOWN_START_TIME, logOffset: logOffset ?? 0, exited: new Promise(() => {}) };
}
