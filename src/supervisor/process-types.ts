import type { LaunchMode } from '../launch/launch-command.js';

export type { LaunchMode };

/** STARTING -> RUNNING -> STOPPING -> EXITED (see process-state.ts for the legal moves). */
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
