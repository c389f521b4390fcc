import { isVmSpec, type LaunchFiles, type ProcessExitEvent, type ProcessSnapshot, type ProcessState, type SocketFiles, type StartFailure, type StartSpec, type VmState } from './domain.js';
import { OperationLane } from './operation-lane.js';
import { SANDBOX_NAMES } from './sandbox-files.js';
import { assertMove, type Phase, publicState, type StartAbortReason } from './lifecycle.js';
import type { EventDetail, EventKind } from './events.js';
import type { ProcessHandle, VmmEventFeed } from './ports.js';

/**
 * One supervised process: its spec, where it is in its lifecycle, and the one exit it will ever
 * have. The use cases change it only through intents (request a stop, abandon the start, record a
 * signal, mark it ready or exited); each is a move of the state machine in lifecycle.ts, so an
 * illegal one is an error rather than a silent corruption.
 */
export class SupervisedProcess {
  readonly spec: StartSpec;
  readonly files: LaunchFiles;
  readonly startedAt: Date;
  #phase: Phase = 'starting';
  #handle: ProcessHandle | undefined;
  #readyAt: Date | undefined;
  #vmmVersion: string | undefined;
  #exit: ProcessExitEvent | undefined;
  #startFailure: StartFailure | undefined;
  /** What the daemon knows of the VMM's socket files: removed at exit, and only those. */
  #socketFiles: SocketFiles = {};
  /** The VM inside the VMM, as of the daemon's last operation on it. */
  #vmState: VmState = 'not-created';
  /** Set when the stop follows a snapshot (SnapshotVm, after_snapshot stop): where it is. */
  #stopSnapshotUrl: string | undefined;
  /** VM operations and signals of this sandbox, one at a time; a stop closes it. */
  readonly lane = new OperationLane();
  /** Names of signals sent through SignalProcess, to tell a requested death from a stranger's. */
  readonly #signalsSent = new Set<string>();
  /** The shared in-flight stop, if any. */
  #stop: Promise<ProcessSnapshot> | undefined;
  /** Aborted when the start must give up (timeout, exit, stop, cancel); the first reason wins. */
  readonly #startAbort = new AbortController();
  readonly #exited: Promise<ProcessSnapshot>;
  #settleExit!: (snapshot: ProcessSnapshot) => void;
  readonly #spawned: Promise<ProcessHandle | undefined>;
  #settleSpawn!: (handle: ProcessHandle | undefined) => void;
  #snapshot: ProcessSnapshot | undefined;
  /** The VMM's event monitor, read while the process lives. */
  #eventFeed: VmmEventFeed | undefined;
  /** VMM events the daemon's own calls are about to cause, until when, with what detail. */
  readonly #expected: Array<{ readonly kind: EventKind; readonly until: number; readonly detail: EventDetail | undefined }> = [];

  constructor(spec: StartSpec, files: LaunchFiles, startedAt: Date) {
    this.spec = spec;
    this.files = files;
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

  get phase(): Phase {
    return this.#phase;
  }

  /** What clients see. */
  get state(): ProcessState {
    return publicState(this.#phase);
  }

  get handle(): ProcessHandle | undefined {
    return this.#handle;
  }

  get exit(): ProcessExitEvent | undefined {
    return this.#exit;
  }

  get socketFiles(): SocketFiles {
    return this.#socketFiles;
  }

  get vmState(): VmState {
    return this.#vmState;
  }

  get stopSnapshotUrl(): string | undefined {
    return this.#stopSnapshotUrl;
  }

  get startFailure(): StartFailure | undefined {
    return this.#startFailure;
  }

  /** A stop was asked for (by StopProcess, or by the daemon that was stopping it before a restart). */
  get stopRequested(): boolean {
    return this.#phase === 'stopping';
  }

  /** The start's wait for readiness listens to this; its reason is a StartAbortReason. */
  get startSignal(): AbortSignal {
    return this.#startAbort.signal;
  }

  get stopInFlight(): Promise<ProcessSnapshot> | undefined {
    return this.#stop;
  }

  /** Resolves with the final snapshot once the process has exited. */
  get exited(): Promise<ProcessSnapshot> {
    return this.#exited;
  }

  /**
   * Resolves with the process once it has been spawned, or undefined if the launch failed before
   * there was one. A stop may arrive while the launch is still in progress.
   */
  get spawned(): Promise<ProcessHandle | undefined> {
    return this.#spawned;
  }

  attach(handle: ProcessHandle): void {
    this.#handle = handle;
    this.#snapshot = undefined;
    this.#settleSpawn(handle);
  }

  /** From now on the VMM's events come through `feed`. */
  followEvents(feed: VmmEventFeed): void {
    this.#eventFeed = feed;
  }

  get eventFeed(): VmmEventFeed | undefined {
    return this.#eventFeed;
  }

  /** The daemon's call is about to cause a `kind` event in the VMM; claims it until `until` (epoch ms). */
  expect(kind: EventKind, until: number, detail?: EventDetail): () => void {
    const claim = { kind, until, detail };
    this.#expected.push(claim);
    return () => {
      const index = this.#expected.indexOf(claim);
      if (index >= 0) this.#expected.splice(index, 1);
    };
  }

  isExpecting(kind: EventKind): boolean {
    return this.#expected.some((expected) => expected.kind === kind);
  }

  /** The oldest claim on a `kind` event still in time, taken; stale claims go. */
  consumeExpected(kind: EventKind, now: Date): { readonly detail: EventDetail | undefined } | undefined {
    for (let i = this.#expected.length - 1; i >= 0; i--) if (this.#expected[i]!.until < now.getTime()) this.#expected.splice(i, 1);
    const index = this.#expected.findIndex((expected) => expected.kind === kind);
    if (index < 0) return undefined;
    const [taken] = this.#expected.splice(index, 1);
    return { detail: taken!.detail };
  }

  /** The socket path was made ready for this launch; `claimed` is what was there before. */
  claimedSocket(claimed: SocketFiles): void {
    this.#socketFiles = claimed;
  }

  /** The launch failed before any process existed. */
  spawnFailed(): void {
    this.#settleSpawn(undefined);
  }

  /** Cuts the start's wait for readiness short; the first reason wins. */
  interruptStart(reason: StartAbortReason): void {
    this.#startAbort.abort(reason);
  }

  /** StopProcess: the process is to end now; a start in progress is interrupted. */
  requestStop(): void {
    if (this.#phase === 'stopping') return;
    if (this.#phase === 'starting' || this.#phase === 'abandoning') this.interruptStart({ kind: 'stopped' });
    this.#moveTo('stopping');
  }

  /**
   * The start path gives up on this process and will kill it: its exit carries `failure`. Returns
   * false when a failure was recorded already (the first one wins, and its owner does the killing).
   */
  abandonStart(failure: StartFailure): boolean {
    if (this.#startFailure) return false;
    this.#startFailure = failure;
    // A stop that came first keeps the process: the stop owns its end, the failure its account.
    if (this.#phase === 'starting') this.#moveTo('abandoning');
    else this.#snapshot = undefined;
    return true;
  }

  /** The daemon's own operation (or vm.info) changed the VM's state. */
  setVmState(state: VmState): void {
    if (state === this.#vmState) return;
    this.#vmState = state;
    this.#snapshot = undefined;
  }

  /** The stop about to be requested follows a snapshot to `url`: its exit says so. */
  stopAfterSnapshot(url: string): void {
    this.#stopSnapshotUrl = url;
  }

  /** A signal went out through SignalProcess. */
  recordSignal(name: string): void {
    this.#signalsSent.add(name);
  }

  sentSignal(name: string): boolean {
    return this.#signalsSent.has(name);
  }

  /** Concurrent stops share one: the first one's, until it fails (a later stop may retry). */
  trackStop(stop: Promise<ProcessSnapshot>): Promise<ProcessSnapshot> {
    this.#stop = stop;
    stop.catch(() => {
      if (this.#stop === stop) this.#stop = undefined;
    });
    return stop;
  }

  /** The VMM answers; `socketFiles` are the socket and lock file it made. */
  markReady(at: Date, vmmVersion: string, socketFiles: SocketFiles = this.#socketFiles): void {
    this.#moveTo('running');
    this.#readyAt = at;
    this.#vmmVersion = vmmVersion;
    this.#socketFiles = socketFiles;
  }

  /** The one exit this process has: settles `exited` once. */
  markExited(exit: ProcessExitEvent): void {
    this.#moveTo('exited');
    this.#exit = exit;
    this.#settleExit(this.snapshot());
  }

  /**
   * Brings back what a previous daemon recorded of a live process. Only for records being
   * re-adopted at start-up, before anything else can see them.
   */
  resume(recorded: {
    readonly readyAt?: Date;
    readonly vmmVersion?: string;
    readonly stopping: boolean;
    readonly startFailure?: StartFailure;
    readonly signalsSent: readonly string[];
    readonly socketFiles?: SocketFiles;
    readonly vmState?: VmState;
    readonly stopSnapshotUrl?: string;
  }): void {
    if (recorded.socketFiles) this.#socketFiles = recorded.socketFiles;
    if (recorded.vmState) this.#vmState = recorded.vmState;
    if (recorded.stopSnapshotUrl) this.#stopSnapshotUrl = recorded.stopSnapshotUrl;
    for (const signal of recorded.signalsSent) this.#signalsSent.add(signal);
    if (recorded.startFailure) this.abandonStart(recorded.startFailure);
    if (recorded.readyAt && this.#phase === 'starting') this.markReady(recorded.readyAt, recorded.vmmVersion ?? '', this.#socketFiles);
    if (recorded.stopping) this.#moveTo('stopping');
  }

  /** A record that had already exited before this daemon started: kept for Get and Wait. */
  restoreExited(exit: ProcessExitEvent): void {
    this.#settleSpawn(undefined);
    this.markExited(exit);
  }

  /**
   * The same frozen object until the process changes, so that its wire encoding can be cached
   * (a ListProcesses of a thousand processes re-encodes only what changed).
   */
  snapshot(): ProcessSnapshot {
    this.#snapshot ??= Object.freeze(this.#makeSnapshot());
    return this.#snapshot;
  }

  #moveTo(phase: Phase): void {
    assertMove(this.sandboxId, this.#phase, phase);
    this.#phase = phase;
    this.#snapshot = undefined;
  }

  #makeSnapshot(): ProcessSnapshot {
    const { spec } = this;
    return {
      sandboxId: spec.sandboxId,
      pid: this.#handle?.identity.pid ?? this.#exit?.pid ?? 0,
      state: this.state,
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
      logPath: this.files.logPath,
      vmState: this.#vmState,
      // The vsock's host side is a socket in the VMM's own sandbox dir: reached through its root.
      ...(isVmSpec(spec.vm) && spec.vm.vsock && this.#handle && this.#phase !== 'exited'
        ? { vsockSocket: `/proc/${this.#handle.identity.pid}/root${spec.sandboxDir}/${SANDBOX_NAMES.vsock}` }
        : {}),
    };
  }
}
