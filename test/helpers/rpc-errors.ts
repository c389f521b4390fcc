import { expect } from '@jest/globals';
import { type ServiceError, status } from '@grpc/grpc-js';

/** Awaits a call expected to fail; asserts its gRPC code and that `details` contains each fragment. */
export async function expectRpcError(call: Promise<unknown>, code: status, ...fragments: string[]): Promise<ServiceError> {
  let error: unknown;
  try {
    const value = await call;
    throw new Error(`expected ${status[code]}, but the call succeeded with ${JSON.stringify(value, bigintJson)}`);
  } catch (caught) {
    error = caught;
  }
  const serviceError = error as ServiceError;
  expect({ code: status[serviceError.code] ?? serviceError.code, details: serviceError.details }).toEqual({
    code: status[code],
    details: expect.any(String),
  });
  for (const fragment of fragments) expect(serviceError.details).toContain(fragment);
  return serviceError;
}

function bigintJson(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}
