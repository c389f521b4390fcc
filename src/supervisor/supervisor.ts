import { lstat, mkdir, rm } from 'node:fs/promises';
import { posix } from 'node:path';
import { VmprocError, asVmprocError } from '../errors.js';
import { describeExitStatus, type ExitStatus } from '../launch/exit-status.js';
import { buildLaunchCommand, buildLaunchEnvironment } from '../launch/launch-command.js';
import { readLogTail } from '../launch/log-tail.js';
import { signalProcessGroup } from '../launch/process-group.js';
import { parseSignalName } from '../launch/signals.js';
import { spawnVmm, type SpawnVmmOptions, type VmmProcess } from '../launch/vmm-process.js';
import { type Logger, silentLogger } from '../logger.js';
import { type StartDefaults, checkStartPreconditions, validateStartRequest } from '../validation/start-request.js';
import type { ExitExchange, ExitSubscription, SubscribeOptions, UnsequencedExit } from './exit-exchange.js';
import { ManagedProcess, type StartFailure } from './managed-process.js';
import { isLive } from './process-state.js';
import type { ExitReason, ProcessSnapshot, ProcessState, StartRequest } from './process-types.js';
import { TIMED_OUT, untilAborted, withinTimeout } from './timing.js';
import type { VmmApi } from './vmm-api.js';

export const DEFAULT_STOP_GRACE_MS = 10_000;
/** How long a process may survive SIGKILL before a stop reports it as stuck. */
export const KILL_BACKSTOP_MS = 5_000;

export interface SupervisorOptions {
  readonly defaults: StartDefaults;
  readonly reaperBin: string;
  readonly exchange: ExitExchange;
  readonly vmmApi: VmmApi;
  /** How many exited processes stay visible to Get/List/Wait before the oldest are forgotten. */
  readonly exitedRecordLimit: number;
  readonly logger?: Logger;
  readonly spawn?: (options: SpawnVmmOptions) => Promise<VmmProcess>;
  readonly now?: () => Date;
}

export interface ListFilter {
  readonly states?: readonly ProcessState[];
  readonly labels?: Readonly<Record<string, string>>;
}

/** Why a start's readiness wait was cut short (the AbortSignal reason). */
type StartAbortReason =
  | { readonly kind: 'timeout' }
  | { readonly kind: 'exited' }
  | { readonly kind: 'stopped' }
  | { readonly kind: 'cancelled' }
  | { readonly kind: 'shutdown' };

/**
 * Launches, watches and stops VMM processes. It knows nothing of gRPC: requests come in as
 * plain values, failures leave as VmprocError, exits go out through the ExitExchange.
 *
 * Invariants: at most one live process per sandbox ID and per socket path; every spawned
 * process gets exactly one exit event, whatever path ends it; a failed start leaves no process
 * and no socket behind.
 */
export class Supervisor {
  readonly #options: SupervisorOptions;
  readonly #logger: Logger;
  readonly #spawn: (options: SpawnVmmOptions) => Promise<VmmProcess>;
  readonly #now: () => Date;
  readonly #records = new Map<string, ManagedProcess>();
  /** Live processes by socket path: a socket belongs to one live process at a time. */
  readonly #socketOwners = new Map<string, ManagedProcess>();
  /** Exited sandbox IDs, oldest first, for bounded retention. */
  readonly #exitedOrder = new Set<string>();
  #closed = false;

  constructor(options: SupervisorOptions) {
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.#spawn = options.spawn ?? spawnVmm;
    this.#now = options.now ?? (() => new Date());
  }

  /** Creates the run directory layout the launches write to. */
  async prepare(): Promise<void> {
    const { runDir } = this.#options.defaults;
    await mkdir(posix.join(runDir, 'logs'), { recursive: true, mode: 0o750 });
    await mkdir(posix.join(runDir, 'exits'), { recursive: true, mode: 0o750 });
  }

  get exchange(): ExitExchange {
    return this.#options.exchange;
  }

  /**
   * Launches a VMM and resolves once it is ready (ping answered, restore done). `signal` is the
   * caller's interest: aborting it before ready abandons the start; after ready it has no effect.
   */
  async start(request: StartRequest, signal?: AbortSignal): Promise<ProcessSnapshot> {
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
    const record = new ManagedProcess(
      spec,
      {
        logPath: posix.join(defaults.runDir, 'logs', `${spec.sandboxId}.log`),
        statusPath: posix.join(defaults.runDir, 'exits', `${spec.sandboxId}.status`),
      },
      this.#now(),
    );
    this.#records.set(spec.sandboxId, record);
    this.#exitedOrder.delete(spec.sandboxId);
    this.#socketOwners.set(spec.socketPath, record);

    let vmm: VmmProcess;
    try {
      await removeStaleSocket(spec.socketPath);
      vmm = await this.#spawn({
        reaperBin: this.#options.reaperBin,
        command: buildLaunchCommand({ ...spec, vmmBin: defaults.vmmBin }),
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
      throw asVmprocError(error, `cannot launch sandbox ${spec.sandboxId}`);
    }
    record.attach(vmm);
    this.#logger.info({ sandboxId: spec.sandboxId, pid: vmm.pid, mode: spec.mode }, 'vmm spawned');
    vmm.exited.then(
      (status) => this.#onEnded(record, status),
      (error) => this.#onEnded(record, undefined, asVmprocError(error, 'reading the exit status')),
    );
    return this.#awaitReady(record, signal);
  }

  async #awaitReady(record: ManagedProcess, callerSignal: AbortSignal | undefined): Promise<ProcessSnapshot> {
    const { spec, startAbort } = record;
    const abort = (reason: StartAbortReason) => startAbort.abort(reason);
    const timer = setTimeout(() => abort({ kind: 'timeout' }), spec.readyTimeoutMs);
    const onCallerAbort = () => abort({ kind: 'cancelled' });
    callerSignal?.addEventListener('abort', onCallerAbort, { once: true });
    record.exited.then(() => abort({ kind: 'exited' }));
    try {
      const ready = await this.#options.vmmApi.waitReady(spec.socketPath, startAbort.signal);
      if (spec.restore) await this.#options.vmmApi.restore(spec.socketPath, spec.restore, startAbort.signal);
      if (startAbort.signal.aborted) throw startAbort.signal.reason;
      record.markReady(this.#now(), ready.version);
      this.#logger.info({ sandboxId: spec.sandboxId, pid: record.vmm!.pid, vmmVersion: ready.version }, 'vmm ready');
      return record.snapshot();
    } catch (error) {
      throw await this.#abandonStart(record, error);
    } finally {
      clearTimeout(timer);
      callerSignal?.removeEventListener('abort', onCallerAbort);
    }
  }

  /** Kills what a failed start left, waits for its exit event, and returns the caller's error. */
  async #abandonStart(record: ManagedProcess, error: unknown): Promise<VmprocError> {
    const { spec } = record;
    const vmm = record.vmm!;
    const signal = record.startAbort.signal;
    const aborted = signal.aborted ? (signal.reason as StartAbortReason) : undefined;
    const failure = describeStartFailure(spec.readyTimeoutMs, aborted, error);
    if (failure.exit) {
      // Nobody else is ending this process: it is ours to kill, and its exit carries our reason.
      record.startFailure ??= failure.exit;
      await signalProcessGroup(vmm.pid, vmm.startTime, 'SIGKILL');
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
    record.stopRequested = true;
    if (record.state === 'starting') record.startAbort.abort({ kind: 'stopped' } satisfies StartAbortReason);
    record.moveTo('stopping');
    this.#logger.info({ sandboxId, pid: record.vmm?.pid, graceMs }, 'stopping vmm');
    const stopping = this.#terminate(record, graceMs);
    record.stopping = stopping;
    // A failed stop (process stuck after SIGKILL) may be retried by a later StopProcess.
    stopping.catch(() => {
      if (record.stopping === stopping) record.stopping = undefined;
    });
    return stopping;
  }

  async #terminate(record: ManagedProcess, graceMs: number): Promise<ProcessSnapshot> {
    const vmm = await record.spawned;
    if (!vmm) throw new VmprocError('not-found', `sandbox ${record.sandboxId} never got a process: its launch failed`);
    const { pid, startTime } = vmm;
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
    this.#closed = true;
    const starting = [...this.#records.values()].filter((r) => r.state === 'starting');
    for (const record of starting) record.startAbort.abort({ kind: 'shutdown' } satisfies StartAbortReason);
    await Promise.allSettled(starting.map((r) => withinTimeout(r.exited, KILL_BACKSTOP_MS)));
  }

  /** The single place a process's end becomes an exit event. */
  async #onEnded(record: ManagedProcess, status: ExitStatus | undefined, readError?: VmprocError): Promise<void> {
    const { spec } = record;
    const vmm = record.vmm!;
    const { reason, message } = classifyExit(record, status, readError);
    let stderrTail = '';
    try {
      stderrTail = await readLogTail(record.logPath, vmm.logOffset);
    } catch (error) {
      this.#logger.warn({ sandboxId: spec.sandboxId, err: error }, 'cannot read the vmm log tail');
    }
    await Promise.allSettled([removeSocketFiles(spec.socketPath), rm(record.statusPath, { force: true })]);

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
    // Publishing and the state change happen in one synchronous step, so a List taken at any
    // moment agrees with the exit sequence it reports.
    const event = this.#options.exchange.publish(exit);
    record.markExited(event);
    this.#socketOwners.delete(spec.socketPath);
    this.#retainExited(spec.sandboxId);
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
      if (this.#records.get(oldest)?.state === 'exited') this.#records.delete(oldest);
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

function classifyExit(record: ManagedProcess, status: ExitStatus | undefined, readError?: VmprocError): { reason: ExitReason; message: string } {
  const how = status ? describeExitStatus(status) : 'an unknown status';
  if (record.stopRequested) return { reason: 'stopped', message: `stopped (${how})` };
  if (record.startFailure) return { reason: record.startFailure.reason, message: record.startFailure.message };
  if (record.state === 'starting') return { reason: 'start-failed', message: `exited before it was ready (${how})` };
  if (!status) {
    const detail = readError ? `: ${readError.message}` : '; its reaper ended without recording it';
    return { reason: 'lost', message: `the exit status could not be observed${detail}` };
  }
  if (status.signal) return { reason: 'signaled', message: `killed by ${how}` };
  return { reason: 'exited', message: `exited on its own (${how})` };
}

interface DescribedFailure {
  readonly code: VmprocError['code'];
  readonly callerMessage: string;
  /** Set when the start path itself must end the process, with the reason its exit will carry. */
  readonly exit?: StartFailure;
}

function describeStartFailure(readyTimeoutMs: number, aborted: StartAbortReason | undefined, error: unknown): DescribedFailure {
  switch (aborted?.kind) {
    case 'exited':
      return { code: 'failed-precondition', callerMessage: 'VMM exited before it was ready' };
    case 'stopped':
      return { code: 'aborted', callerMessage: 'stopped by StopProcess while starting' };
    case 'timeout': {
      const message = `not ready within ${readyTimeoutMs}ms`;
      return {
        code: 'deadline-exceeded',
        callerMessage: `VMM was ${message} (its API socket did not answer GET /api/v1/vmm.ping, or the restore did not finish); it was killed`,
        exit: { reason: 'start-timeout', message },
      };
    }
    case 'cancelled':
      return {
        code: 'cancelled',
        callerMessage: 'start cancelled by the client; the VMM was killed',
        exit: { reason: 'start-failed', message: 'start cancelled by the client' },
      };
    case 'shutdown':
      return {
        code: 'unavailable',
        callerMessage: 'the daemon is shutting down; the VMM was killed before it was ready',
        exit: { reason: 'start-failed', message: 'daemon shut down during the start' },
      };
    case undefined: {
      // The VMM answered but refused: today that is a failed restore.
      const detail = error instanceof Error ? error.message : String(error);
      return { code: 'failed-precondition', callerMessage: detail, exit: { reason: 'start-failed', message: detail } };
    }
  }
}

/** Removes a socket left by a dead VMM; anything else at that path is the caller's mistake. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let stats;
  try {
    stats = await lstat(socketPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!stats.isSocket()) {
    throw new VmprocError('failed-precondition', `socket_path ${socketPath} exists and is not a socket; remove it or choose another path`);
  }
  await removeSocketFiles(socketPath);
}

/** The socket and the `<socket>.lock` Cloud Hypervisor v53+ leaves beside it. */
async function removeSocketFiles(socketPath: string): Promise<void> {
  await Promise.all([rm(socketPath, { force: true }), rm(`${socketPath}.lock`, { force: true })]);
}
