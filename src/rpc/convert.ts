import { create } from '@bufbuild/protobuf';
import { type Duration, type Timestamp, timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  ExitReason,
  LaunchMode,
  MemoryRestoreMode,
  type ProcessExit,
  ProcessExitSchema,
  type ProcessInfo,
  ProcessInfoSchema,
  ProcessState,
  type RestoreConfig,
  type StartProcessRequest,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { VmprocError } from '../errors.js';
import type * as domain from '../core/domain.js';

/** Translation between wire messages and the supervisor's plain values; nothing else. */

export function startRequestFromProto(request: StartProcessRequest): domain.StartRequest {
  return {
    sandboxId: request.sandboxId,
    mode: launchModeFromProto(request.mode),
    kernelPath: request.kernelPath,
    rootfsPath: request.rootfsPath,
    networkNamespace: request.networkNamespace,
    ...(request.socketPath !== undefined ? { socketPath: request.socketPath } : {}),
    ...(request.sandboxDir !== undefined ? { sandboxDir: request.sandboxDir } : {}),
    ...(request.readyTimeout ? { readyTimeoutMs: durationToMs('ready_timeout', request.readyTimeout) } : {}),
    ...(request.restore ? { restore: restoreFromProto(request.restore) } : {}),
    labels: request.labels,
  };
}

function launchModeFromProto(mode: LaunchMode): domain.LaunchMode | undefined {
  switch (mode) {
    case LaunchMode.BOOT:
      return 'boot';
    case LaunchMode.RESTORE:
      return 'restore';
    case LaunchMode.UNSPECIFIED:
      return undefined;
    default:
      throw new VmprocError('invalid-argument', `mode ${mode} is not a known LaunchMode; use LAUNCH_MODE_BOOT or LAUNCH_MODE_RESTORE`);
  }
}

function restoreFromProto(restore: RestoreConfig): domain.RestoreSpec {
  let memoryRestoreMode: domain.MemoryRestoreMode | undefined;
  switch (restore.memoryRestoreMode) {
    case MemoryRestoreMode.UNSPECIFIED:
      break;
    case MemoryRestoreMode.COPY:
      memoryRestoreMode = 'Copy';
      break;
    case MemoryRestoreMode.ON_DEMAND:
      memoryRestoreMode = 'OnDemand';
      break;
    default:
      throw new VmprocError(
        'invalid-argument',
        `restore.memory_restore_mode ${restore.memoryRestoreMode} is not known; use MEMORY_RESTORE_MODE_COPY or MEMORY_RESTORE_MODE_ON_DEMAND`,
      );
  }
  return {
    sourceUrl: restore.sourceUrl,
    ...(memoryRestoreMode ? { memoryRestoreMode } : {}),
    resume: restore.resume,
    prefault: restore.prefault,
  };
}

/** Milliseconds of a Duration; a negative or malformed one is the caller's error. */
export function durationToMs(field: string, duration: Duration): number {
  const { seconds, nanos } = duration;
  if (seconds < 0n || nanos < 0 || nanos > 999_999_999) {
    throw new VmprocError('invalid-argument', `${field} must be a non-negative duration`);
  }
  if (seconds > 315_576_000_000n) throw new VmprocError('invalid-argument', `${field} is out of range`);
  return Number(seconds) * 1000 + Math.ceil(nanos / 1_000_000);
}

const STATE_TO_PROTO: Readonly<Record<domain.ProcessState, ProcessState>> = {
  starting: ProcessState.STARTING,
  running: ProcessState.RUNNING,
  stopping: ProcessState.STOPPING,
  exited: ProcessState.EXITED,
};

export function processStatesFromProto(states: readonly ProcessState[]): domain.ProcessState[] {
  return states.map((state) => {
    const found = (Object.keys(STATE_TO_PROTO) as domain.ProcessState[]).find((key) => STATE_TO_PROTO[key] === state);
    if (!found) throw new VmprocError('invalid-argument', `states contains ${state}, which is not a ProcessState to filter on`);
    return found;
  });
}

/** An exit cursor as a JS number; sequences beyond 2^53 cannot have been issued. */
export function sequenceFromProto(sequence: bigint | undefined): number | undefined {
  if (sequence === undefined) return undefined;
  if (sequence > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new VmprocError('out-of-range', `after_sequence ${sequence} is beyond any sequence this daemon has issued`);
  }
  return Number(sequence);
}

const REASON_TO_PROTO: Readonly<Record<domain.ExitReason, ExitReason>> = {
  exited: ExitReason.EXITED,
  signaled: ExitReason.SIGNALED,
  stopped: ExitReason.STOPPED,
  'start-failed': ExitReason.START_FAILED,
  'start-timeout': ExitReason.START_TIMEOUT,
  lost: ExitReason.LOST,
};

export function processInfoToProto(snapshot: domain.ProcessSnapshot): ProcessInfo {
  return create(ProcessInfoSchema, {
    sandboxId: snapshot.sandboxId,
    pid: snapshot.pid,
    state: STATE_TO_PROTO[snapshot.state],
    mode: snapshot.mode === 'boot' ? LaunchMode.BOOT : LaunchMode.RESTORE,
    socketPath: snapshot.socketPath,
    networkNamespace: snapshot.networkNamespace,
    labels: { ...snapshot.labels },
    startedAt: timestamp(snapshot.startedAt),
    ...(snapshot.readyAt ? { readyAt: timestamp(snapshot.readyAt) } : {}),
    vmmVersion: snapshot.vmmVersion ?? '',
    ...(snapshot.exit ? { exit: processExitToProto(snapshot.exit) } : {}),
    sandboxDir: snapshot.sandboxDir,
    kernelPath: snapshot.kernelPath ?? '',
    rootfsPath: snapshot.rootfsPath,
    logPath: snapshot.logPath,
  });
}

export function processExitToProto(exit: domain.ProcessExitEvent): ProcessExit {
  return create(ProcessExitSchema, {
    sequence: BigInt(exit.sequence),
    sandboxId: exit.sandboxId,
    pid: exit.pid,
    ...(exit.exitCode !== undefined ? { exitCode: exit.exitCode } : {}),
    ...(exit.signal !== undefined ? { signal: exit.signal } : {}),
    reason: REASON_TO_PROTO[exit.reason],
    exitedAt: timestamp(exit.exitedAt),
    startedAt: timestamp(exit.startedAt),
    labels: { ...exit.labels },
    stderrTail: exit.stderrTail,
    message: exit.message,
    signalSentByDaemon: exit.signalSentByDaemon,
  });
}

function timestamp(date: Date): Timestamp {
  return timestampFromDate(date);
}
