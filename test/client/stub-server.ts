/**
 * A scripted VmProcessService on a real grpc-js server (no daemon, no root): each WatchExits call
 * is answered by the next step of a script, so the reconnect logic meets exact sequences of
 * replies, duplicates and status codes.
 */
import { create } from '@bufbuild/protobuf';
import { Metadata, Server, ServerCredentials, type ServerWritableStream, type ServiceError, status } from '@grpc/grpc-js';
import {
  GetProcessResponseSchema,
  ListProcessesResponseSchema,
  type ProcessExit,
  ProcessExitSchema,
  VmProcessService,
  type WatchExitsRequest,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { grpcServiceDefinition } from '../../src/rpc/grpc-service-definition.js';

/** One WatchExits reply: these exits (by sequence), then this status (or keep the stream open). */
export interface WatchStep {
  readonly send: readonly number[];
  readonly end?: { code: status; details: string } | 'open';
}

export interface StubServer {
  readonly address: string;
  /** The WatchExits requests received, in order. */
  readonly watchRequests: WatchExitsRequest[];
  listCalls: number;
  close(): Promise<void>;
}

export const stubExit = (sequence: number): ProcessExit =>
  create(ProcessExitSchema, { sequence: BigInt(sequence), sandboxId: `sb-${sequence}`, pid: 1000 + sequence, exitCode: 0 });

export function statusError(code: status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}

export async function startStubServer(
  script: (callIndex: number) => WatchStep,
  options: { exitSequence?: bigint; credentials?: ServerCredentials } = {},
): Promise<StubServer> {
  const server = new Server();
  const watchRequests: WatchExitsRequest[] = [];
  const stub: StubServer = {
    address: '',
    watchRequests,
    listCalls: 0,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())).then(() => server.forceShutdown()),
  };
  server.addService(grpcServiceDefinition(VmProcessService), {
    listProcesses: (_call: unknown, callback: (e: ServiceError | null, r: unknown) => void) => {
      stub.listCalls++;
      callback(null, create(ListProcessesResponseSchema, { exitSequence: options.exitSequence ?? 0n }));
    },
    getProcess: (call: { request: { sandboxId: string } }, callback: (e: ServiceError | null, r: unknown) => void) => {
      callback(null, create(GetProcessResponseSchema, { process: { sandboxId: call.request.sandboxId, pid: 42 } }));
    },
    watchExits: (call: ServerWritableStream<WatchExitsRequest, ProcessExit>) => {
      const step = script(watchRequests.length);
      watchRequests.push(call.request);
      for (const sequence of step.send) call.write(stubExit(sequence));
      if (step.end === 'open') return;
      if (step.end) call.emit('error', statusError(step.end.code, step.end.details));
      else call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', options.credentials ?? ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return Object.assign(stub, { address: `127.0.0.1:${port}` });
}
