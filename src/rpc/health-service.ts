import { create } from '@bufbuild/protobuf';
import { type sendUnaryData, type Server, type ServerUnaryCall, type ServerWritableStream, status } from '@grpc/grpc-js';
import {
  type HealthCheckRequest,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus as ServingStatus,
  HealthCheckResponseSchema,
  type HealthListResponse,
  HealthListResponseSchema,
  Health,
} from '../../gen/grpc/health/v1/health_pb.js';
import { grpcServiceDefinition } from './grpc-service-definition.js';

export { ServingStatus };

/**
 * The standard grpc.health.v1.Health service. Kept here rather than taken from a package so that
 * Watch streams end when the daemon stops: an open health watch must not hold shutdown for its
 * whole grace period.
 */
export class HealthService {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #watchers = new Map<string, Set<ServerWritableStream<HealthCheckRequest, HealthCheckResponse>>>();

  constructor(initial: Readonly<Record<string, ServingStatus>>) {
    for (const [service, serving] of Object.entries(initial)) this.#statuses.set(service, serving);
  }

  setStatus(service: string, serving: ServingStatus): void {
    this.#statuses.set(service, serving);
    for (const call of this.#watchers.get(service) ?? []) call.write(response(serving));
  }

  /** Ends every Watch stream (after the last status was sent). */
  endWatches(): void {
    for (const calls of this.#watchers.values()) for (const call of calls) call.end();
    this.#watchers.clear();
  }

  addToServer(server: Server): void {
    server.addService(grpcServiceDefinition(Health), {
      check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: sendUnaryData<HealthCheckResponse>) => {
        const serving = this.#statuses.get(call.request.service);
        if (serving === undefined) callback({ code: status.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service)}` });
        else callback(null, response(serving));
      },
      watch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
        const service = call.request.service;
        call.write(response(this.#statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN));
        let calls = this.#watchers.get(service);
        if (!calls) this.#watchers.set(service, (calls = new Set()));
        calls.add(call);
        call.once('cancelled', () => calls.delete(call));
      },
      list: (_call: ServerUnaryCall<unknown, HealthListResponse>, callback: sendUnaryData<HealthListResponse>) => {
        const statuses = Object.fromEntries([...this.#statuses].map(([service, serving]) => [service, response(serving)]));
        callback(null, create(HealthListResponseSchema, { statuses }));
      },
    });
  }
}

function response(serving: ServingStatus): HealthCheckResponse {
  return create(HealthCheckResponseSchema, { status: serving });
}
