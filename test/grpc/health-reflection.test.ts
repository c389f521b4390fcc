/**
 * The daemon's standard gRPC services: health checking (grpc.health.v1) through a grpc-js client
 * built from the generated schemas, and server reflection through a real reflection client,
 * `buf curl`, which learns the schema from the daemon alone.
 */
import { expect, it } from '@jest/globals';
import { create } from '@bufbuild/protobuf';
import { credentials, makeGenericClientConstructor, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import {
  Health,
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
} from '../../gen/grpc/health/v1/health_pb.js';
import { ProcessState, VmProcessService } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { grpcServiceDefinition } from '../../src/rpc/grpc-service-definition.js';
import { describeAsRoot } from '../helpers/root.js';
import { useGrpcSuite } from './support.js';

const BUF = fileURLToPath(new URL('../../node_modules/.bin/buf', import.meta.url));
const SERVICE = 'vmprocess.v1.VmProcessService';

describeAsRoot('gRPC end to end: health and reflection', () => {
  const s = useGrpcSuite();

  const socketPath = () => s.harness.address.replace(/^unix:\/\//, '');

  function bufCurl(args: string[], data?: string) {
    return execa(
      BUF,
      [
        'curl',
        '--protocol',
        'grpc',
        '--http2-prior-knowledge',
        '--unix-socket',
        socketPath(),
        ...(data !== undefined ? ['-d', data] : []),
        ...args,
      ],
      { reject: false, timeout: 30_000, env: { HOME: s.fixture.root, BUF_CACHE_DIR: `${s.fixture.root}/buf-cache` } },
    );
  }

  function healthCheck(service: string): Promise<HealthCheckResponse> {
    const Client = makeGenericClientConstructor(grpcServiceDefinition(Health), 'Health');
    const client = new Client(s.harness.address, credentials.createInsecure(), {}) as unknown as {
      check: (req: unknown, md: Metadata, opts: object, cb: (e: ServiceError | null, r: HealthCheckResponse) => void) => void;
      close(): void;
    };
    return new Promise<HealthCheckResponse>((resolve, reject) => {
      client.check(create(HealthCheckRequestSchema, { service }), new Metadata(), { deadline: Date.now() + 10_000 }, (error, response) => {
        client.close();
        if (error) reject(error);
        else resolve(response);
      });
    });
  }

  it('Health/Check reports SERVING for the server and for VmProcessService', async () => {
    for (const service of ['', SERVICE]) {
      const response = await healthCheck(service);
      expect({ service, status: HealthCheckResponse_ServingStatus[response.status] }).toEqual({ service, status: 'SERVING' });
    }
  });

  it('Health/Check of an unknown service is NOT_FOUND', async () => {
    await expect(healthCheck('no.such.Service')).rejects.toMatchObject({ code: status.NOT_FOUND });
  });

  it('buf curl lists the services and methods it learns through reflection', async () => {
    const services = await bufCurl(['--list-services', 'http://localhost']);
    expect({ exitCode: services.exitCode, stderr: services.stderr }).toEqual({ exitCode: 0, stderr: '' });
    expect(services.stdout.split('\n')).toEqual(expect.arrayContaining([SERVICE, 'grpc.health.v1.Health']));

    const methods = await bufCurl(['--list-methods', 'http://localhost']);
    expect({ exitCode: methods.exitCode, stderr: methods.stderr }).toEqual({ exitCode: 0, stderr: '' });
    const listed = methods.stdout.split('\n').filter(Boolean);
    // Exactly what the proto declares, every method of it.
    const declared = VmProcessService.methods.map((m) => `${SERVICE}/${m.name}`).sort();
    expect(declared).toEqual(expect.arrayContaining([`${SERVICE}/StartProcess`, `${SERVICE}/WatchExits`, `${SERVICE}/SnapshotVm`]));
    expect(listed.filter((m) => m.startsWith(`${SERVICE}/`)).sort()).toEqual(declared);
    expect(listed).toEqual(expect.arrayContaining(['grpc.health.v1.Health/Check', 'grpc.health.v1.Health/Watch']));
  }, 60_000);

  it('buf curl calls ListProcesses, GetProcess and Health/Check with JSON built from the reflected schema', async () => {
    const id = s.id('reflect');
    const started = (await s.startBoot(id, {}, { labels: { via: 'buf-curl' } })).process!;
    try {
      const list = await bufCurl([`http://localhost/${SERVICE}/ListProcesses`], JSON.stringify({ states: ['PROCESS_STATE_RUNNING'], labels: { via: 'buf-curl' } }));
      expect({ exitCode: list.exitCode, stderr: list.stderr }).toEqual({ exitCode: 0, stderr: '' });
      const listed = JSON.parse(list.stdout) as { processes: Array<Record<string, unknown>>; exitSequence?: string };
      expect(listed.processes).toHaveLength(1);
      expect(listed.processes[0]).toMatchObject({
        sandboxId: id,
        pid: started.pid,
        state: 'PROCESS_STATE_RUNNING',
        mode: 'LAUNCH_MODE_BOOT',
        labels: { via: 'buf-curl' },
        vmmVersion: '53.0.0',
        socketPath: started.socketPath,
      });

      const empty = await bufCurl([`http://localhost/${SERVICE}/ListProcesses`], '{}');
      expect(empty.exitCode).toBe(0);
      expect((JSON.parse(empty.stdout) as { processes: unknown[] }).processes.length).toBeGreaterThanOrEqual(1);

      const missing = await bufCurl([`http://localhost/${SERVICE}/GetProcess`], JSON.stringify({ sandboxId: 'nope' }));
      expect(missing.exitCode).not.toBe(0);
      expect(missing.stderr).toContain('not_found');
      expect(missing.stderr).toContain('no process for sandbox \\"nope\\"');

      const health = await bufCurl(['http://localhost/grpc.health.v1.Health/Check'], JSON.stringify({ service: SERVICE }));
      expect({ exitCode: health.exitCode, body: JSON.parse(health.stdout || 'null') }).toEqual({ exitCode: 0, body: { status: 'SERVING' } });
    } finally {
      await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    }
    expect((await s.client.getProcess({ sandboxId: id })).process?.state).toBe(ProcessState.EXITED);
  }, 60_000);
});
