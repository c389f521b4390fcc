import { describe, expect, it } from '@jest/globals';
import { create, type DescMessage, equals, fromBinary, isFieldSet, type MessageShape, toBinary } from '@bufbuild/protobuf';
import {
  GetProcessResponseSchema,
  ListProcessesResponseSchema,
  ProcessExitSchema,
  ProcessInfoSchema,
  SignalProcessResponseSchema,
  StartProcessResponseSchema,
  StopProcessResponseSchema,
  WaitProcessResponseSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { processExitToProto, processInfoToProto } from '../../src/rpc/convert.js';
import { encodedProcessExit, encodedProcessInfo, encodeListResponse, encodeProcessResponse } from '../../src/rpc/wire-cache.js';
import type { ProcessExitEvent, ProcessSnapshot } from '../../src/core/domain.js';

const T0 = new Date(Date.UTC(2024, 4, 6, 7, 8, 9, 123));

function exitEvent(overrides: Partial<ProcessExitEvent> = {}): ProcessExitEvent {
  return {
    sequence: 42,
    sandboxId: 'sb-1',
    pid: 4242,
    exitCode: 0,
    reason: 'exited',
    exitedAt: new Date(T0.getTime() + 61_001),
    startedAt: T0,
    labels: { team: 'a', 'tier/x': 'ünïcode €😀' },
    stderrTail: 'line 1\nline 2 ☃',
    message: 'exit code 0',
    signalSentByDaemon: false,
    ...overrides,
  };
}

function running(overrides: Partial<ProcessSnapshot> = {}): ProcessSnapshot {
  return {
    sandboxId: 'sb-1',
    pid: 4242,
    state: 'running',
    mode: 'boot',
    socketPath: '/run/vmprocd/sockets/sb-1.sock',
    networkNamespace: 'ns-1',
    labels: { team: 'a', env: 'prod' },
    startedAt: T0,
    readyAt: new Date(T0.getTime() + 250),
    vmmVersion: 'cloud-hypervisor v41.0',
    sandboxDir: '/run/vmprocd/sandbox/sb-1',
    kernelPath: '/srv/vmlinux',
    rootfsPath: '/srv/rootfs.ext4',
    logPath: '/run/vmprocd/logs/sb-1.log',
    vmState: 'running',
    ...overrides,
  };
}

/** Snapshots covering every optional field set and unset, exit code vs signal, every state. */
const SNAPSHOTS: Array<[string, () => ProcessSnapshot]> = [
  ['running, every field', () => running()],
  ['starting: no readyAt, no vmmVersion, no labels', () => running({ state: 'starting', readyAt: undefined, vmmVersion: undefined, labels: {} })],
  ['restore mode without a kernel', () => running({ mode: 'restore', kernelPath: undefined })],
  ['stopping', () => running({ state: 'stopping' })],
  ['exited with code 0', () => running({ state: 'exited', exit: exitEvent() })],
  ['exited with code 137', () => running({ state: 'exited', exit: exitEvent({ exitCode: 137, message: 'exit code 137' }) })],
  [
    'exited by signal, sent by the daemon',
    () => running({ state: 'exited', exit: exitEvent({ exitCode: undefined, signal: 'SIGKILL', reason: 'stopped', signalSentByDaemon: true }) }),
  ],
  [
    'start failed before ready, pid 0, sequence 1',
    () => running({ state: 'exited', pid: 0, readyAt: undefined, vmmVersion: undefined, exit: exitEvent({ sequence: 1, pid: 0, exitCode: undefined, reason: 'start-failed', stderrTail: '', labels: {} }) }),
  ],
  ['lost, the largest sequence', () => running({ state: 'exited', exit: exitEvent({ sequence: Number.MAX_SAFE_INTEGER, exitCode: undefined, reason: 'lost' }) })],
  ['pid at int32 max, a date before 1970', () => running({ pid: 2 ** 31 - 1, startedAt: new Date(-1500) })],
];

const EXITS: Array<[string, () => ProcessExitEvent]> = [
  ['exit code 0 (an optional field set to its default)', () => exitEvent()],
  ['exit code 255', () => exitEvent({ exitCode: 255 })],
  ['signal, core dump message', () => exitEvent({ exitCode: undefined, signal: 'SIGSEGV', reason: 'signaled', message: 'signal SIGSEGV (core dumped)' })],
  ['neither code nor signal (lost)', () => exitEvent({ exitCode: undefined, reason: 'lost' })],
  ['sequence 0', () => exitEvent({ sequence: 0 })],
  ['sequence 2^32 + 1', () => exitEvent({ sequence: 2 ** 32 + 1 })],
  ['sequence 2^53 - 1', () => exitEvent({ sequence: Number.MAX_SAFE_INTEGER })],
  ['no labels, empty strings', () => exitEvent({ labels: {}, stderrTail: '', message: '' })],
  ['start timeout', () => exitEvent({ reason: 'start-timeout', exitCode: undefined, signal: 'SIGKILL', signalSentByDaemon: true })],
];

/** The reference: what protobuf-es itself encodes for `init` of `schema`. */
function reference<Desc extends DescMessage>(schema: Desc, init: Parameters<typeof create<Desc>>[1]): { message: MessageShape<Desc>; bytes: Uint8Array } {
  const message = create(schema, init);
  return { message, bytes: toBinary(schema, message) };
}

function expectSameMessage<Desc extends DescMessage>(schema: Desc, bytes: Uint8Array, expected: { message: MessageShape<Desc>; bytes: Uint8Array }): void {
  const decoded = fromBinary(schema, bytes);
  expect(equals(schema, decoded, expected.message)).toBe(true);
  expect(decoded).toEqual(fromBinary(schema, expected.bytes));
  // Same field order and encoding, so the very same bytes.
  expect(Buffer.from(bytes)).toEqual(Buffer.from(expected.bytes));
}

const PROCESS_RESPONSES = [
  ['GetProcessResponse', GetProcessResponseSchema],
  ['StartProcessResponse', StartProcessResponseSchema],
  ['StopProcessResponse', StopProcessResponseSchema],
  ['SignalProcessResponse', SignalProcessResponseSchema],
  ['WaitProcessResponse', WaitProcessResponseSchema],
] as const;

describe('encodeProcessResponse', () => {
  describe.each(SNAPSHOTS)('%s', (_what, snapshot) => {
    it.each(PROCESS_RESPONSES)('decodes as %s to what create + toBinary give', (_name, schema) => {
      const s = snapshot();
      expectSameMessage(schema, encodeProcessResponse(s), reference(schema, { process: processInfoToProto(s) }));
    });
  });

  it('keeps an exit code of 0 distinct from no exit code', () => {
    const withCode = fromBinary(GetProcessResponseSchema, encodeProcessResponse(running({ state: 'exited', exit: exitEvent({ exitCode: 0 }) })));
    expect(withCode.process!.exit!.exitCode).toBe(0);
    expect(isFieldSet(withCode.process!.exit!, ProcessExitSchema.field.exitCode)).toBe(true);
    expect(withCode.process!.exit!.signal).toBeUndefined();
    const bySignal = fromBinary(GetProcessResponseSchema, encodeProcessResponse(running({ state: 'exited', exit: exitEvent({ exitCode: undefined, signal: 'SIGTERM' }) })));
    expect(bySignal.process!.exit!.exitCode).toBeUndefined();
    expect(bySignal.process!.exit!.signal).toBe('SIGTERM');
  });

  it('carries the fields a client reads', () => {
    const decoded = fromBinary(GetProcessResponseSchema, encodeProcessResponse(running({ state: 'exited', exit: exitEvent({ sequence: Number.MAX_SAFE_INTEGER }) })));
    expect(decoded.process).toMatchObject({ sandboxId: 'sb-1', pid: 4242, vmmVersion: 'cloud-hypervisor v41.0', labels: { team: 'a', env: 'prod' } });
    expect(decoded.process!.exit!.sequence).toBe(BigInt(Number.MAX_SAFE_INTEGER));
    expect(decoded.process!.exit!.labels).toEqual({ team: 'a', 'tier/x': 'ünïcode €😀' });
    expect(decoded.process!.startedAt!.nanos).toBe(123_000_000);
  });
});

describe('encodeListResponse', () => {
  const all = () => SNAPSHOTS.map(([, make]) => make());

  it.each([0, 1, 7, 2 ** 31, 2 ** 32 + 5, Number.MAX_SAFE_INTEGER])('decodes to create + toBinary for every snapshot, exit_sequence %d', (sequence) => {
    const snapshots = all();
    const bytes = encodeListResponse(snapshots, sequence);
    const expected = reference(ListProcessesResponseSchema, { processes: snapshots.map(processInfoToProto), exitSequence: BigInt(sequence) });
    expectSameMessage(ListProcessesResponseSchema, bytes, expected);
    expect(fromBinary(ListProcessesResponseSchema, bytes).exitSequence).toBe(BigInt(sequence));
    expect(fromBinary(ListProcessesResponseSchema, bytes).processes).toHaveLength(snapshots.length);
  });

  it('encodes an empty list with sequence 0 as an empty message', () => {
    const bytes = encodeListResponse([], 0);
    expect(bytes.length).toBe(0);
    expectSameMessage(ListProcessesResponseSchema, bytes, reference(ListProcessesResponseSchema, {}));
  });

  it('encodes an empty list with a sequence', () => {
    expectSameMessage(ListProcessesResponseSchema, encodeListResponse([], 9), reference(ListProcessesResponseSchema, { exitSequence: 9n }));
  });

  it('keeps the order of the snapshots, repeats included', () => {
    const a = running({ sandboxId: 'a' });
    const b = running({ sandboxId: 'b', state: 'starting' });
    const decoded = fromBinary(ListProcessesResponseSchema, encodeListResponse([b, a, b], 3));
    expect(decoded.processes.map((p) => p.sandboxId)).toEqual(['b', 'a', 'b']);
  });
});

describe('encodedProcessExit', () => {
  it.each(EXITS)('%s: decodes to processExitToProto, byte for byte', (_what, event) => {
    const e = event();
    expectSameMessage(ProcessExitSchema, encodedProcessExit(e), reference(ProcessExitSchema, processExitToProto(e)));
  });

  it('encodes a sequence-0 exit without the sequence field, a large one exactly', () => {
    expect(fromBinary(ProcessExitSchema, encodedProcessExit(exitEvent({ sequence: 0 }))).sequence).toBe(0n);
    expect(fromBinary(ProcessExitSchema, encodedProcessExit(exitEvent({ sequence: Number.MAX_SAFE_INTEGER }))).sequence).toBe(9007199254740991n);
  });
});

describe('caching by identity', () => {
  it('returns the same bytes object for the same exit event, and new bytes for a new one', () => {
    const e = exitEvent();
    const first = encodedProcessExit(e);
    expect(encodedProcessExit(e)).toBe(first);
    const copy = { ...e };
    const other = encodedProcessExit(copy);
    expect(other).not.toBe(first);
    expect(Buffer.from(other)).toEqual(Buffer.from(first));
  });

  it('returns the same ProcessInfo bytes for the same snapshot, and encodes a new snapshot anew', () => {
    const s = running();
    const first = encodedProcessInfo(s);
    expect(encodedProcessInfo(s)).toBe(first);
    const next = { ...s, state: 'stopping' as const };
    const encoded = encodedProcessInfo(next);
    expect(encoded).not.toBe(first);
    expect(fromBinary(ProcessInfoSchema, encoded)).toEqual(processInfoToProto(next));
  });

  it('reuses the cached bytes: a snapshot encoded once is not re-read (snapshots are immutable by contract)', () => {
    const s = running({ vmmVersion: 'v1' });
    const e = exitEvent({ message: 'before' });
    encodedProcessInfo(s);
    encodedProcessExit(e);
    // Changing the object behind the cache's back shows the bytes come from the cache.
    (s as { vmmVersion?: string }).vmmVersion = 'v2';
    (e as { message: string }).message = 'after';
    expect(fromBinary(GetProcessResponseSchema, encodeProcessResponse(s)).process!.vmmVersion).toBe('v1');
    expect(fromBinary(ListProcessesResponseSchema, encodeListResponse([s], 1)).processes[0]!.vmmVersion).toBe('v1');
    expect(fromBinary(ProcessExitSchema, encodedProcessExit(e)).message).toBe('before');
    // A new object with the change is encoded with it.
    expect(fromBinary(GetProcessResponseSchema, encodeProcessResponse({ ...s })).process!.vmmVersion).toBe('v2');
  });

  it('shares one ProcessInfo encoding between Get and List responses', () => {
    const s = running();
    const info = encodedProcessInfo(s);
    const response = encodeProcessResponse(s);
    const list = encodeListResponse([s], 0);
    // Tag 0x0a (field 1, length-delimited), a varint length, then the cached bytes.
    expect(Buffer.from(response).subarray(response.length - info.length)).toEqual(Buffer.from(info));
    expect(Buffer.from(list).subarray(list.length - info.length)).toEqual(Buffer.from(info));
    expect(encodedProcessInfo(s)).toBe(info);
  });

  it('encodes an exit inside a ProcessInfo exactly as on its own', () => {
    const e = exitEvent();
    const bytes = encodedProcessExit(e);
    const s = running({ state: 'exited', exit: e });
    const decoded = fromBinary(GetProcessResponseSchema, encodeProcessResponse(s));
    expect(toBinary(ProcessExitSchema, decoded.process!.exit!)).toEqual(bytes);
  });
});
