import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { createConnection } from 'node:net';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import { ChClient, isVmmApiError, VmmApiError } from '../../../src/vmm/index.js';
import { chBytes, makeStaleSocket, makeTempDir, PING_BODY, startFakeVmm, type FakeVmm } from './fake-vmm.js';

const call = { timeoutMs: 2000 };

let dir: string;
let cleanup: () => Promise<void>;
let socketPath: string;
let fake: FakeVmm | undefined;

beforeEach(async () => {
  ({ dir, cleanup } = await makeTempDir());
  socketPath = path.join(dir, 'api.sock');
});

afterEach(async () => {
  await fake?.close();
  fake = undefined;
  await cleanup();
});

async function rejection(promise: Promise<unknown>): Promise<VmmApiError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(VmmApiError);
  return error as VmmApiError;
}

/** Resolves once the fake has seen `count` client-side closes (the client must not hold connections). */
async function closedByClient(vmm: FakeVmm, count: number): Promise<void> {
  for (let waited = 0; vmm.closedByClient < count; waited += 5) {
    if (waited > 2000) throw new Error(`client closed ${vmm.closedByClient} of ${count} connections`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('ChClient requests', () => {
  it('pings with a bare GET and decodes the answer', async () => {
    fake = await startFakeVmm(socketPath, (_request, socket) => socket.write(chBytes.json(200, PING_BODY)));
    const ping = await new ChClient(socketPath).ping(call);

    expect(ping).toEqual({ buildVersion: 'v53.0', version: '53.0.0', pid: 1234, features: ['io_uring', 'kvm'] });
    const [request] = fake.requests;
    expect(request?.raw.startsWith('GET /api/v1/vmm.ping HTTP/1.1\r\n')).toBe(true);
    expect(request?.headers['host']).toBe('localhost');
    expect(request?.headers['content-length']).toBeUndefined();
    expect(request?.headers['transfer-encoding']).toBeUndefined();
    expect(request?.body).toBe('');
  });

  it('accepts a ping from a CH that predates pid and features', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(200, { build_version: 'v30.0', version: '30.0' })));
    await expect(new ChClient(socketPath).ping(call)).resolves.toEqual({
      buildVersion: 'v30.0',
      version: '30.0',
      pid: undefined,
      features: [],
    });
  });

  it('restores with OnDemand and resume as CH expects, and copes with a 204 without Content-Length on a kept-alive connection', async () => {
    fake = await startFakeVmm(socketPath, (_request, socket) => socket.write(chBytes.noContent()));
    await new ChClient(socketPath).restore(
      { sourceUrl: 'file:///var/lib/snap/a', memoryRestoreMode: 'OnDemand', resume: true },
      call,
    );

    const [request] = fake.requests;
    expect(request?.raw.startsWith('PUT /api/v1/vm.restore HTTP/1.1\r\n')).toBe(true);
    expect(request?.headers['content-type']).toBe('application/json');
    expect(request?.headers['content-length']).toBe(String(Buffer.byteLength(request?.body ?? '')));
    expect(request?.headers['transfer-encoding']).toBeUndefined();
    expect(JSON.parse(request?.body ?? '')).toEqual({
      source_url: 'file:///var/lib/snap/a',
      memory_restore_mode: 'OnDemand',
      resume: true,
      prefault: false,
    });
    // CH keeps the connection open; the client must close it itself.
    await closedByClient(fake, 1);
  });

  it('omits memory_restore_mode when it is not given', async () => {
    fake = await startFakeVmm(socketPath, (_request, socket) => socket.write(chBytes.noContent()));
    await new ChClient(socketPath).restore({ sourceUrl: 'file:///snap', prefault: true }, call);
    expect(JSON.parse(fake.requests[0]?.body ?? '')).toEqual({ source_url: 'file:///snap', resume: false, prefault: true });
  });

  it('decodes vm.info', async () => {
    const config = { cpus: { boot_vcpus: 2 }, memory: { size: 1073741824 } };
    fake = await startFakeVmm(socketPath, (_r, socket) =>
      socket.write(chBytes.json(200, { config, state: 'Paused', memory_actual_size: 1073741824 })),
    );
    await expect(new ChClient(socketPath).info(call)).resolves.toEqual({
      state: 'Paused',
      memoryActualSize: 1073741824,
      config,
      raw: JSON.stringify({ config, state: 'Paused', memory_actual_size: 1073741824 }),
    });
    expect(fake.requests[0]?.raw.startsWith('GET /api/v1/vm.info HTTP/1.1\r\n')).toBe(true);
  });

  it('decodes vm.counters exactly, u64::MAX included (beyond a JSON number)', async () => {
    const body = '{"net0":{"tx_bytes":12,"rx_frames":0},"rootfs":{"read_latency_min":18446744073709551615,"read_ops":3}}';
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(200, body)));
    await expect(new ChClient(socketPath).counters(call)).resolves.toEqual({
      net0: { tx_bytes: 12n, rx_frames: 0n },
      rootfs: { read_latency_min: 18446744073709551615n, read_ops: 3n },
    });
  });

  it('refuses a vm.counters body that is not counters', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(200, '{"net0":{"tx_bytes":"a lot"}}')));
    const error = await rejection(new ChClient(socketPath).counters(call));
    expect(error.kind).toBe('protocol');
  });

  it('sends vm.create, vm.snapshot and vm.resize bodies as JSON, and body-less actions without one', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.noContent()));
    const client = new ChClient(socketPath);
    await client.create({ cpus: { boot_vcpus: 1 } }, call);
    await client.snapshot('file:///s/1', call);
    await client.resize({ desired_vcpus: 2 }, call);
    await client.action('vm.pause', call);
    expect(fake.requests.map((r) => [r.method, r.path, r.body])).toEqual([
      ['PUT', '/api/v1/vm.create', '{"cpus":{"boot_vcpus":1}}'],
      ['PUT', '/api/v1/vm.snapshot', '{"destination_url":"file:///s/1"}'],
      ['PUT', '/api/v1/vm.resize', '{"desired_vcpus":2}'],
      ['PUT', '/api/v1/vm.pause', ''],
    ]);
  });

  it('uses one connection per request and closes each one', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(200, PING_BODY)));
    const client = new ChClient(socketPath);
    for (let i = 0; i < 3; i += 1) await client.ping(call);
    expect(fake.connections).toBe(3);
    await closedByClient(fake, 3);
  });

  it('sends generic requests and returns the raw 2xx answer', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.noContent()));
    const response = await new ChClient(socketPath).request('PUT', 'vm.snapshot', { destination_url: 'file:///s' }, call);
    expect(response).toEqual({ status: 204, body: '' });
    expect(fake.requests[0]?.body).toBe('{"destination_url":"file:///s"}');
  });

  it('sends an empty PUT with Content-Length 0, which micro-http treats as no body', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.noContent()));
    await new ChClient(socketPath).request('PUT', 'vm.resume', undefined, call);
    expect(fake.requests[0]?.headers['content-length']).toBe('0');
    expect(fake.requests[0]?.headers['transfer-encoding']).toBeUndefined();
  });

  it('refuses a socket path longer than sun_path instead of letting it be truncated', () => {
    const long = `/tmp/${'a'.repeat(103)}`;
    expect(() => new ChClient(long)).toThrow(/108 bytes, over the limit of 107/);
    expect(() => new ChClient(long.slice(0, -1))).not.toThrow();
  });

  it('rejects a malformed endpoint or timeout as a programming error', async () => {
    const client = new ChClient(socketPath);
    await expect(client.request('GET', 'vmm.ping HTTP/1.1\r\nX: y', undefined, call)).rejects.toThrow(TypeError);
    await expect(client.request('GET', 'vmm.ping', undefined, { timeoutMs: 0 })).rejects.toThrow(TypeError);
  });
});

describe('ChClient failures', () => {
  it('reports a 500 with its error chain in an actionable message', async () => {
    const chain = ['Error from API', 'The VM could not be restored', 'Error restoring memory'];
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(500, chain)));
    const error = await rejection(new ChClient(socketPath).restore({ sourceUrl: 'file:///snap' }, call));

    expect(error.kind).toBe('http-status');
    expect(error.status).toBe(500);
    expect(error.errorChain).toEqual(chain);
    expect(error.endpoint).toBe('PUT vm.restore');
    expect(error.socketPath).toBe(socketPath);
    expect(error.requestSent).toBe(true);
    expect(error.message).toBe(
      `PUT vm.restore on ${socketPath} failed with HTTP 500: Error from API: The VM could not be restored: Error restoring memory`,
    );
  });

  it('reports a 404 with its ["Not Found"] body', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(404, ['Not Found'])));
    const error = await rejection(new ChClient(socketPath).request('GET', 'vm.nonsense', undefined, call));
    expect(error).toMatchObject({ kind: 'http-status', status: 404, errorChain: ['Not Found'] });
    expect(error.message).toBe(`GET vm.nonsense on ${socketPath} failed with HTTP 404: Not Found`);
  });

  it("parses micro-http's 503 status line (no space, no reason) and keeps the non-chain body", async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => {
      socket.write(chBytes.serverFull());
      socket.destroy();
    });
    const error = await rejection(new ChClient(socketPath).ping(call));
    expect(error).toMatchObject({ kind: 'http-status', status: 503, errorChain: undefined });
    expect(error.body).toBe('{ "error": "Too many open connections" }');
    expect(error.message).toContain('failed with HTTP 503: { "error": "Too many open connections" }');
  });

  it('surfaces a 503 written before the request was read as http-status or reset (micro-http races the client)', async () => {
    // Like micro-http with 10 connections open: answer on accept and close, reading nothing.
    fake = await startFakeVmm(socketPath, () => {}, (socket) => {
      socket.write(chBytes.serverFull());
      socket.destroy();
    });
    const error = await rejection(new ChClient(socketPath).ping(call));
    expect(['http-status', 'reset']).toContain(error.kind);
    if (error.kind === 'http-status') expect(error.status).toBe(503);
  });

  it('reports a missing socket', async () => {
    const error = await rejection(new ChClient(socketPath).ping(call));
    expect(error).toMatchObject({ kind: 'socket-missing', endpoint: 'GET vmm.ping', requestSent: false });
    expect(error.message).toContain('does not exist (ENOENT)');
    expect((error.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('reports a stale socket nobody listens on as refused', async () => {
    await makeStaleSocket(socketPath);
    const error = await rejection(new ChClient(socketPath).ping(call));
    expect(error).toMatchObject({ kind: 'refused', requestSent: false });
    expect((error.cause as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
  });

  it('times out when the VMM accepts and never answers', async () => {
    fake = await startFakeVmm(socketPath, () => {});
    const startedAt = performance.now();
    const error = await rejection(new ChClient(socketPath).ping({ timeoutMs: 50 }));
    expect(error).toMatchObject({ kind: 'timeout', requestSent: true });
    expect(error.message).toBe(`GET vmm.ping on ${socketPath} failed: no complete response within 50 ms`);
    expect(performance.now() - startedAt).toBeLessThan(1000);
    await closedByClient(fake, 1);
  });

  it('reports a connection closed mid-response as reset', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => {
      socket.write(chBytes.json(200, PING_BODY).slice(0, 120));
      socket.destroy();
    });
    const error = await rejection(new ChClient(socketPath).ping(call));
    expect(error).toMatchObject({ kind: 'reset', requestSent: true });
  });

  it('reports a connection closed with no response at all as reset', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.destroy());
    const error = await rejection(new ChClient(socketPath).info(call));
    expect(error).toMatchObject({ kind: 'reset', requestSent: true, endpoint: 'GET vm.info' });
  });

  it('reports bytes that are not HTTP as a protocol error', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write('garbage\r\n\r\n'));
    const error = await rejection(new ChClient(socketPath).ping(call));
    expect(error.kind).toBe('protocol');
  });

  it('reports a 200 whose body is not what the endpoint promises as a protocol error', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(200, 'not json')));
    const notJson = await rejection(new ChClient(socketPath).ping(call));
    expect(notJson).toMatchObject({ kind: 'protocol', requestSent: true });
    expect(notJson.cause).toBeInstanceOf(SyntaxError);
    await fake.close();

    fake = await startFakeVmm(socketPath, (_r, socket) =>
      socket.write(chBytes.json(200, { config: {}, state: 'Hibernating', memory_actual_size: 0 })),
    );
    const badState = await rejection(new ChClient(socketPath).info(call));
    expect(badState.kind).toBe('protocol');
    expect(badState.message).toContain('unknown VM state "Hibernating"');
  });

  it('aborts an in-flight call with the signal and keeps its reason as the cause', async () => {
    fake = await startFakeVmm(socketPath, () => {});
    const controller = new AbortController();
    const pending = rejection(new ChClient(socketPath).ping({ timeoutMs: 5000, signal: controller.signal }));
    setTimeout(() => controller.abort(new Error('caller went away')), 10);
    const error = await pending;
    expect(error.kind).toBe('aborted');
    expect((error.cause as Error).message).toBe('caller went away');
    expect(error.message).toContain('aborted: caller went away');
  });

  it('does not connect at all when the signal is already aborted', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(200, PING_BODY)));
    const error = await rejection(new ChClient(socketPath).ping({ timeoutMs: 1000, signal: AbortSignal.abort() }));
    expect(error.kind).toBe('aborted');
    expect(fake.connections).toBe(0);
  });
});

describe('ChClient transport injection', () => {
  it('runs over any duplex stream the connect option returns', async () => {
    const written: Buffer[] = [];
    const connect = (target: string) => {
      expect(target).toBe('/nonexistent/fake.sock');
      const stream: Duplex = new Duplex({
        read() {},
        write(chunk: Buffer, _encoding, done) {
          written.push(chunk);
          if (Buffer.concat(written).includes('\r\n\r\n')) stream.push(chBytes.json(200, PING_BODY));
          done();
        },
      });
      return stream;
    };
    const ping = await new ChClient('/nonexistent/fake.sock', { connect }).ping(call);
    expect(ping.pid).toBe(1234);
    expect(Buffer.concat(written).toString()).toContain('GET /api/v1/vmm.ping HTTP/1.1');
  });

  it('passes the socket path to an injected net connector', async () => {
    fake = await startFakeVmm(socketPath, (_r, socket) => socket.write(chBytes.json(200, PING_BODY)));
    const targets: string[] = [];
    const client = new ChClient(socketPath, {
      connect: (target) => {
        targets.push(target);
        return createConnection(target);
      },
    });
    await client.ping(call);
    expect(targets).toEqual([socketPath]);
  });

  it('classifies errors with isVmmApiError', async () => {
    const error = await rejection(new ChClient(socketPath).ping(call));
    expect(isVmmApiError(error)).toBe(true);
    expect(isVmmApiError(error, 'socket-missing')).toBe(true);
    expect(isVmmApiError(error, 'refused')).toBe(false);
    expect(isVmmApiError(new Error('x'))).toBe(false);
  });
});
