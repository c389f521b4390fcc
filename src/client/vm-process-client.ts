import { create, type DescMessage, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
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
  GetProcessRequestSchema,
  type GetProcessResponse,
  ListProcessesRequestSchema,
  type ListProcessesResponse,
  type ProcessExit,
  SignalProcessRequestSchema,
  type SignalProcessResponse,
  StartProcessRequestSchema,
  type StartProcessResponse,
  StopProcessRequestSchema,
  type StopProcessResponse,
  VmProcessService,
  WaitProcessRequestSchema,
  type WaitProcessResponse,
  WatchExitsRequestSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { grpcServiceDefinition } from '../rpc/grpc-service-definition.js';

const definition = grpcServiceDefinition(VmProcessService);
const GenericClient = makeGenericClientConstructor(definition, VmProcessService.typeName);

export interface VmProcessClientOptions {
  /** TLS or insecure (default) channel credentials. */
  readonly credentials?: ChannelCredentials;
  readonly channelOptions?: ChannelOptions;
}

export interface RpcOptions {
  /** Deadline for this call, in milliseconds from now. */
  readonly timeoutMs?: number;
  /** Aborting cancels the call (the promise rejects with CANCELLED). */
  readonly signal?: AbortSignal;
}

/** A gRPC failure as the client sees it: `code` is a grpc-js `status`. */
export type RpcError = ServiceError;

export type Init<Desc extends DescMessage> = MessageInitShape<Desc>;

/**
 * A promise-based client for VmProcessService. `address` is `unix:///path` or `host:port`.
 * Requests may be plain objects; responses are protobuf-es messages.
 */
export class VmProcessClient {
  readonly #client: Client & Record<string, (...args: unknown[]) => unknown>;

  constructor(address: string, options: VmProcessClientOptions = {}) {
    this.#client = new GenericClient(
      address,
      options.credentials ?? grpcCredentials.createInsecure(),
      options.channelOptions ?? {},
    ) as unknown as Client & Record<string, (...args: unknown[]) => unknown>;
  }

  startProcess(request: Init<typeof StartProcessRequestSchema>, options?: RpcOptions): Promise<StartProcessResponse> {
    return this.#unary('startProcess', StartProcessRequestSchema, request, options);
  }

  stopProcess(request: Init<typeof StopProcessRequestSchema>, options?: RpcOptions): Promise<StopProcessResponse> {
    return this.#unary('stopProcess', StopProcessRequestSchema, request, options);
  }

  signalProcess(request: Init<typeof SignalProcessRequestSchema>, options?: RpcOptions): Promise<SignalProcessResponse> {
    return this.#unary('signalProcess', SignalProcessRequestSchema, request, options);
  }

  getProcess(request: Init<typeof GetProcessRequestSchema>, options?: RpcOptions): Promise<GetProcessResponse> {
    return this.#unary('getProcess', GetProcessRequestSchema, request, options);
  }

  listProcesses(request: Init<typeof ListProcessesRequestSchema> = {}, options?: RpcOptions): Promise<ListProcessesResponse> {
    return this.#unary('listProcesses', ListProcessesRequestSchema, request, options);
  }

  waitProcess(request: Init<typeof WaitProcessRequestSchema>, options?: RpcOptions): Promise<WaitProcessResponse> {
    return this.#unary('waitProcess', WaitProcessRequestSchema, request, options);
  }

  /**
   * One WatchExits call as an async iterable. Leaving the loop (break, return, throw) cancels
   * the call: grpc-js would otherwise keep the stream open. The call's status error (e.g.
   * OUT_OF_RANGE, RESOURCE_EXHAUSTED) is thrown from the iteration, even when it arrived before
   * the first next(); a consumer that falls behind pauses the stream, so HTTP/2 flow control
   * pushes back on the daemon instead of buffering here.
   */
  watchExits(request: Init<typeof WatchExitsRequestSchema> = {}, options: Pick<RpcOptions, 'signal'> = {}): AsyncIterable<ProcessExit> {
    const client = this.#client;
    return {
      [Symbol.asyncIterator]() {
        const call = client.watchExits(create(WatchExitsRequestSchema, request), new Metadata(), {}) as ClientReadableStream<ProcessExit>;
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

  #unary<Desc extends DescMessage, Response>(
    method: string,
    schema: Desc,
    request: MessageInitShape<Desc>,
    options: RpcOptions = {},
  ): Promise<Response> {
    return new Promise<Response>((resolve, reject) => {
      const callOptions: CallOptions = options.timeoutMs !== undefined ? { deadline: Date.now() + options.timeoutMs } : {};
      const message: MessageShape<Desc> = create(schema, request);
      const call = this.#client[method]!(message, new Metadata(), callOptions, (error: ServiceError | null, response: Response) => {
        options.signal?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(response);
      }) as { cancel(): void };
      const onAbort = () => call.cancel();
      if (options.signal?.aborted) call.cancel();
      else options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** How many received exits may wait for the consumer before the stream is paused. */
const ITERATOR_HIGH_WATER = 64;

/** Turns a server stream into an async iterator that keeps its error and honours backpressure. */
class StreamIterator<T> implements AsyncIterator<T> {
  readonly #call: ClientReadableStream<T>;
  readonly #signal: AbortSignal | undefined;
  readonly #queue: T[] = [];
  #error: unknown;
  #ended = false;
  #cancelled = false;
  #waiter: { resolve: (result: IteratorResult<T>) => void; reject: (error: unknown) => void } | undefined;
  readonly #onAbort = () => this.#finish();

  constructor(call: ClientReadableStream<T>, signal: AbortSignal | undefined) {
    this.#call = call;
    this.#signal = signal;
    call.on('data', (message: T) => {
      this.#queue.push(message);
      if (this.#queue.length >= ITERATOR_HIGH_WATER) call.pause();
      this.#wake();
    });
    call.on('error', (error: unknown) => {
      if (this.#cancelled) return;
      this.#error ??= error;
      this.#ended = true;
      this.#wake();
    });
    call.on('end', () => {
      this.#ended = true;
      this.#wake();
    });
    if (signal?.aborted) this.#finish();
    else signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  next(): Promise<IteratorResult<T>> {
    const message = this.#queue.shift();
    if (message !== undefined) {
      if (this.#queue.length < ITERATOR_HIGH_WATER / 2 && this.#call.isPaused()) this.#call.resume();
      return Promise.resolve({ value: message, done: false });
    }
    if (this.#ended) {
      const error = this.#error;
      this.#error = undefined;
      this.#finish();
      return error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  async return(): Promise<IteratorResult<T>> {
    this.#finish();
    return { value: undefined, done: true };
  }

  #wake(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    this.#waiter = undefined;
    this.next().then(waiter.resolve, waiter.reject);
  }

  /** Cancels the call; what was not yet consumed is dropped. A cancelled call's error is not ours to throw. */
  #finish(): void {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    if (!this.#ended) {
      this.#ended = true;
      this.#cancelled = true;
      this.#call.cancel();
    }
    this.#queue.length = 0;
    this.#wake();
  }
}

