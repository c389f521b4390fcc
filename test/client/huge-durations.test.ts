/**
 * Durations far beyond what the daemon accepts (a ready_timeout or grace_period of 2^63-1 s, a
 * timeoutMs of 1e300) must reach the daemon and come back with its refusal. grpc-js cannot send
 * a deadline more than 10^8 hours away and throws outside the call's callback, so a client that
 * derived its deadline from such a request used to leave the call pending forever. No root.
 */
import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { type ServiceError, Server, ServerCredentials, status } from '@grpc/grpc-js';
import { VmProcessService } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { grpcServiceDefinition } from '../../src/rpc/grpc-service-definition.js';
import { statusError } from './stub-server.js';

let server: Server;
let client: VmProcessClient;

beforeAll(async () => {
  server = new Server();
  const refuse = (what: string) => (_call: unknown, callback: (e: ServiceError | null) => void) => callback(statusError(status.INVALID_ARGUMENT, `${what} too long`));
  server.addService(grpcServiceDefinition(VmProcessService), {
    startProcess: refuse('ready_timeout'),
    stopProcess: refuse('grace_period'),
    getProcess: refuse('nothing'),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
  client = new VmProcessClient(`127.0.0.1:${port}`);
});

afterAll(async () => {
  client.close();
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
});

/** The call's outcome within 5 s: its status code, or 'pending'. */
async function settled(call: Promise<unknown>): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve('pending'), 5_000);
  });
  try {
    return await Promise.race([call.then(() => 'ok', (error: ServiceError) => status[error.code] ?? String(error)), pending]);
  } finally {
    clearTimeout(timer);
  }
}

const MAX_SECONDS = 9_223_372_036_854_775_807n;

it('a StartProcess with a ready_timeout of 2^63-1 s gets the daemon\'s answer', async () => {
  expect(await settled(client.startProcess({ sandboxId: 'sb', readyTimeout: { seconds: MAX_SECONDS } }))).toBe('INVALID_ARGUMENT');
});

it('a StopProcess with a grace_period of 2^63-1 s gets the daemon\'s answer', async () => {
  expect(await settled(client.stopProcess({ sandboxId: 'sb', gracePeriod: { seconds: MAX_SECONDS } }))).toBe('INVALID_ARGUMENT');
});

it('a timeoutMs too far away for grpc-js is no deadline', async () => {
  expect(await settled(client.getProcess({ sandboxId: 'sb' }, { timeoutMs: 1e300 }))).toBe('INVALID_ARGUMENT');
});
