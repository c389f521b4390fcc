import {
  Metadata,
  status as grpcStatus,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import {
  type GetVmCountersRequest,
  type GetVmInfoRequest,
  GetVmInfoResponseSchema,
  type PauseVmRequest,
  type ResizeVmRequest,
  ResizeVmResponseSchema,
  type ResumeVmRequest,
  type SnapshotVmRequest,
  SnapshotVmResponseSchema,
  type GetProcessRequest,
  type ListProcessesRequest,
  type SignalProcessRequest,
  type StartProcessRequest,
  type StopProcessRequest,
  type WaitProcessRequest,
  type WatchExitsRequest,
  type WatchEventsRequest,
  type GetLatestSequenceRequest,
  GetLatestSequenceResponseSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { Logger } from '../logger.js';
import type { VmmLogs } from '../logs/vmm-logs.js';
import type { EventStreamItem } from '../core/events.js';
import type { Subscription } from '../core/subscription.js';
import type { ProcessExitEvent } from '../core/domain.js';
import type { Supervisor } from '../core/supervisor.js';
import {
  afterSnapshotFromProto,
  countersToProto,
  durationToMs,
  eventKindsFromProto,
  processInfoToProto,
  processStatesFromProto,
  resizeFromProto,
  sequenceFromProto,
  startRequestFromProto,
  vmInfoToProto,
} from './convert.js';
import { toGrpcStatus } from './status-mapping.js';
import { streamLogsHandler } from './stream-logs.js';
import { ListPages } from './list-pages.js';
import { connectionOf, type StreamCaps } from './stream-caps.js';
import { encodedProcessEvent, encodedProcessExit, encodedProgressMarker, encodeListResponse, encodeProcessResponse, listedSize } from './wire-cache.js';

/**
 * The gRPC face of the supervisor: each handler decodes, calls one supervisor method and
 * encodes. No decisions are made here.
 */
/** The caps on long-lived streams (stream-caps.ts). */
export interface ServiceStreamCaps {
  readonly watches: StreamCaps;
  readonly logs: StreamCaps;
}

export function vmProcessServiceImplementation(supervisor: Supervisor, logger: Logger, logs: VmmLogs, caps: ServiceStreamCaps): UntypedServiceImplementation {
  const pages = new ListPages(listedSize);
  return {
    startProcess: unary<StartProcessRequest>(logger, async (request, signal) =>
      encodeProcessResponse(await supervisor.start(startRequestFromProto(request), signal))),

    stopProcess: unary<StopProcessRequest>(logger, async (request) => {
      const graceMs = request.gracePeriod ? durationToMs('grace_period', request.gracePeriod) : undefined;
      return encodeProcessResponse(await supervisor.stop(request.sandboxId, graceMs));
    }),

    signalProcess: unary<SignalProcessRequest>(logger, async (request) =>
      encodeProcessResponse(await supervisor.signal(request.sandboxId, request.signal))),

    getProcess: unary<GetProcessRequest>(logger, async (request) => encodeProcessResponse(supervisor.get(request.sandboxId))),

    listProcesses: unary<ListProcessesRequest>(logger, async (request) => {
      const filter = { states: processStatesFromProto(request.states), labels: request.labels };
      const filterKey = JSON.stringify([[...filter.states].sort(), Object.entries(filter.labels).sort()]);
      const page = pages.page({ pageSize: request.pageSize, pageToken: request.pageToken, filterKey }, () => supervisor.list(filter));
      return encodeListResponse(page.processes, page.exitSequence, page.nextPageToken, page.eventSequence);
    }),

    waitProcess: unary<WaitProcessRequest>(logger, async (request, signal) =>
      encodeProcessResponse(await supervisor.wait(request.sandboxId, signal))),

    watchExits: watchHandler<WatchExitsRequest, ProcessExitEvent>(logger, caps.watches, 'exit', (request) =>
      supervisor.watchExits({ sandboxIds: request.sandboxIds, afterSequence: sequenceFromProto(request.afterSequence) }), encodedProcessExit),

    watchEvents: watchHandler<WatchEventsRequest, EventStreamItem>(logger, caps.watches, 'event', (request) =>
      supervisor.watchEvents({
        sandboxIds: request.sandboxIds,
        kinds: eventKindsFromProto(request.kinds),
        afterSequence: sequenceFromProto(request.afterSequence),
      }), (item) => (item.kind === 'progress' ? encodedProgressMarker(item) : encodedProcessEvent(item))),

    getLatestSequence: unary<GetLatestSequenceRequest>(logger, async () => {
      const latest = supervisor.latestSequences();
      return create(GetLatestSequenceResponseSchema, {
        latestEventSequence: BigInt(latest.latestEventSequence),
        eventsRetainedAfter: BigInt(latest.eventsRetainedAfter),
        latestExitSequence: BigInt(latest.latestExitSequence),
        exitsRetainedAfter: BigInt(latest.exitsRetainedAfter),
      });
    }),

    streamLogs: streamLogsHandler(supervisor, logs, logger, caps.logs),

    pauseVm: unary<PauseVmRequest>(logger, async (request) => encodeProcessResponse(await supervisor.pauseVm(request.sandboxId))),

    resumeVm: unary<ResumeVmRequest>(logger, async (request) => encodeProcessResponse(await supervisor.resumeVm(request.sandboxId))),

    snapshotVm: unary<SnapshotVmRequest>(logger, async (request) => {
      const after = afterSnapshotFromProto(request.afterSnapshot);
      const { process, snapshotUrl } = await supervisor.snapshotVm(request.sandboxId, request.destinationUrl, after);
      return create(SnapshotVmResponseSchema, { process: processInfoToProto(process), snapshotUrl });
    }),

    getVmInfo: unary<GetVmInfoRequest>(logger, async (request) => create(GetVmInfoResponseSchema, { vm: vmInfoToProto(await supervisor.vmInfo(request.sandboxId)) })),

    getVmCounters: unary<GetVmCountersRequest>(logger, async (request) => countersToProto(await supervisor.vmCounters(request.sandboxId))),

    resizeVm: unary<ResizeVmRequest>(logger, async (request) => {
      const { process, vm } = await supervisor.resizeVm(request.sandboxId, resizeFromProto(request));
      return create(ResizeVmResponseSchema, { process: processInfoToProto(process), vm: vmInfoToProto(vm) });
    }),
  };
}

/** Runs a unary handler with an AbortSignal that fires if the client cancels or disconnects. */
function unary<Request>(
  logger: Logger,
  handler: (request: Request, signal: AbortSignal) => Promise<unknown>,
) {
  return (call: ServerUnaryCall<Request, unknown>, callback: sendUnaryData<unknown>) => {
    const cancelled = new AbortController();
    const onCancelled = () => cancelled.abort(new Error('cancelled by the client'));
    call.once('cancelled', onCancelled);
    handler(call.request, cancelled.signal).then(
      (response) => callback(null, response),
      (error: unknown) => {
        const status = toGrpcStatus(error);
        if (status.code === grpcStatus.INTERNAL) logger.error({ err: error, path: call.getPath() }, 'internal error');
        callback(status);
      },
    ).finally(() => call.removeListener('cancelled', onCancelled));
  };
}

/**
 * A server-streaming watch: one cap slot while it is open, a subscription made from the request
 * (its refusal is the call's status), and a relay of what it yields.
 */
function watchHandler<Request, Item>(
  logger: Logger,
  cap: StreamCaps,
  what: string,
  subscribe: (request: Request) => Subscription<Item>,
  encode: (item: Item) => Uint8Array,
) {
  return (call: ServerWritableStream<Request, Uint8Array>) => {
    let release: () => void;
    try {
      release = cap.acquire(connectionOf(call));
    } catch (error) {
      call.emit('error', toGrpcStatus(error));
      return;
    }
    let subscription: Subscription<Item>;
    try {
      subscription = subscribe(call.request);
    } catch (error) {
      release();
      call.emit('error', toGrpcStatus(error));
      return;
    }
    subscription.onEnded(release);
    call.once('close', release);
    // Headers now, not with the first item: the client learns the stream is established (a
    // reconnecting watcher resets its backoff on it) even when nothing comes for a while.
    call.sendMetadata(new Metadata());
    relay(subscription, call, encode).catch((error) => {
      logger.error({ err: error }, `${what} watcher failed`);
      subscription.close();
    });
  };
}

/**
 * Writes items to the stream as fast as the client takes them. While the client is slow, items
 * wait in the subscription's bounded queue; when that overflows the subscription fails and the
 * stream ends with RESOURCE_EXHAUSTED, so a stuck client never grows the daemon's memory.
 */
async function relay<Request, Item>(subscription: Subscription<Item>, call: ServerWritableStream<Request, Uint8Array>, encode: (item: Item) => Uint8Array): Promise<void> {
  call.once('cancelled', () => subscription.close());
  for (;;) {
    let next: IteratorResult<Item>;
    try {
      next = await subscription.next();
    } catch (error) {
      if (!call.cancelled) call.emit('error', toGrpcStatus(error));
      return;
    }
    if (next.done) {
      if (!call.cancelled) call.end();
      return;
    }
    if (!call.write(encode(next.value))) await writable(call, subscription);
  }
}

/** Resolves when the stream takes writes again, or when waiting has become pointless. */
function writable<Request, Item>(call: ServerWritableStream<Request, Uint8Array>, subscription: Subscription<Item>): Promise<void> {
  return new Promise((resolve) => {
    let stopWatchingEnd = (): void => {};
    const done = () => {
      call.removeListener('drain', done);
      call.removeListener('close', done);
      stopWatchingEnd();
      resolve();
    };
    call.once('drain', done);
    call.once('close', done);
    stopWatchingEnd = subscription.onEnded(done);
  });
}
