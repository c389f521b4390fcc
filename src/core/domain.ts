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
