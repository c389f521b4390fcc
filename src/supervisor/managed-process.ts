import type { VmmProcess } from '../launch/vmm-process.js';
import { assertTransition } from './process-state.js';
import type { ExitReason, ProcessExitEvent, ProcessSnapshot, ProcessState, StartSpec } from './process-types.js';

/** Why a start is being abandoned; the first recorded reason wins. */
export interface StartFailure {
  readonly reason: Extract<ExitReason, 'start-failed' | 'start-timeout'>;
  readonly message: string;
}

/**
 * One supervised process: its spec, where it is in its lifecycle, and the one exit it will
 * ever have. Every state change goes through `moveTo`, so an illegal move is an error rather
 * than a silent corruption.
 */
export class ManagedProcess {
  readonly spec: StartSpec;
  readonly logPath: string;
  readonly statusPath: string;
  readonly startedAt: Date;
  #state: ProcessState = 'starting';
  #vmm: VmmProcess | undefined;
  #readyAt: Date | undefined;
  #vmmVersion: string | undefined;
  #exit: ProcessExitEvent | undefined;
  readonly #exited: Promise<ProcessSnapshot>;
  #settleExit!: (snapshot: ProcessSnapshot) => void;
  readonly #spawned: Promise<VmmProcess | undefined>;
  #settleSpawn!: (vmm: VmmProcess | undefined) => void;
  #snapshot: ProcessSnapshot | undefined;

  /** Aborted when the start must give up (timeout, exit, stop, cancel); its reason says which. */
  readonly startAbort = new AbortController();
  startFailure: StartFailure | undefined;
  stopRequested = false;
  /** The shared in-flight stop, if any. */
  stopping: Promise<ProcessSnapshot> | undefined;
  /** Names of signals sent through SignalProcess, to tell a requested death from a stranger's. */
  readonly signalsSent = new Set<string>();

  constructor(spec: StartSpec, paths: { logPath: string; statusPath: string }, startedAt: Date) {
    this.spec = spec;
    this.logPath = paths.logPath;
    this.statusPath = paths.statusPath;
    this.startedAt = startedAt;
    this.#exited = new Promise((resolve) => {
      this.#settleExit = resolve;
    });
    this.#spawned = new Promise((resolve) => {
      this.#settleSpawn = resolve;
    });
  }

  get sandboxId(): string {
    return this.spec.sandboxId;
  }

  get state(): ProcessState {
    return this.#state;
  }

  get vmm(): VmmProcess | undefined {
    return this.#vmm;
  }

  get exit(): ProcessExitEvent | undefined {
    return this.#exit;
  }

  /** Resolves with the final snapshot once the process has exited. */
  get exited(): Promise<ProcessSnapshot> {
    return this.#exited;
  }

  /**
   * Resolves with the process once it has been spawned, or undefined if the launch failed before
   * there was one. A stop may arrive while the launch is still in progress.
   */
  get spawned(): Promise<VmmProcess | undefined> {
    return this.#spawned;
  }

  attach(vmm: VmmProcess): void {
    this.#vmm = vmm;
    this.#snapshot = undefined;
    this.#settleSpawn(vmm);
  }

  /** The launch failed before any process existed. */
  spawnFailed(): void {
    this.#settleSpawn(undefined);
  }

  /**
   * Brings back the lifecycle position a previous daemon recorded. Only for records being
   * re-adopted at start-up, before anything else can see them.
   */
  resume(state: { readonly readyAt?: Date; readonly vmmVersion?: string; readonly stopping: boolean }): void {
    if (state.readyAt) {
      this.markReady(state.readyAt, state.vmmVersion ?? '');
    }
    if (state.stopping) {
      this.stopRequested = true;
      this.moveTo('stopping');
    }
  }

  markReady(at: Date, vmmVersion: string): void {
    this.moveTo('running');
    this.#readyAt = at;
    this.#vmmVersion = vmmVersion;
  }

  moveTo(state: ProcessState): void {
    assertTransition(this.sandboxId, this.#state, state);
    this.#state = state;
    this.#snapshot = undefined;
  }

  /** A record that had already exited before this daemon started: keep it for Get and Wait. */
  restoreExited(exit: ProcessExitEvent): void {
    this.#state = 'exited';
    this.#exit = exit;
    this.#snapshot = undefined;
    this.#settleSpawn(undefined);
    this.#settleExit(this.snapshot());
  }

  /** The one exit this process has: settles `exited` once. */
  markExited(exit: ProcessExitEvent): void {
    this.moveTo('exited');
    this.#exit = exit;
    this.#snapshot = undefined;
    this.#settleExit(this.snapshot());
  }

  /**
   * The same frozen object until the process changes, so that its wire encoding can be cached
   * (a ListProcesses of a thousand processes re-encodes only what changed).
   */
  snapshot(): ProcessSnapshot {
    this.#snapshot ??= Object.freeze(this.#makeSnapshot());
    return this.#snapshot;
  }

  #makeSnapshot(): ProcessSnapshot {
    const { spec } = this;
    return {
      sandboxId: spec.sandboxId,
      pid: this.#vmm?.pid ?? this.#exit?.pid ?? 0,
      state: this.#state,
      mode: spec.mode,
      socketPath: spec.socketPath,
      networkNamespace: spec.networkNamespace,
      labels: spec.labels,
      startedAt: this.startedAt,
      ...(this.#readyAt ? { readyAt: this.#readyAt } : {}),
      ...(this.#vmmVersion ? { vmmVersion: this.#vmmVersion } : {}),
      ...(this.#exit ? { exit: this.#exit } : {}),
      sandboxDir: spec.sandboxDir,
      ...(spec.kernelPath ? { kernelPath: spec.kernelPath } : {}),
      rootfsPath: spec.rootfsPath,
      logPath: this.logPath,
    };
  }
}
