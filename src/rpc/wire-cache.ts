import { toBinary } from '@bufbuild/protobuf';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { EventKind, ProcessEventSchema, ProcessExitSchema, ProcessInfoSchema } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { ProcessExitEvent, ProcessSnapshot } from '../core/domain.js';
import type { ProcessEvent, ProgressMarker } from '../core/events.js';
import { processEventToProto, processExitToProto, processInfoToProto } from './convert.js';

/**
 * Wire encodings of processes and exits, made once and reused. protobuf-es encodes by reflection,
 * which costs a fraction of a millisecond per ProcessInfo: a ListProcesses of a thousand processes
 * would spend its whole budget re-encoding what did not change, and an exit fanned out to a
 * hundred watchers would be encoded a hundred times. Snapshots and exit events are immutable
 * objects (a process gets a new snapshot when it changes), so their bytes are cached by identity.
 *
 * Responses built here are handed to grpc-js as bytes (see grpc-service-definition.ts).
 */
const processInfoBytes = new WeakMap<ProcessSnapshot, Uint8Array>();
const processExitBytes = new WeakMap<ProcessExitEvent, Uint8Array>();
const processEventBytes = new WeakMap<ProcessEvent, Uint8Array>();

export function encodedProcessInfo(snapshot: ProcessSnapshot): Uint8Array {
  let bytes = processInfoBytes.get(snapshot);
  if (!bytes) processInfoBytes.set(snapshot, (bytes = toBinary(ProcessInfoSchema, processInfoToProto(snapshot))));
  return bytes;
}

/** A ProcessEvent, encoded once however many watchers it goes to. */
export function encodedProcessEvent(event: ProcessEvent): Uint8Array {
  let bytes = processEventBytes.get(event);
  if (!bytes) processEventBytes.set(event, (bytes = toBinary(ProcessEventSchema, processEventToProto(event))));
  return bytes;
}

/** A progress marker: `uint64 sequence = 1; EventKind kind = 3;`, nothing else. */
export function encodedProgressMarker(marker: ProgressMarker): Uint8Array {
  return new BinaryWriter().tag(1, WireType.Varint).uint64(marker.sequence).tag(3, WireType.Varint).int32(EventKind.PROGRESS).finish();
}

export function encodedProcessExit(event: ProcessExitEvent): Uint8Array {
  let bytes = processExitBytes.get(event);
  if (!bytes) processExitBytes.set(event, (bytes = toBinary(ProcessExitSchema, processExitToProto(event))));
  return bytes;
}

/** Any of the `{ ProcessInfo process = 1; }` responses (Start, Stop, Signal, Get, Wait). */
export function encodeProcessResponse(snapshot: ProcessSnapshot): Uint8Array {
  return new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(encodedProcessInfo(snapshot)).finish();
}

/** ListProcessesResponse: `repeated ProcessInfo processes = 1; uint64 exit_sequence = 2; string next_page_token = 3; uint64 event_sequence = 4;` */
export function encodeListResponse(snapshots: readonly ProcessSnapshot[], exitSequence: number, nextPageToken = '', eventSequence = 0): Uint8Array {
  const writer = new BinaryWriter();
  for (const snapshot of snapshots) writer.tag(1, WireType.LengthDelimited).bytes(encodedProcessInfo(snapshot));
  if (exitSequence > 0) writer.tag(2, WireType.Varint).uint64(exitSequence);
  if (nextPageToken !== '') writer.tag(3, WireType.LengthDelimited).string(nextPageToken);
  if (eventSequence > 0) writer.tag(4, WireType.Varint).uint64(eventSequence);
  return writer.finish();
}

/** What one process adds to a ListProcessesResponse: its encoding, its tag and its length. */
export function listedSize(snapshot: ProcessSnapshot): number {
  return encodedProcessInfo(snapshot).length + 1 + 5;
}
