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
  type ProcessExit,
  type SignalProcessRequest,
  type StartProcessRequest,
  type StopProcessRequest,
  type WaitProcessRequest,
  type WatchExitsRequest,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { Logger } from '../logger.js';
import type { VmmLogs } from '../logs/vmm-logs.js';
import type { ExitSubscription } from '../core/exit-exchange.js';
import type { ProcessExitEvent } from '../core/domain.js';
import type { Supervisor } from '../core/supervisor.js';
import {
  afterSnapshotFromProto,
  countersToProto,
  durationToMs,
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
import { encodedProcessExit, encodeListResponse, encodeProcessResponse, listedSize } from './wire-cache.js';

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
      return encodeListResponse(page.processes, page.exitSequence, page.nextPageToken);
    }),

    waitProcess: unary<WaitProcessRequest>(logger, async (request, signal) =>
      encodeProcessResponse(await supervisor.wait(request.sandboxId, signal))),

    watchExits: (call: ServerWritableStream<WatchExitsRequest, EncodedOrMessage<ProcessExit>>) => {
      let subscription: ExitSubscription;
      let release: () => void;
      try {
        release = caps.watches.acquire(connectionOf(call));
      } catch (error) {
        call.emit('error', toGrpcStatus(error));
        return;
      }
      try {
        subscription = supervisor.watchExits({
          sandboxIds: call.request.sandboxIds,
          afterSequence: sequenceFromProto(call.request.afterSequence),
        });
      } catch (error) {
        release();
        call.emit('error', toGrpcStatus(error));
        return;
      }
      subscription.onEnded(release);
      call.once('close', release);
      // Headers now, not with the first exit: the client learns the stream is established (a
      // reconnecting watcher resets its backoff on it) even when no exit comes for a while.
      call.sendMetadata(new Metadata());
      relayExits(subscription, call).catch((error) => {
        logger.error({ err: error }, 'exit watcher failed');
        subscription.close();
      });
    },

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

/** What a response stream takes: a message, or its encoding made earlier (wire-cache.ts). */
type EncodedOrMessage<Message> = Message | Uint8Array;

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
 * Writes exits to the stream as fast as the client takes them. While the client is slow, exits
 * wait in the subscription's bounded queue; when that overflows the subscription fails and the
 * stream ends with RESOURCE_EXHAUSTED, so a stuck client never grows the daemon's memory.
 */
async function relayExits(subscription: ExitSubscription, call: ServerWritableStream<WatchExitsRequest, EncodedOrMessage<ProcessExit>>): Promise<void> {
  call.once('cancelled', () => subscription.close());
  for (;;) {
    let next: IteratorResult<ProcessExitEvent>;
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
    if (!call.write(encodedProcessExit(next.value))) await writable(call, subscription);
  }
}

/** Resolves when the stream takes writes again, or when waiting has become pointless. */
function writable(call: ServerWritableStream<WatchExitsRequest, EncodedOrMessage<ProcessExit>>, subscription: ExitSubscription): Promise<void> {
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
