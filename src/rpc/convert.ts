import { create } from '@bufbuild/protobuf';
import { type Duration, type Timestamp, timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  EventKind,
  EventOrigin,
  ExitReason,
  type ProcessEvent,
  ProcessEventSchema,
  LaunchMode,
  MemoryRestoreMode,
  type ProcessExit,
  ProcessExitSchema,
  type ProcessInfo,
  ProcessInfoSchema,
  ProcessState,
  type RestoreConfig,
  AfterSnapshot,
  type GetVmCountersResponse,
  GetVmCountersResponseSchema,
  type ResizeVmRequest,
  SerialMode,
  type StartProcessRequest,
  type VmConfig,
  type VmInfo,
  VmInfoSchema,
  VmState,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { VmprocError } from '../errors.js';
import type * as domain from '../core/domain.js';
import type * as events from '../core/events.js';

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
    ...(request.vm ? { vm: vmFromProto(request.vm) } : {}),
  };
}

function vmFromProto(vm: VmConfig): domain.VmRequest {
  let serial: 'log' | 'off' | undefined;
  switch (vm.serial) {
    case SerialMode.UNSPECIFIED:
      break;
    case SerialMode.LOG:
      serial = 'log';
      break;
    case SerialMode.OFF:
      serial = 'off';
      break;
    default:
      throw new VmprocError('invalid-argument', `vm.serial ${vm.serial} is not a known SerialMode; use SERIAL_MODE_LOG or SERIAL_MODE_OFF`);
  }
  return {
    vcpus: vm.vcpus,
    maxVcpus: vm.maxVcpus,
    memoryMib: safeNumber('vm.memory_mib', vm.memoryMib),
    maxMemoryMib: safeNumber('vm.max_memory_mib', vm.maxMemoryMib),
    cmdline: vm.cmdline,
    initramfsPath: vm.initramfsPath,
    rootfsReadonly: vm.rootfsReadonly,
    disks: vm.disks.map((disk) => ({ id: disk.id, path: disk.path, readonly: disk.readonly })),
    net: vm.net.map((nic) => ({ id: nic.id, tap: nic.tap, mac: nic.mac })),
    ...(serial ? { serial } : {}),
    ...(vm.vsock ? { vsock: { cid: vm.vsock.cid } } : {}),
    pvpanic: vm.pvpanic,
  };
}

/** A uint64 of the wire as a number; beyond 2^53 it is out of any range anyway. */
function safeNumber(field: string, value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new VmprocError('invalid-argument', `${field} ${value} is out of range`);
  return Number(value);
}

export function afterSnapshotFromProto(after: AfterSnapshot): domain.AfterSnapshot {
  switch (after) {
    case AfterSnapshot.RESUME:
      return 'resume';
    case AfterSnapshot.STAY_PAUSED:
      return 'stay-paused';
    case AfterSnapshot.STOP:
      return 'stop';
    case AfterSnapshot.UNSPECIFIED:
      throw new VmprocError('invalid-argument', 'after_snapshot is required: AFTER_SNAPSHOT_RESUME, AFTER_SNAPSHOT_STAY_PAUSED or AFTER_SNAPSHOT_STOP');
    default:
      throw new VmprocError('invalid-argument', `after_snapshot ${after} is not a known AfterSnapshot`);
  }
}

export function resizeFromProto(request: ResizeVmRequest): domain.VmResize {
  return {
    ...(request.vcpus !== undefined ? { vcpus: request.vcpus } : {}),
    ...(request.memoryMib !== undefined ? { memoryMib: safeNumber('memory_mib', request.memoryMib) } : {}),
    ...(request.balloonMib !== undefined ? { balloonMib: safeNumber('balloon_mib', request.balloonMib) } : {}),
  };
}

const VM_STATE_TO_PROTO: Readonly<Record<domain.VmState, VmState>> = {
  'not-created': VmState.NOT_CREATED,
  created: VmState.CREATED,
  running: VmState.RUNNING,
  paused: VmState.PAUSED,
  'shut-down': VmState.SHUT_DOWN,
};

export function vmInfoToProto(info: domain.VmInfo): VmInfo {
  return create(VmInfoSchema, {
    state: VM_STATE_TO_PROTO[info.state],
    vcpus: info.vcpus,
    maxVcpus: info.maxVcpus,
    memoryBytes: BigInt(info.memoryBytes),
    memoryActualBytes: BigInt(info.memoryActualBytes),
    devices: info.devices.map((device) => ({ id: device.id, kind: device.kind, pciBdf: device.pciBdf })),
    rawJson: info.rawJson,
  });
}

export function countersToProto(counters: domain.VmCounters): GetVmCountersResponse {
  return create(GetVmCountersResponseSchema, {
    devices: Object.fromEntries(Object.entries(counters).map(([device, values]) => [device, { counters: { ...values } }])),
  });
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
    vmState: VM_STATE_TO_PROTO[snapshot.vmState],
    vsockSocket: snapshot.vsockSocket ?? '',
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
    snapshotUrl: exit.snapshotUrl ?? '',
  });
}

function timestamp(date: Date): Timestamp {
  return timestampFromDate(date);
}

const KIND_TO_PROTO: Readonly<Record<events.EventKind, EventKind>> = {
  started: EventKind.STARTED,
  ready: EventKind.READY,
  'vm-booted': EventKind.VM_BOOTED,
  paused: EventKind.PAUSED,
  resumed: EventKind.RESUMED,
  snapshotted: EventKind.SNAPSHOTTED,
  restored: EventKind.RESTORED,
  resized: EventKind.RESIZED,
  'guest-panic': EventKind.GUEST_PANIC,
  'guest-reboot': EventKind.GUEST_REBOOT,
  'guest-shutdown': EventKind.GUEST_SHUTDOWN,
  exited: EventKind.EXITED,
};

/** WatchEventsRequest.kinds as event kinds; INVALID_ARGUMENT for one that is not an event to filter on. */
export function eventKindsFromProto(kinds: readonly EventKind[]): events.EventKind[] {
  return kinds.map((kind) => {
    const found = (Object.keys(KIND_TO_PROTO) as events.EventKind[]).find((key) => KIND_TO_PROTO[key] === kind);
    if (!found) {
      const name = EventKind[kind] ? `EVENT_KIND_${EventKind[kind]}` : String(kind);
      throw new VmprocError('invalid-argument', `kinds contains ${name}, which is not an event kind to filter on (PROGRESS markers come unasked)`);
    }
    return found;
  });
}

export function processEventToProto(event: events.ProcessEvent): ProcessEvent {
  return create(ProcessEventSchema, {
    sequence: BigInt(event.sequence),
    sandboxId: event.sandboxId,
    kind: KIND_TO_PROTO[event.kind],
    time: timestamp(event.time),
    labels: { ...event.labels },
    origin: event.origin === 'daemon' ? EventOrigin.DAEMON : EventOrigin.VMM,
    pid: event.pid,
    ...(event.detail ? { detail: eventDetailToProto(event.detail) } : {}),
  });
}

function eventDetailToProto(detail: events.EventDetail): ProcessEvent['detail'] {
  switch (detail.kind) {
    case 'snapshot':
      return { case: 'snapshot', value: { $typeName: 'vmprocess.v1.SnapshotEventDetail', snapshotUrl: detail.snapshotUrl } };
    case 'restore':
      return {
        case: 'restore',
        value: {
          $typeName: 'vmprocess.v1.RestoreEventDetail',
          sourceUrl: detail.sourceUrl,
          memoryRestoreMode: detail.memoryRestoreMode === 'OnDemand' ? MemoryRestoreMode.ON_DEMAND : detail.memoryRestoreMode === 'Copy' ? MemoryRestoreMode.COPY : MemoryRestoreMode.UNSPECIFIED,
        },
      };
    case 'resize':
      return {
        case: 'resize',
        value: {
          $typeName: 'vmprocess.v1.ResizeEventDetail',
          ...(detail.vcpus !== undefined ? { vcpus: detail.vcpus } : {}),
          ...(detail.memoryMib !== undefined ? { memoryMib: BigInt(detail.memoryMib) } : {}),
          ...(detail.balloonMib !== undefined ? { balloonMib: BigInt(detail.balloonMib) } : {}),
        },
      };
    case 'guest-panic':
      return { case: 'guestPanic', value: { $typeName: 'vmprocess.v1.GuestPanicEventDetail', event: detail.event } };
    case 'exit':
      return { case: 'exit', value: processExitToProto(detail.exit) };
  }
}
