import { create } from '@bufbuild/protobuf';
import { credentials, makeGenericClientConstructor, Metadata, type ServiceError } from '@grpc/grpc-js';
import { Health, HealthCheckRequestSchema, type HealthCheckResponse, HealthCheckResponse_ServingStatus } from '../../gen/grpc/health/v1/health_pb.js';
import type { RunningDaemon } from '../../src/daemon/daemon.js';
import { grpcServiceDefinition } from '../../src/rpc/grpc-service-definition.js';
import { grpcTarget } from '../../src/rpc/listen-address.js';
import { scrape } from '../metrics/scrape.js';

/** grpc.health.v1 Check on one gRPC target (`unix:///...` or `host:port`), over a fresh connection. */
export function healthCheck(target: string, service = '', timeoutMs = 5_000): Promise<HealthCheckResponse> {
  const Client = makeGenericClientConstructor(grpcServiceDefinition(Health), 'Health');
  const client = new Client(target, credentials.createInsecure(), {}) as unknown as {
    check: (req: unknown, md: Metadata, opts: object, cb: (e: ServiceError | null, r: HealthCheckResponse) => void) => void;
    close(): void;
  };
  return new Promise<HealthCheckResponse>((resolve, reject) => {
    client.check(create(HealthCheckRequestSchema, { service }), new Metadata(), { deadline: Date.now() + timeoutMs }, (error, response) => {
      client.close();
      if (error) reject(error);
      else resolve(response);
    });
  });
}

/**
 * What each of the daemon's listeners (every gRPC address it bound, and its metrics endpoint)
 * answers now: `SERVING` for gRPC, `200` for metrics, else the error. A daemon that lost a socket
 * to a request shows it here.
 */
export async function listenerAnswers(daemon: RunningDaemon): Promise<Record<string, string>> {
  const answers: Record<string, string> = {};
  for (const address of daemon.server.addresses) {
    const target = grpcTarget(address);
    try {
      answers[target] = HealthCheckResponse_ServingStatus[(await healthCheck(target)).status] ?? 'unknown';
    } catch (error) {
      answers[target] = `failed: ${(error as Error).message}`;
    }
  }
  const metrics = daemon.operations.metricsAddress;
  if (metrics) {
    const target = metrics.kind === 'unix' ? { socketPath: metrics.path } : { url: `http://127.0.0.1:${metrics.port}` };
    const key = `metrics ${grpcTarget(metrics)}`;
    try {
      answers[key] = String((await scrape(target)).status);
    } catch (error) {
      answers[key] = `failed: ${(error as Error).message}`;
    }
  }
  return answers;
}
