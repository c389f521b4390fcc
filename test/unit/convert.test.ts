import { describe, expect, it } from '@jest/globals';
import { create, fromBinary, isFieldSet, toBinary } from '@bufbuild/protobuf';
import { DurationSchema, timestampDate } from '@bufbuild/protobuf/wkt';
import {
  ExitReason,
  LaunchMode,
  MemoryRestoreMode,
  ProcessExitSchema,
  ProcessInfoSchema,
  ProcessState,
  RestoreConfigSchema,
  StartProcessRequestSchema, VmState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import {
  durationToMs,
  processExitToProto,
  processInfoToProto,
  processStatesFromProto,
  sequenceFromProto,
  startRequestFromProto,
} from '../../src/rpc/convert.js';
import type * as domain from '../../src/core/domain.js';
import { expectThrowsVmprocError } from './support/errors.js';

const duration = (seconds: bigint, nanos = 0) => create(DurationSchema, { seconds, nanos });

describe('startRequestFromProto', () => {
  it('converts a full boot request', () => {
    const request = create(StartProcessRequestSchema, {
      sandboxId: 'sb-1',
      mode: LaunchMode.BOOT,
      kernelPath: '/k',
      rootfsPath: '/r',
      networkNamespace: 'ns',
      socketPath: '/s.sock',
      sandboxDir: '/sb',
      readyTimeout: duration(2n, 500_000_000),
      labels: { team: 'vm' },
    });
    expect(startRequestFromProto(request)).toEqual({
      sandboxId: 'sb-1',
      mode: 'boot',
      kernelPath: '/k',
      rootfsPath: '/r',
      networkNamespace: 'ns',
      socketPath: '/s.sock',
      sandboxDir: '/sb',
      readyTimeoutMs: 2500,
      labels: { team: 'vm' },
    });
  });

  it('leaves unset optional fields out, so validation applies its defaults', () => {
    const converted = startRequestFromProto(create(StartProcessRequestSchema, { sandboxId: 'sb-1', mode: LaunchMode.RESTORE }));
    expect(converted.mode).toBe('restore');
    for (const key of ['socketPath', 'sandboxDir', 'readyTimeoutMs', 'restore'] as const) {
      expect(converted).not.toHaveProperty(key);
    }
    expect(converted.kernelPath).toBe('');
    expect(converted.labels).toEqual({});
  });

  it('keeps an explicitly empty optional string as given (validation treats it as not given)', () => {
    const converted = startRequestFromProto(create(StartProcessRequestSchema, { sandboxId: 'a', mode: LaunchMode.BOOT, socketPath: '', sandboxDir: '' }));
    expect(converted.socketPath).toBe('');
    expect(converted.sandboxDir).toBe('');
  });

  it('maps LAUNCH_MODE_UNSPECIFIED to no mode (validation then asks for one)', () => {
    expect(startRequestFromProto(create(StartProcessRequestSchema, { sandboxId: 'a' })).mode).toBeUndefined();
  });

  it('refuses an unknown LaunchMode number, even one that arrived over the wire', () => {
    const bytes = toBinary(StartProcessRequestSchema, create(StartProcessRequestSchema, { sandboxId: 'a', mode: 7 as LaunchMode }));
    const decoded = fromBinary(StartProcessRequestSchema, bytes);
    expect(decoded.mode).toBe(7);
    expectThrowsVmprocError(() => startRequestFromProto(decoded), 'invalid-argument', 'mode 7', 'LAUNCH_MODE_BOOT');
  });

  it.each([
    [MemoryRestoreMode.COPY, 'Copy'],
    [MemoryRestoreMode.ON_DEMAND, 'OnDemand'],
  ] as const)('maps memory restore mode %i to %s', (mode, expected) => {
    const restore = create(RestoreConfigSchema, { sourceUrl: 'file:///snap', memoryRestoreMode: mode, resume: true, prefault: true });
    expect(startRequestFromProto(create(StartProcessRequestSchema, { mode: LaunchMode.RESTORE, restore })).restore).toEqual({
      sourceUrl: 'file:///snap',
      memoryRestoreMode: expected,
      resume: true,
      prefault: true,
    });
  });

  it('leaves the memory restore mode to the VMM when unspecified', () => {
    const restore = create(RestoreConfigSchema, { sourceUrl: 'file:///snap' });
    const converted = startRequestFromProto(create(StartProcessRequestSchema, { mode: LaunchMode.RESTORE, restore }));
    expect(converted.restore).toEqual({ sourceUrl: 'file:///snap', resume: false, prefault: false });
    expect(converted.restore).not.toHaveProperty('memoryRestoreMode');
  });

  it('refuses an unknown memory restore mode number', () => {
    const restore = create(RestoreConfigSchema, { sourceUrl: 'file:///snap', memoryRestoreMode: 9 as MemoryRestoreMode });
    expectThrowsVmprocError(
      () => startRequestFromProto(create(StartProcessRequestSchema, { mode: LaunchMode.RESTORE, restore })),
      'invalid-argument',
      'restore.memory_restore_mode 9',
    );
  });

  it('refuses a negative ready_timeout, naming the field', () => {
    expectThrowsVmprocError(
      () => startRequestFromProto(create(StartProcessRequestSchema, { mode: LaunchMode.BOOT, readyTimeout: duration(-1n) })),
      'invalid-argument',
      'ready_timeout',
    );
  });

  it('passes a zero ready_timeout through as 0 ms (validation refuses it)', () => {
    expect(startRequestFromProto(create(StartProcessRequestSchema, { mode: LaunchMode.BOOT, readyTimeout: duration(0n) })).readyTimeoutMs).toBe(0);
  });
});

describe('durationToMs', () => {
  it.each([
    [0n, 0, 0],
    [1n, 0, 1000],
    [2n, 500_000_000, 2500],
    [0n, 1, 1],
    [0n, 1_000_000, 1],
    [0n, 1_000_001, 2],
    [0n, 999_999_999, 1000],
    [315_576_000_000n, 0, 315_576_000_000_000],
  ])('%ss + %ins is %i ms (nanos rounded up)', (seconds, nanos, ms) => {
    expect(durationToMs('d', duration(seconds, nanos))).toBe(ms);
  });

  it.each([
    [-1n, 0],
    [0n, -1],
    [1n, -1],
    [-1n, -5],
    [0n, 1_000_000_000],
  ])('refuses %ss + %ins as not a non-negative duration', (seconds, nanos) => {
    expectThrowsVmprocError(() => durationToMs('grace_period', duration(seconds, nanos)), 'invalid-argument', 'grace_period must be a non-negative duration');
  });

  it('refuses more than 10000 years', () => {
    expectThrowsVmprocError(() => durationToMs('grace_period', duration(315_576_000_001n)), 'invalid-argument', 'grace_period is out of range');
  });
});

describe('processStatesFromProto', () => {
  it('maps every state', () => {
    expect(processStatesFromProto([ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING, ProcessState.EXITED])).toEqual([
      'starting',
      'running',
      'stopping',
      'exited',
    ]);
    expect(processStatesFromProto([])).toEqual([]);
  });

  it.each([ProcessState.UNSPECIFIED, 5 as ProcessState, -1 as ProcessState])('refuses %i', (state) => {
    expectThrowsVmprocError(() => processStatesFromProto([ProcessState.RUNNING, state]), 'invalid-argument', `states contains ${state}`);
  });
});

describe('sequenceFromProto', () => {
  it('keeps an unset cursor unset', () => {
    expect(sequenceFromProto(undefined)).toBeUndefined();
  });

  it.each([0n, 1n, 12345n, BigInt(Number.MAX_SAFE_INTEGER)])('converts %p exactly', (sequence) => {
    expect(sequenceFromProto(sequence)).toBe(Number(sequence));
  });

  it.each([2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n])('refuses %p as out-of-range', (sequence) => {
    expectThrowsVmprocError(() => sequenceFromProto(sequence), 'out-of-range', `after_sequence ${sequence}`);
  });
});

const STARTED = new Date(1_700_000_000_123);
const EXITED = new Date(1_700_000_005_456);

function exitEvent(extra: Partial<domain.ProcessExitEvent> = {}): domain.ProcessExitEvent {
  return {
    sequence: 7,
    sandboxId: 'sb-1',
    pid: 4242,
    reason: 'exited',
    exitedAt: EXITED,
    startedAt: STARTED,
    labels: Object.freeze({ team: 'vm' }),
    stderrTail: 'last line',
    message: 'exit code 3',
    signalSentByDaemon: false,
    ...extra,
  };
}

/** Encodes and decodes, so presence is checked as a client would see it. */
const overTheWire = (exit: ReturnType<typeof processExitToProto>) => fromBinary(ProcessExitSchema, toBinary(ProcessExitSchema, exit));

describe('processExitToProto', () => {
  it('copies every field', () => {
    const proto = processExitToProto(exitEvent({ exitCode: 3 }));
    expect(proto.sequence).toBe(7n);
    expect(proto.sandboxId).toBe('sb-1');
    expect(proto.pid).toBe(4242);
    expect(proto.exitCode).toBe(3);
    expect(proto.reason).toBe(ExitReason.EXITED);
    expect(timestampDate(proto.exitedAt!)).toEqual(EXITED);
    expect(timestampDate(proto.startedAt!)).toEqual(STARTED);
    expect(proto.labels).toEqual({ team: 'vm' });
    expect(proto.stderrTail).toBe('last line');
    expect(proto.message).toBe('exit code 3');
    expect(proto.signalSentByDaemon).toBe(false);
  });

  it('sets exit_code (even 0) and leaves signal unset for a normal exit', () => {
    const wire = overTheWire(processExitToProto(exitEvent({ exitCode: 0 })));
    expect(isFieldSet(wire, ProcessExitSchema.field.exitCode)).toBe(true);
    expect(wire.exitCode).toBe(0);
    expect(isFieldSet(wire, ProcessExitSchema.field.signal)).toBe(false);
  });

  it('sets signal and leaves exit_code unset for a death by signal', () => {
    const wire = overTheWire(processExitToProto(exitEvent({ signal: 'SIGKILL', reason: 'signaled', signalSentByDaemon: true })));
    expect(isFieldSet(wire, ProcessExitSchema.field.signal)).toBe(true);
    expect(wire.signal).toBe('SIGKILL');
    expect(isFieldSet(wire, ProcessExitSchema.field.exitCode)).toBe(false);
    expect(wire.exitCode).toBeUndefined();
    expect(wire.signalSentByDaemon).toBe(true);
  });

  it('leaves both unset for a lost exit', () => {
    const wire = overTheWire(processExitToProto(exitEvent({ reason: 'lost' })));
    expect(isFieldSet(wire, ProcessExitSchema.field.exitCode)).toBe(false);
    expect(isFieldSet(wire, ProcessExitSchema.field.signal)).toBe(false);
    expect(wire.reason).toBe(ExitReason.LOST);
  });

  it.each([
    ['exited', ExitReason.EXITED],
    ['signaled', ExitReason.SIGNALED],
    ['stopped', ExitReason.STOPPED],
    ['start-failed', ExitReason.START_FAILED],
    ['start-timeout', ExitReason.START_TIMEOUT],
    ['lost', ExitReason.LOST],
  ] as const)('maps reason %s', (reason, expected) => {
    expect(processExitToProto(exitEvent({ reason })).reason).toBe(expected);
  });

  it('copies labels instead of sharing the frozen domain object', () => {
    const event = exitEvent();
    const proto = processExitToProto(event);
    expect(proto.labels).not.toBe(event.labels);
    proto.labels.extra = 'x';
    expect(event.labels).toEqual({ team: 'vm' });
  });

  it('keeps the sequence exact up to 2^53 - 1', () => {
    expect(processExitToProto(exitEvent({ sequence: Number.MAX_SAFE_INTEGER })).sequence).toBe(BigInt(Number.MAX_SAFE_INTEGER));
  });
});

describe('processInfoToProto', () => {
  const SNAPSHOT: domain.ProcessSnapshot = {
    sandboxId: 'sb-1',
    pid: 4242,
    state: 'running',
    mode: 'boot',
    socketPath: '/run/vmprocd/sb-1.sock',
    networkNamespace: 'ns-1',
    labels: Object.freeze({ team: 'vm' }),
    startedAt: STARTED,
    readyAt: EXITED,
    vmmVersion: '53.0.0',
    sandboxDir: '/run/vmprocd/sandbox',
    kernelPath: '/srv/vmlinux',
    rootfsPath: '/srv/rootfs.ext4',
    logPath: '/run/vmprocd/sb-1.log',
    vmState: 'paused',
    vsockSocket: '/proc/4242/root/run/vmprocd/sandbox/vsock.sock',
  };

  it('copies every field of a running process, and survives the wire', () => {
    const info = fromBinary(ProcessInfoSchema, toBinary(ProcessInfoSchema, processInfoToProto(SNAPSHOT)));
    expect(info.sandboxId).toBe('sb-1');
    expect(info.pid).toBe(4242);
    expect(info.state).toBe(ProcessState.RUNNING);
    expect(info.mode).toBe(LaunchMode.BOOT);
    expect(info.socketPath).toBe('/run/vmprocd/sb-1.sock');
    expect(info.networkNamespace).toBe('ns-1');
    expect(info.labels).toEqual({ team: 'vm' });
    expect(timestampDate(info.startedAt!)).toEqual(STARTED);
    expect(timestampDate(info.readyAt!)).toEqual(EXITED);
    expect(info.vmmVersion).toBe('53.0.0');
    expect(info.exit).toBeUndefined();
    expect(info.sandboxDir).toBe('/run/vmprocd/sandbox');
    expect(info.kernelPath).toBe('/srv/vmlinux');
    expect(info.rootfsPath).toBe('/srv/rootfs.ext4');
    expect(info.logPath).toBe('/run/vmprocd/sb-1.log');
    expect(info.vmState).toBe(VmState.PAUSED);
    expect(info.vsockSocket).toBe('/proc/4242/root/run/vmprocd/sandbox/vsock.sock');
  });

  it('leaves ready_at unset and strings empty before ready, in restore mode', () => {
    const { readyAt: _r, vmmVersion: _v, kernelPath: _k, ...starting } = SNAPSHOT;
    const info = processInfoToProto({ ...starting, state: 'starting', mode: 'restore' });
    expect(info.readyAt).toBeUndefined();
    expect(isFieldSet(info, ProcessInfoSchema.field.readyAt)).toBe(false);
    expect(info.vmmVersion).toBe('');
    expect(info.kernelPath).toBe('');
    expect(info.mode).toBe(LaunchMode.RESTORE);
    expect(info.state).toBe(ProcessState.STARTING);
  });

  it.each([
    ['starting', ProcessState.STARTING],
    ['running', ProcessState.RUNNING],
    ['stopping', ProcessState.STOPPING],
    ['exited', ProcessState.EXITED],
  ] as const)('maps state %s', (state, expected) => {
    expect(processInfoToProto({ ...SNAPSHOT, state }).state).toBe(expected);
  });

  it('embeds the exit of an exited process', () => {
    const exit = exitEvent({ signal: 'SIGTERM', reason: 'stopped', signalSentByDaemon: true });
    const info = processInfoToProto({ ...SNAPSHOT, state: 'exited', exit });
    expect(info.exit?.sequence).toBe(7n);
    expect(info.exit?.signal).toBe('SIGTERM');
    expect(info.exit?.exitCode).toBeUndefined();
    expect(info.exit?.reason).toBe(ExitReason.STOPPED);
  });

  it('copies labels instead of sharing the frozen domain object', () => {
    const info = processInfoToProto(SNAPSHOT);
    expect(info.labels).not.toBe(SNAPSHOT.labels);
    info.labels.extra = 'x';
    expect(SNAPSHOT.labels).toEqual({ team: 'vm' });
  });
});
