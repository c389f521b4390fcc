import { create, type DescMessage, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import type { Duration } from '@bufbuild/protobuf/wkt';
import {
  type CallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type Client,
  type ClientReadableStream,
  credentials as grpcCredentials,
  makeGenericClientConstructor,
  Metadata,
  type ServiceError,
} from '@grpc/grpc-js';
import {
  GetLatestSequenceRequestSchema,
  type GetLatestSequenceResponse,
  GetProcessRequestSchema,
  type GetProcessResponse,
  GetVmCountersRequestSchema,
  type GetVmCountersResponse,
  GetVmInfoRequestSchema,
  type GetVmInfoResponse,
  PauseVmRequestSchema,
  type PauseVmResponse,
  ResizeVmRequestSchema,
  type ResizeVmResponse,
  ResumeVmRequestSchema,
  type ResumeVmResponse,
  SnapshotVmRequestSchema,
  type SnapshotVmResponse,
  ListProcessesRequestSchema,
  type ListProcessesResponse,
  ListProcessesResponseSchema,
  type ProcessEvent,
  type ProcessExit,
  SignalProcessRequestSchema,
  type SignalProcessResponse,
  StartProcessRequestSchema,
  type StartProcessResponse,
  StopProcessRequestSchema,
  type StopProcessResponse,
  StreamLogsRequestSchema,
  type StreamLogsResponse,
  VmProcessService,
  WaitProcessRequestSchema,
  type WaitProcessResponse,
  WatchEventsRequestSchema,
  WatchExitsRequestSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { DEFAULT_READY_TIMEOUT_MS, DEFAULT_STOP_GRACE_MS, KILL_BACKSTOP_MS, MAX_READY_TIMEOUT_MS, MAX_STOP_GRACE_MS, SNAPSHOT_ALLOWANCE_MS } from '../api-defaults.js';
import { grpcServiceDefinition } from '../rpc/grpc-service-definition.js';
import type { Init, RpcOptions, StreamOptions } from './call-options.js';

export type { Init, RpcError, RpcOptions, StreamOptions };
import { ReconnectingEventWatch, type ReconnectingEventWatchOptions } from './event-watch.js';
import { ReconnectingExitWatch, type ReconnectingWatchOptions } from './exit-watch.js';
import type { RpcError } from './rpc-error.js';
import { StreamIterator } from './stream-iterator.js';

const definition = grpcServiceDefinition(VmProcessService);
const GenericClient = makeGenericClientConstructor(definition, VmProcessService.typeName);


export interface VmProcessClientOptions {
  /** TLS (see tlsCredentials) or insecure (default) channel credentials. */
  readonly credentials?: ChannelCredentials;
  /**
   * The name the daemon's TLS certificate is checked against, when it is not the target's host
   * (always for a unix socket target, whose authority is `localhost`).
   */
  readonly serverName?: string;
  /**
   * grpc-js channel options. Defaults here: reconnect backoff between 250 ms and 2 s (grpc-js's own
   * default grows to 120 s, far too slow to notice a restarted local daemon). While the channel
   * waits to reconnect, calls fail at once with UNAVAILABLE unless they set `waitForReady`.
   */
  readonly channelOptions?: ChannelOptions;
  /**
   * Deadline of unary calls, in milliseconds, unless a call sets `timeoutMs`. StartProcess gets its
   * `ready_timeout` on top and StopProcess its `grace_period` plus the daemon's 5 s SIGKILL wait,
   * since the daemon legitimately takes that long. WaitProcess and the streams have no default
   * deadline. Default 30 s; Infinity for none.
   */
  readonly defaultTimeoutMs?: number;
}

export const DEFAULT_TIMEOUT_MS = 30_000;

type GrpcStub = Client & Record<string, (...args: unknown[]) => unknown>;

/**
 * A promise-based client for VmProcessService. `address` is `unix:///path` or `host:port`.
 * Requests may be plain objects; responses are protobuf-es messages. Failures reject with an
 * RpcError (a grpc-js ServiceError: `code`, `details`); see isRpcError.
 */
export class VmProcessClient {
  readonly #client: GrpcStub;
  readonly #defaultTimeoutMs: number;

  constructor(address: string, options: VmProcessClientOptions = {}) {
    this.#defaultTimeoutMs = options.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    const channelOptions: ChannelOptions = {
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': 2_000,
      ...(options.serverName !== undefined ? { 'grpc.ssl_target_name_override': options.serverName, 'grpc.default_authority': options.serverName } : {}),
      ...options.channelOptions,
    };
    this.#client = new GenericClient(address, options.credentials ?? grpcCredentials.createInsecure(), channelOptions) as unknown as GrpcStub;
  }

  startProcess(request: Init<typeof StartProcessRequestSchema>, options?: RpcOptions): Promise<StartProcessResponse> {
    const message = create(StartProcessRequestSchema, request);
    // The daemon refuses more than its maximum at once: waiting longer for it would only make a
    // deadline grpc-js cannot express (a call that then never settles).
    const readyMs = message.readyTimeout ? Math.min(durationMs(message.readyTimeout), MAX_READY_TIMEOUT_MS) : DEFAULT_READY_TIMEOUT_MS;
    return this.#unary('startProcess', StartProcessRequestSchema, message, this.#deadline(options, readyMs), options);
  }

  stopProcess(request: Init<typeof StopProcessRequestSchema>, options?: RpcOptions): Promise<StopProcessResponse> {
    const message = create(StopProcessRequestSchema, request);
    const graceMs = message.gracePeriod ? Math.min(durationMs(message.gracePeriod), MAX_STOP_GRACE_MS) : DEFAULT_STOP_GRACE_MS;
    return this.#unary('stopProcess', StopProcessRequestSchema, message, this.#deadline(options, graceMs + KILL_BACKSTOP_MS), options);
  }

  signalProcess(request: Init<typeof SignalProcessRequestSchema>, options?: RpcOptions): Promise<SignalProcessResponse> {
    return this.#unary('signalProcess', SignalProcessRequestSchema, request, this.#deadline(options), options);
  }

  getProcess(request: Init<typeof GetProcessRequestSchema>, options?: RpcOptions): Promise<GetProcessResponse> {
    return this.#unary('getProcess', GetProcessRequestSchema, request, this.#deadline(options), options);
  }

  /**
   * Every matching process, from one snapshot at one exit sequence: follows the daemon's pages to
   * the end (each call with its own deadline) and returns them as one response. With a
   * `pageToken` in the request, only that page (see listProcessesPage).
   */
  async listProcesses(request: Init<typeof ListProcessesRequestSchema> = {}, options?: RpcOptions): Promise<ListProcessesResponse> {
    const first = await this.listProcessesPage(request, options);
    if (first.nextPageToken === '' || (request as { pageToken?: string }).pageToken) return first;
    const processes = [...first.processes];
    for (let token = first.nextPageToken; token !== ''; ) {
      const page = await this.listProcessesPage({ ...request, pageToken: token }, options);
      processes.push(...page.processes);
      token = page.nextPageToken;
    }
    return create(ListProcessesResponseSchema, { processes, exitSequence: first.exitSequence });
  }

  /** One ListProcesses call: one page, and the token of the next. */
  listProcessesPage(request: Init<typeof ListProcessesRequestSchema> = {}, options?: RpcOptions): Promise<ListProcessesResponse> {
    return this.#unary('listProcesses', ListProcessesRequestSchema, request, this.#deadline(options), options);
  }

  pauseVm(request: Init<typeof PauseVmRequestSchema>, options?: RpcOptions): Promise<PauseVmResponse> {
    return this.#unary('pauseVm', PauseVmRequestSchema, request, this.#deadline(options), options);
  }

  resumeVm(request: Init<typeof ResumeVmRequestSchema>, options?: RpcOptions): Promise<ResumeVmResponse> {
    return this.#unary('resumeVm', ResumeVmRequestSchema, request, this.#deadline(options), options);
  }

  /**
   * Snapshots the VM into a new directory. Its default deadline leaves room for writing all of
   * guest memory (the daemon allows the VMM 10 minutes) and, with AFTER_SNAPSHOT_STOP, the stop.
   */
  snapshotVm(request: Init<typeof SnapshotVmRequestSchema>, options?: RpcOptions): Promise<SnapshotVmResponse> {
    return this.#unary('snapshotVm', SnapshotVmRequestSchema, request, this.#deadline(options, SNAPSHOT_ALLOWANCE_MS + DEFAULT_STOP_GRACE_MS + KILL_BACKSTOP_MS), options);
  }

  getVmInfo(request: Init<typeof GetVmInfoRequestSchema>, options?: RpcOptions): Promise<GetVmInfoResponse> {
    return this.#unary('getVmInfo', GetVmInfoRequestSchema, request, this.#deadline(options), options);
  }

  getVmCounters(request: Init<typeof GetVmCountersRequestSchema>, options?: RpcOptions): Promise<GetVmCountersResponse> {
    return this.#unary('getVmCounters', GetVmCountersRequestSchema, request, this.#deadline(options), options);
  }

  resizeVm(request: Init<typeof ResizeVmRequestSchema>, options?: RpcOptions): Promise<ResizeVmResponse> {
    return this.#unary('resizeVm', ResizeVmRequestSchema, request, this.#deadline(options), options);
  }

  /** Resolves once the process has exited. No deadline unless `timeoutMs` is given. */
  waitProcess(request: Init<typeof WaitProcessRequestSchema>, options: RpcOptions = {}): Promise<WaitProcessResponse> {
    return this.#unary('waitProcess', WaitProcessRequestSchema, request, deadlineIn(options.timeoutMs), options);
  }

  /**
   * One WatchExits call as an async iterable. Leaving the loop (break, return, throw) or aborting
   * `signal` cancels the call. Its status error (OUT_OF_RANGE, RESOURCE_EXHAUSTED, UNAVAILABLE...)
   * is thrown from the iteration, even when it arrived before the first next(). No deadline unless
   * `timeoutMs` is given. For a watcher that survives restarts, see watchExitsReconnecting.
   */
  watchExits(request: Init<typeof WatchExitsRequestSchema> = {}, options: StreamOptions = {}): AsyncIterable<ProcessExit> {
    const client = this.#client;
    return {
      [Symbol.asyncIterator]() {
        const call = client.watchExits(create(WatchExitsRequestSchema, request), metadata(options), callOptions(deadlineIn(options.timeoutMs))) as ClientReadableStream<ProcessExit>;
        if (options.onHeaders) call.once('metadata', options.onHeaders);
        return new StreamIterator(call, options.signal);
      },
    };
  }

  /**
   * Every exit exactly once, across connection losses and daemon restarts: reconnects with backoff
   * and resumes after the last exit it delivered. Throws ExitHistoryGapError (OUT_OF_RANGE) when
   * the daemon no longer retains exits that far back: resync with listProcesses. See
   * ReconnectingExitWatch.
   */
  watchExitsReconnecting(options: ReconnectingWatchOptions = {}): ReconnectingExitWatch {
    return new ReconnectingExitWatch(this, options);
  }

  /**
   * One WatchEvents call as an async iterable, PROGRESS markers included; as watchExits otherwise.
   * For a watcher that survives restarts, see watchEventsReconnecting.
   */
  watchEvents(request: Init<typeof WatchEventsRequestSchema> = {}, options: StreamOptions = {}): AsyncIterable<ProcessEvent> {
    const client = this.#client;
    return {
      [Symbol.asyncIterator]() {
        const call = client.watchEvents(create(WatchEventsRequestSchema, request), metadata(options), callOptions(deadlineIn(options.timeoutMs))) as ClientReadableStream<ProcessEvent>;
        if (options.onHeaders) call.once('metadata', options.onHeaders);
        return new StreamIterator(call, options.signal);
      },
    };
  }

  /**
   * Every event exactly once, across connection losses and daemon restarts; the cursor follows
   * progress markers. Throws EventHistoryGapError (OUT_OF_RANGE) when an event it would have
   * received is no longer retained. See ReconnectingEventWatch.
   */
  watchEventsReconnecting(options: ReconnectingEventWatchOptions = {}): ReconnectingEventWatch {
    return new ReconnectingEventWatch(this, options);
  }

  /** The latest event and exit sequences, and the oldest cursors still resumable. */
  getLatestSequence(request: Init<typeof GetLatestSequenceRequestSchema> = {}, options: RpcOptions = {}): Promise<GetLatestSequenceResponse> {
    return this.#unary('getLatestSequence', GetLatestSequenceRequestSchema, request, this.#deadline(options), options);
  }

  /**
   * "List, then watch, with no gap": a ListProcesses snapshot, and a reconnecting watcher of every
   * exit after it.
   */
  async watchExitsFromList(
    listRequest: Init<typeof ListProcessesRequestSchema> = {},
    options: Omit<ReconnectingWatchOptions, 'startAfter'> & Pick<RpcOptions, 'timeoutMs'> = {},
  ): Promise<{ snapshot: ListProcessesResponse; exits: ReconnectingExitWatch }> {
    const snapshot = await this.listProcesses(listRequest, { ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}), ...(options.signal ? { signal: options.signal } : {}) });
    return { snapshot, exits: new ReconnectingExitWatch(this, { ...options, startAfter: snapshot.exitSequence }) };
  }

  /**
   * The VMM's log (stdout and stderr) as raw byte chunks: the last `tailLines` lines (all with 0),
   * then, with `follow`, what it writes next until it exits. Concatenate `data` to get the log.
   * Leaving the loop or aborting `signal` cancels the call; no deadline unless `timeoutMs` is given.
   */
  streamLogs(request: Init<typeof StreamLogsRequestSchema>, options: RpcOptions = {}): AsyncIterable<StreamLogsResponse> {
    const client = this.#client;
    return {
      [Symbol.asyncIterator]() {
        const call = client.streamLogs(create(StreamLogsRequestSchema, request), metadata(options), callOptions(deadlineIn(options.timeoutMs))) as ClientReadableStream<StreamLogsResponse>;
        return new StreamIterator(call, options.signal);
      },
    };
  }

  /** Waits until the channel is connected, or rejects after `timeoutMs`. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#client.waitForReady(Date.now() + timeoutMs, (error) => (error ? reject(error) : resolve()));
    });
  }

  close(): void {
    this.#client.close();
  }

  /** The absolute deadline of a unary call: the caller's, or the default plus what the daemon may take. */
  #deadline(options: RpcOptions | undefined, daemonMs = 0): number | undefined {
    if (options?.timeoutMs !== undefined) return deadlineIn(options.timeoutMs);
    return deadlineIn(this.#defaultTimeoutMs + daemonMs);
  }

  #unary<Desc extends DescMessage, Response>(
    method: string,
    schema: Desc,
    request: MessageInitShape<Desc>,
    deadline: number | undefined,
    options: RpcOptions = {},
  ): Promise<Response> {
    const signal = options.signal;
    return new Promise<Response>((resolve, reject) => {
      const message: MessageShape<Desc> = create(schema, request);
      const call = this.#client[method]!(message, metadata(options), callOptions(deadline), (error: ServiceError | null, response: Response) => {
        signal?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(response);
      }) as { cancel(): void };
      const onAbort = () => call.cancel();
      if (signal?.aborted) call.cancel();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/**
 * grpc-js sends a deadline as at most 8 digits of hours and throws, outside the call's callback,
 * for one further away (about 11,000 years): the call would never settle. Such a deadline is none.
 */
const MAX_DEADLINE_MS = 1e8 * 3_600_000 - 3_600_000;

function deadlineIn(timeoutMs: number | undefined): number | undefined {
  if (timeoutMs === undefined || timeoutMs >= MAX_DEADLINE_MS) return undefined;
  if (!(timeoutMs >= 0)) throw new RangeError(`timeoutMs must be a non-negative number, not ${timeoutMs}`);
  return Date.now() + timeoutMs;
}

function metadata(options: RpcOptions): Metadata {
  const metadata = new Metadata();
  if (options.waitForReady) metadata.setOptions({ waitForReady: true });
  return metadata;
}

function callOptions(deadline: number | undefined): CallOptions {
  return deadline !== undefined ? { deadline } : {};
}

function durationMs(duration: Duration): number {
  return Math.max(0, Number(duration.seconds) * 1000 + Math.ceil(duration.nanos / 1e6));
}
