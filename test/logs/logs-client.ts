/**
 * A bare grpc-js client for StreamLogs, built from the generated descriptor like the daemon's own
 * service definition, so these suites test the RPC itself rather than a client library on top.
 */
import { create } from '@bufbuild/protobuf';
import {
  type ChannelCredentials,
  type Client,
  type ClientReadableStream,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type ServiceError,
} from '@grpc/grpc-js';
import { type StreamLogsRequestSchema, StreamLogsRequestSchema as RequestSchema, type StreamLogsResponse, VmProcessService } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { grpcServiceDefinition } from '../../src/rpc/grpc-service-definition.js';

const Generic = makeGenericClientConstructor(grpcServiceDefinition(VmProcessService), VmProcessService.typeName);

export type StreamLogsInit = MessageInitShape<typeof StreamLogsRequestSchema>;

/** One StreamLogs call: what arrived so far, and how it ended. */
export class LogStream {
  readonly call: ClientReadableStream<StreamLogsResponse>;
  readonly chunks: Buffer[] = [];
  /** Resolves with undefined at OK, or with the status error. */
  readonly ended: Promise<ServiceError | undefined>;

  constructor(call: ClientReadableStream<StreamLogsResponse>) {
    this.call = call;
    this.ended = new Promise((resolve) => {
      call.on('data', (message: StreamLogsResponse) => this.chunks.push(Buffer.from(message.data)));
      call.on('error', (error: ServiceError) => resolve(error));
      call.on('end', () => resolve(undefined));
    });
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  get text(): string {
    return this.bytes.toString('utf8');
  }

  /** Resolves once `check(text)` holds; rejects after `timeoutMs` with what arrived. */
  async until(check: (text: string) => boolean, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!check(this.text)) {
      if (Date.now() > deadline) throw new Error(`log stream never got there; it has ${JSON.stringify(this.text.slice(-300))}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return this.text;
  }

  cancel(): void {
    this.call.cancel();
  }
}

export class LogsClient {
  readonly #client: Client & Record<string, (...args: unknown[]) => unknown>;

  constructor(address: string, channelCredentials: ChannelCredentials = credentials.createInsecure()) {
    this.#client = new Generic(address, channelCredentials, {}) as unknown as Client & Record<string, (...args: unknown[]) => unknown>;
  }

  stream(request: StreamLogsInit): LogStream {
    return new LogStream(this.#client.streamLogs(create(RequestSchema, request), new Metadata(), {}) as ClientReadableStream<StreamLogsResponse>);
  }

  /** A stream that ends by itself: its bytes, or the status error it ended with. */
  async read(request: StreamLogsInit): Promise<Buffer> {
    const stream = this.stream(request);
    const error = await stream.ended;
    if (error) throw error;
    return stream.bytes;
  }

  close(): void {
    this.#client.close();
  }
}
