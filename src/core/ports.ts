/**
 * The core's only doors to the world: processes, the run dir, durable state, the VMM's API and
 * time. Adapters implement them (src/launch, src/host, src/store, src/vmm); unit tests pass fakes
 * (test/unit/core/fakes). Nothing in src/core touches a file, a process or a socket otherwise.
 */
import type {
  ExitStatus,
  LaunchFiles,
  ProcessExitEvent,
  ProcessIdentity,
  RestoreSpec,
  SocketFiles,
  StartFailure,
  StartSpec,
  VmCounters,
  VmInfo,
  VmResize,
  VmState,
} from './domain.js';
import type { EventFloorsJson } from './event-floors.js';
import type { ProcessEvent } from './events.js';

/** One event of a VMM's event monitor (Cloud Hypervisor's `--event-monitor`). */
export interface VmmEvent {
  readonly source: string;
  readonly event: string;
  readonly properties?: Readonly<Record<string, string>>;
  /** The byte offset just past it in the monitor's output: reading resumes there. */
  readonly end: number;
}

/** A VMM's events as they are written, handed over in order, one batch at a time. */
export interface VmmEventFeed {
  /** True once the monitor's output exists (a VMM without one never has events). */
  readonly monitored: boolean;
  /** Resolves once everything written so far has been read and its batch handled. */
  drain(): Promise<void>;
  /** Stops reading. */
  close(): void;
}

/** Where the core learns what happens inside VMMs and their guests without asking. */
export interface VmmEventSource {
  /**
   * Follows the event monitor of the launch `files` from byte `fromOffset`, calling `onEvents`
   * for each batch, one at a time: the next batch waits until the previous one's promise settles.
   */
  follow(files: LaunchFiles, fromOffset: number, onEvents: (events: readonly VmmEvent[]) => Promise<void>): VmmEventFeed;
}

/** Wall-clock time and timers. */
export interface Clock {
  now(): Date;
  /**
   * Calls `callback` once after `ms` milliseconds, for any duration a request may carry (beyond
   * setTimeout's 2^31-1 ms too); returns a function that cancels it.
   */
  schedule(ms: number, callback: () => void): () => void;
}

/** One supervised VMM process, as the process host sees it. */
export interface ProcessHandle {
  readonly identity: ProcessIdentity;
  /** Byte offset in the log where this run's output begins. */
  readonly logOffset: number;
  /** Settles once, when the process has ended; undefined when nobody could see how it ended. */
  readonly exited: Promise<ExitStatus | undefined>;
  /**
   * Signals the VMM's process group, only while its PID still names this very process (same start
   * time): a reused PID is never signalled. 'gone' when it no longer exists or is already dead.
   */
  signal(signal: NodeJS.Signals | number): Promise<'sent' | 'gone'>;
  /** The network interfaces in the VMM's network namespace (its TAP devices among them). */
  networkInterfaces(): Promise<string[]>;
}

/** A launch a previous daemon made but died before recording the PIDs of. */
export interface FoundLaunch {
  readonly reaper: { readonly pid: number; readonly startTime: bigint };
  /** The VMM, if it is still the reaper's child. */
  readonly vmm?: { readonly pid: number; readonly startTime: bigint };
}

/** Starts VMMs in their sandboxes and tells how each ended. */
export interface ProcessHost {
  /**
   * Resolves every host path of `spec` and checks what must hold on the host for it to launch:
   * each path lies under the roots the operator allowed (`permission-denied` otherwise), its files
   * and network namespace exist, its sandbox dir hides nothing the launch needs
   * (`failed-precondition`). Returns the spec with the resolved paths: what the VMM gets.
   */
  prepareLaunch(spec: StartSpec): Promise<StartSpec>;
  /** Resolves once the VMM's process exists, in its own process group. */
  launch(spec: StartSpec, files: LaunchFiles): Promise<ProcessHandle>;
  /** Supervises a VMM a previous daemon launched (its reaper is not our child). */
  adopt(identity: ProcessIdentity, files: LaunchFiles, logOffset: number): ProcessHandle;
  findLaunch(files: LaunchFiles): Promise<FoundLaunch | undefined>;
  /** The status a launch's reaper recorded; undefined if there is none (yet, or ever). */
  recordedExit(files: LaunchFiles): Promise<ExitStatus | undefined>;
  /** True while `pid` still names the process that started at `startTime`, not yet dead. */
  isAlive(pid: number, startTime: bigint): Promise<boolean>;
  /** This boot of the host: PIDs and start times identify a process within one boot only. */
  bootId(): Promise<string>;
  /** Stops launching; resolves once the host's own helpers have ended (VMMs keep running). */
  close(): Promise<void>;
}

/** The run dir: where each sandbox's log, its launches' exit records and default sockets live. */
export interface RunLayout {
  /** Creates the directories launches write to. */
  prepare(): Promise<void>;
  /** The files of a new launch of `sandboxId`. */
  launchFiles(sandboxId: string): LaunchFiles;
  /** The last lines this run wrote to its log, from byte `fromOffset` (where the run began). */
  readLogTail(logPath: string, fromOffset: number): Promise<string>;
  /** A sandbox's log and its rotated copies (the daemon forgets the sandbox). */
  removeLogs(logPath: string): Promise<void>;
  /**
   * Makes the socket path ready for a new VMM: a socket a dead VMM left is removed; a live one, a
   * file that is not a socket, or a `<socket>.lock` that is not Cloud Hypervisor's is refused.
   */
  claimSocket(socketPath: string): Promise<SocketFiles>;
  /** The socket and lock file the VMM made, by identity, once it answers. */
  socketFiles(socketPath: string, claimed: SocketFiles): Promise<SocketFiles>;
  /** After the VMM exited: removes its socket and lock file, only those it made. */
  releaseSocket(socketPath: string, known: SocketFiles): Promise<void>;
  /** A launch's exit record, once the journal holds the exit. */
  removeLaunchFiles(files: LaunchFiles): Promise<void>;
  /**
   * Exit records of launches not in `keep`: left by a previous daemon after it recorded the exit.
   * Recovery keeps every launch it picked up again (live, or ended with an exit not yet journalled).
   */
  removeOrphanLaunchFiles(keep: readonly LaunchFiles[]): Promise<void>;
  /**
   * The status paths of the launches removeOrphanLaunchFiles would remove: an exited launch among
   * them was journalled by a daemon that died before its clean-up was done.
   */
  orphanStatusPaths(keep: readonly LaunchFiles[]): Promise<ReadonlySet<string>>;
}

/** Where snapshots go: directories under the image roots, made by the daemon. */
export interface SnapshotDirs {
  /**
   * Makes the directory `url` (`file://` of an absolute path) names for a snapshot: its parent
   * must lie under an image root and it must not exist. Returns its resolved `file://` URL and path.
   * Throws `invalid-argument`, `permission-denied` or `failed-precondition` naming `field`.
   */
  create(field: string, url: string): Promise<{ readonly url: string; readonly path: string }>;
  /** Removes a directory create() made, with what a failed snapshot left in it. */
  remove(path: string): Promise<void>;
}

/** An append's two moments: in the file (survives a crash of this process), and on disk. */
export interface Recorded {
  readonly written: Promise<void>;
  /** Settles with `written` for a record that need not be synced. */
  readonly durable: Promise<void>;
}

/** What the daemon must remember about one process to pick it up again after a restart. */
export interface PersistedProcess extends LaunchFiles {
  readonly spec: StartSpec;
  readonly startedAt: Date;
  /** /proc/sys/kernel/random/boot_id when launched: after a reboot no PID of ours can be alive. */
  readonly bootId: string;
  /** Set once the VMM was spawned. */
  readonly identity?: ProcessIdentity;
  readonly logOffset?: number;
  readonly readyAt?: Date;
  readonly vmmVersion?: string;
  /** The socket and lock file the VMM made, recorded when it became ready. */
  readonly socketFiles?: SocketFiles;
  /** Set once a stop was requested: when SIGKILL is due. */
  readonly stopKillAt?: Date;
  /** The stop followed a snapshot to this URL. */
  readonly stopSnapshotUrl?: string;
  /** The VM's state as of the daemon's last operation on it. */
  readonly vmState?: VmState;
  readonly signalsSent: readonly string[];
  readonly startFailure?: StartFailure;
  readonly exit?: ProcessExitEvent;
  /** How far the VMM's event monitor was read into events already recorded (bytes). */
  readonly monitorOffset?: number;
  /** The exited record a launch not yet spawned replaced; restored if the launch is abandoned. */
  readonly replaced?: PersistedProcess;
}

export interface PersistedState {
  /** By sandbox ID; the latest launch of each. */
  readonly processes: ReadonlyMap<string, PersistedProcess>;
  /** Retained exit history, oldest first. */
  readonly exits: readonly ProcessExitEvent[];
  /** The last exit sequence ever issued (numbering continues from here). */
  readonly lastSequence: number;
  /**
   * Set when lastSequence comes not from the journal but from an exit a previous daemon published
   * without journalling it (a full state disk): that exit is found again through its reaper and
   * published anew, with a new sequence.
   */
  readonly sequenceFloor?: number;
  /** Retained lifecycle events, oldest first. */
  readonly events: readonly ProcessEvent[];
  /** What the events pruned from that history were (EventFloors.toJson). */
  readonly eventFloors?: EventFloorsJson;
  /** The last event sequence ever issued. */
  readonly lastEventSequence: number;
  /** Bytes of a torn final record dropped at load (a crash mid-write), 0 normally. */
  readonly droppedTailBytes: number;
  /** The host boot the last daemon ran in; undefined for a new store. */
  readonly lastBootId?: string;
}

/**
 * The supervisor's durable memory. Each method writes one record and resolves once it is in the
 * file; callers await it before acting on the change (a StartProcess does not return, and an exit
 * is not published, before it is recorded).
 */
export interface StateStore {
  /**
   * Records a launch. `written` settles once it is recorded (enough to survive a daemon crash: the
   * spawn may go ahead); `durable` once it is on disk as the sync mode asks.
   */
  launching(sandboxId: string, launch: Pick<PersistedProcess, 'spec' | 'logPath' | 'statusPath' | 'startedAt' | 'bootId'>): Recorded;
  spawned(sandboxId: string, identity: ProcessIdentity, logOffset: number): Promise<void>;
  ready(sandboxId: string, readyAt: Date, vmmVersion: string, socketFiles: SocketFiles): Promise<void>;
  stopping(sandboxId: string, killAt: Date, snapshotUrl?: string): Promise<void>;
  /** The VM's state changed through the daemon (boot, pause, resume, restore, snapshot...). */
  vmState(sandboxId: string, state: VmState): Promise<void>;
  signalled(sandboxId: string, signal: string): Promise<void>;
  startFailed(sandboxId: string, failure: StartFailure): Promise<void>;
  exited(event: ProcessExitEvent): Promise<void>;
  /**
   * Records a lifecycle event before it is published; `monitorOffset`: the VMM's event monitor
   * has been read up to there with it, so a restarted daemon reads on from there.
   */
  event(event: ProcessEvent, monitorOffset?: number): Promise<void>;
  /** A launch that never produced a process: forget it. */
  abandoned(sandboxId: string): Promise<void>;
  /** This daemon runs in host boot `bootId` (recorded once at start-up). */
  booted(bootId: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * What the core needs from a VMM's API. Every failure is a VmprocError already (the adapter maps
 * the VMM's own errors in one place); an abort rejects with the signal's reason as it is.
 */
export interface VmmApi {
  /** Resolves once the VMM answers its API (`GET /api/v1/vmm.ping`). */
  waitReady(socketPath: string, signal: AbortSignal): Promise<{ readonly version: string }>;
  /** `PUT /api/v1/vm.restore` into a bare VMM. */
  restore(socketPath: string, restore: RestoreSpec, signal: AbortSignal): Promise<void>;
  /** The VM's state from `GET /api/v1/vm.info`, or undefined when the VMM holds no VM. */
  vmState(socketPath: string, signal: AbortSignal): Promise<string | undefined>;
  /** `PUT vm.create` for a start's VM, naming its files by their paths in the sandbox dir. */
  createVm(socketPath: string, spec: StartSpec, signal: AbortSignal): Promise<void>;
  bootVm(socketPath: string, signal: AbortSignal): Promise<void>;
  pauseVm(socketPath: string): Promise<void>;
  resumeVm(socketPath: string): Promise<void>;
  /** `PUT vm.snapshot` into a `file://` directory (the VM is paused). */
  snapshotVm(socketPath: string, destinationUrl: string): Promise<void>;
  vmInfo(socketPath: string, signal?: AbortSignal): Promise<VmInfo>;
  vmCounters(socketPath: string): Promise<VmCounters>;
  resizeVm(socketPath: string, resize: VmResize): Promise<void>;
}
