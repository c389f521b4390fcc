/**
 * The supervisor's vocabulary: what a start asks for, who a process is, how it ended. Plain values
 * only, shared by the core, its ports and their adapters; nothing here touches the host.
 */

export type LaunchMode = 'boot' | 'restore';

/** What clients see: STARTING -> RUNNING -> STOPPING -> EXITED (see lifecycle.ts for the moves). */
export type ProcessState = 'starting' | 'running' | 'stopping' | 'exited';

export type ExitReason =
  /** Exited on its own while running, any exit code. */
  | 'exited'
  /** Killed by a signal while running, not during a stop. */
  | 'signaled'
  /** Ended after a stop was requested. */
  | 'stopped'
  /** The start failed: exit before ready, restore error, cancelled, daemon shutting down. */
  | 'start-failed'
  /** Not ready within the ready timeout. */
  | 'start-timeout'
  /** Ended while nobody could observe how. */
  | 'lost';

export type MemoryRestoreMode = 'Copy' | 'OnDemand';

export interface RestoreSpec {
  readonly sourceUrl: string;
  /** Undefined leaves the choice to the VMM (Cloud Hypervisor defaults to Copy). */
  readonly memoryRestoreMode?: MemoryRestoreMode;
  readonly resume: boolean;
  readonly prefault: boolean;
}

/**
 * The VM inside a VMM, as the daemon last saw it. Cloud Hypervisor itself reports a shut-down VM
 * as Created; `shut-down` is what the daemon knows after a guest power-off with the VMM kept up.
 */
export type VmState = 'not-created' | 'created' | 'running' | 'paused' | 'shut-down';

export interface DiskSpec {
  readonly id: string;
  readonly path: string;
  readonly readonly: boolean;
}

export interface NetSpec {
  readonly id: string;
  readonly tap: string;
  /** Unset: Cloud Hypervisor picks one. */
  readonly mac?: string;
}

/** A validated VM to create and boot (VmConfig), with its defaults filled in. */
export interface VmSpec {
  readonly vcpus: number;
  readonly maxVcpus: number;
  readonly memoryMib: number;
  readonly maxMemoryMib: number;
  readonly cmdline: string;
  readonly initramfsPath?: string;
  readonly rootfsReadonly: boolean;
  readonly disks: readonly DiskSpec[];
  readonly net: readonly NetSpec[];
  readonly serial: 'log' | 'off';
  readonly vsock?: { readonly cid: number };
  readonly pvpanic: boolean;
}

/** What VmConfig may carry in restore mode: the snapshot's extra disks, nothing else. */
export type RestoreVmSpec = Pick<VmSpec, 'disks'>;

/** What SnapshotVm does with the VM once the snapshot is written. */
export type AfterSnapshot = 'resume' | 'stay-paused' | 'stop';

/** A VM as Cloud Hypervisor describes it (vm.info). */
export interface VmInfo {
  readonly state: VmState;
  readonly vcpus: number;
  readonly maxVcpus: number;
  readonly memoryBytes: number;
  readonly memoryActualBytes: number;
  readonly devices: ReadonlyArray<{ readonly id: string; readonly kind: string; readonly pciBdf: string }>;
  /** vm.info's JSON as the VMM sent it. */
  readonly rawJson: string;
}

/** Per-device counters, by device id and counter name; u64 values, hence bigint. */
export type VmCounters = Readonly<Record<string, Readonly<Record<string, bigint>>>>;

/** A resize: at least one of them. */
export interface VmResize {
  readonly vcpus?: number;
  readonly memoryMib?: number;
  readonly balloonMib?: number;
}

/** A start request as it arrives, before validation. Empty strings mean "not given". */
export interface StartRequest {
  readonly sandboxId: string;
  readonly mode?: LaunchMode;
  readonly kernelPath?: string;
  readonly rootfsPath: string;
  readonly networkNamespace: string;
  readonly socketPath?: string;
  readonly sandboxDir?: string;
  readonly readyTimeoutMs?: number;
  readonly restore?: RestoreSpec;
  readonly labels: Readonly<Record<string, string>>;
  /** VmConfig as it arrived (validated into StartSpec.vm). */
  readonly vm?: VmRequest;
}

/** VmConfig as it arrives: zero values mean "not given". */
export interface VmRequest {
  readonly vcpus: number;
  readonly maxVcpus: number;
  readonly memoryMib: number;
  readonly maxMemoryMib: number;
  readonly cmdline: string;
  readonly initramfsPath: string;
  readonly rootfsReadonly: boolean;
  readonly disks: ReadonlyArray<{ readonly id: string; readonly path: string; readonly readonly: boolean }>;
  readonly net: ReadonlyArray<{ readonly id: string; readonly tap: string; readonly mac: string }>;
  readonly serial?: 'log' | 'off';
  readonly vsock?: { readonly cid: number };
  readonly pvpanic: boolean;
}

/** A validated start request with every default filled in. */
export interface StartSpec {
  readonly sandboxId: string;
  readonly mode: LaunchMode;
  readonly kernelPath?: string;
  readonly rootfsPath: string;
  readonly networkNamespace: string;
  readonly socketPath: string;
  readonly sandboxDir: string;
  readonly readyTimeoutMs: number;
  readonly restore?: RestoreSpec;
  readonly labels: Readonly<Record<string, string>>;
  /** Boot mode: the VM to create and boot. Restore mode: only the snapshot's extra disks. */
  readonly vm?: VmSpec | RestoreVmSpec;
}

/** True for a boot-mode VM to create, as opposed to a restore's extra disks. */
export function isVmSpec(vm: StartSpec['vm']): vm is VmSpec {
  return vm !== undefined && 'vcpus' in vm;
}

/** Stands for the start time of a process that was gone before it could be read: it never matches. */
export const UNKNOWN_START_TIME = -1n;

/**
 * Who a VMM is, for good: a PID is reused once its process is reaped, PID plus start time
 * (/proc/PID/stat field 22) never is. The reaper is the VMM's parent, which records its exit.
 */
export interface ProcessIdentity {
  /** The VMM's own PID, also its process group ID. */
  readonly pid: number;
  readonly startTime: bigint;
  readonly reaperPid: number;
  readonly reaperStartTime: bigint;
}

/** How a process ended, as its parent (the reaper) saw it. Exactly one of code and signal is set. */
export interface ExitStatus {
  readonly pid: number;
  readonly exitCode?: number;
  readonly signal?: string;
  readonly coreDumped: boolean;
  readonly exitedAt: Date;
  /** The end of what this run wrote to its log, as the reaper read it at the exit. */
  readonly logTail?: string;
}

/** `exit code 1`, `signal SIGKILL`, `signal SIGSEGV (core dumped)`. */
export function describeExitStatus(status: Pick<ExitStatus, 'exitCode' | 'signal' | 'coreDumped'>): string {
  if (status.signal !== undefined) return `signal ${status.signal}${status.coreDumped ? ' (core dumped)' : ''}`;
  return `exit code ${status.exitCode}`;
}

/** Why a start is being abandoned: the reason and account its exit is published with. */
export interface StartFailure {
  readonly reason: Extract<ExitReason, 'start-failed' | 'start-timeout'>;
  readonly message: string;
}

/** One process exit, published exactly once with a sequence number. */
export interface ProcessExitEvent {
  readonly sequence: number;
  readonly sandboxId: string;
  readonly pid: number;
  /** Set when the process exited; unset when killed by a signal or lost. */
  readonly exitCode?: number;
  /** Signal name when the process was killed by a signal. */
  readonly signal?: string;
  readonly reason: ExitReason;
  readonly exitedAt: Date;
  readonly startedAt: Date;
  readonly labels: Readonly<Record<string, string>>;
  readonly stderrTail: string;
  readonly message: string;
  /** The daemon sent the signal that ended the process (stop or SignalProcess). */
  readonly signalSentByDaemon: boolean;
  /** The VMM was stopped after a snapshot to this `file://` URL (SnapshotVm, after_snapshot stop). */
  readonly snapshotUrl?: string;
}

export type UnsequencedExit = Omit<ProcessExitEvent, 'sequence'>;

/** A point-in-time copy of a supervised process, safe to hand out. */
export interface ProcessSnapshot {
  readonly sandboxId: string;
  readonly pid: number;
  readonly state: ProcessState;
  readonly mode: LaunchMode;
  readonly socketPath: string;
  readonly networkNamespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly startedAt: Date;
  readonly readyAt?: Date;
  readonly vmmVersion?: string;
  readonly exit?: ProcessExitEvent;
  readonly sandboxDir: string;
  readonly kernelPath?: string;
  readonly rootfsPath: string;
  readonly logPath: string;
  readonly vmState: VmState;
  /** With a vsock device: its host-side socket, reachable from the host. */
  readonly vsockSocket?: string;
}

/**
 * What the daemon knows of a VMM's API socket and Cloud Hypervisor's `<socket>.lock` beside it,
 * each as `<device>:<inode>:<ctime>`: at exit it removes exactly those, never whatever is at the path.
 */
export interface SocketFiles {
  /** The socket the VMM bound, once it answered. */
  readonly socket?: string;
  /** The lock file the VMM made, once it answered (one that was there before is not its own). */
  readonly lock?: string;
  /** The lock file that was there before the launch, if any. */
  readonly lockBefore?: string;
}

/** The run dir's files of one launch: its log (shared by the sandbox's runs) and its reaper's record. */
export interface LaunchFiles {
  readonly logPath: string;
  /** One name per launch: a relaunch of the same ID never meets the last run's files. */
  readonly statusPath: string;
}
