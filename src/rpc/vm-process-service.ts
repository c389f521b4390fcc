import { create } from '@bufbuild/protobuf';
import type {
  sendUnaryData,
  ServerUnaryCall,
  ServerWritableStream,
  UntypedServiceImplementation,
} from '@grpc/grpc-js';
import {
  GetProcessResponseSchema,
  type GetProcessRequest,
  ListProcessesResponseSchema,
  type ListProcessesRequest,
  type ProcessExit,
  SignalProcessResponseSchema,
  type SignalProcessRequest,
  StartProcessResponseSchema,
  type StartProcessRequest,
  StopProcessResponseSchema,
  type StopProcessRequest,
  WaitProcessResponseSchema,
  type WaitProcessRequest,
  type WatchExitsRequest,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { Logger } from '../logger.js';
import type { ExitSubscription } from '../supervisor/exit-exchange.js';
import type { ProcessExitEvent } from '../supervisor/process-types.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import {
  durationToMs,
  processExitToProto,
  processInfoToProto,
  processStatesFromProto,
  sequenceFromProto,
  startRequestFromProto,
} from './convert.js';
import { toGrpcStatus } from './status-mapping.js';

/**
 * The gRPC face of the supervisor: each handler decodes, calls one supervisor method and
 * encodes. No decisions are made here.
 */
export function vmProcessServiceImplementation(supervisor: Supervisor, logger: Logger): UntypedServiceImplementation {
  return {
    startProcess: unary<StartProcessRequest>(logger, async (request, signal) =>
      create(StartProcessResponseSchema, {
        process: processInfoToProto(await supervisor.start(startRequestFromProto(request), signal)),
      })),

    stopProcess: unary<StopProcessRequest>(logger, async (request) => {
      const graceMs = request.gracePeriod ? durationToMs('grace_period', request.gracePeriod) : undefined;
      return create(StopProcessResponseSchema, {
        process: processInfoToProto(await supervisor.stop(request.sandboxId, graceMs)),
      });
    }),

    signalProcess: unary<SignalProcessRequest>(logger, async (request) =>
      create(SignalProcessResponseSchema, {
        process: processInfoToProto(await supervisor.signal(request.sandboxId, request.signal)),
      })),

    getProcess: unary<GetProcessRequest>(logger, async (request) =>
      create(GetProcessResponseSchema, { process: processInfoToProto(supervisor.get(request.sandboxId)) })),

    listProcesses: unary<ListProcessesRequest>(logger, async (request) => {
      const { processes, exitSequence } = supervisor.list({
        states: processStatesFromProto(request.states),
        labels: request.labels,
      });
      return create(ListProcessesResponseSchema, {
        processes: processes.map(processInfoToProto),
        exitSequence: BigInt(exitSequence),
      });
    }),

    waitProcess: unary<WaitProcessRequest>(logger, async (request, signal) =>
      create(WaitProcessResponseSchema, { process: processInfoToProto(await supervisor.wait(request.sandboxId, signal)) })),

    watchExits: (call: ServerWritableStream<WatchExitsRequest, ProcessExit>) => {
      let subscription: ExitSubscription;
      try {
        subscription = supervisor.watchExits({
          sandboxIds: call.request.sandboxIds,
          afterSequence: sequenceFromProto(call.request.afterSequence),
        });
      } catch (error) {
        call.emit('error', toGrpcStatus(error));
        return;
      }
      relayExits(subscription, call).catch((error) => {
        logger.error({ err: error }, 'exit watcher failed');
        subscription.close();
      });
    },
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
        if (status.code === 13) logger.error({ err: error, path: call.getPath() }, 'internal error');
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
async function relayExits(subscription: ExitSubscription, call: ServerWritableStream<WatchExitsRequest, ProcessExit>): Promise<void> {
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
    if (!call.write(processExitToProto(next.value))) await writable(call, subscription);
  }
}

/** Resolves when the stream takes writes again, or when waiting has become pointless. */
function writable(call: ServerWritableStream<WatchExitsRequest, ProcessExit>, subscription: ExitSubscription): Promise<void> {
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
