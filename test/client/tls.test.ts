/**
 * tlsCredentials against a real grpc-js server that serves TLS and requires client certificates
 * (what the daemon's --tls-cert/--tls-key/--tls-client-ca will do), with certificates made here.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ServerCredentials } from '@grpc/grpc-js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRpcError, Status } from '../../src/client/rpc-error.js';
import { tlsCredentials } from '../../src/client/tls.js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { startStubServer, type StubServer } from './stub-server.js';
import { makeTlsFiles, SERVER_NAME, type TlsFiles } from './tls-files.js';

describe('client: TLS and mutual TLS', () => {
  let dir: string;
  let tls: TlsFiles;
  let server: StubServer;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmpt-tls-'));
    tls = await makeTlsFiles(dir);
    const credentials = ServerCredentials.createSsl(
      await tls.read('ca.pem'),
      [{ cert_chain: await tls.read('server.pem'), private_key: await tls.read('server.key') }],
      true,
    );
    server = await startStubServer(() => ({ send: [], end: 'open' }), { credentials });
  });

  afterAll(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('calls go through with the CA, a client certificate and the server name', async () => {
    const client = new VmProcessClient(server.address, {
      credentials: tlsCredentials({ ca: await tls.read('ca.pem'), cert: await tls.read('client.pem'), key: await tls.read('client.key') }),
      serverName: SERVER_NAME,
    });
    try {
      const { process } = await client.getProcess({ sandboxId: 'sb-1' }, { timeoutMs: 5_000 });
      expect(process?.sandboxId).toBe('sb-1');
    } finally {
      client.close();
    }
  });

  it('without a client certificate, or with a plaintext channel, the server refuses: UNAVAILABLE', async () => {
    const noCert = new VmProcessClient(server.address, { credentials: tlsCredentials({ ca: await tls.read('ca.pem') }), serverName: SERVER_NAME });
    const plain = new VmProcessClient(server.address);
    try {
      for (const client of [noCert, plain]) {
        const error = await client.getProcess({ sandboxId: 'sb-1' }, { timeoutMs: 5_000 }).catch((e: unknown) => e);
        expect(isRpcError(error, Status.UNAVAILABLE)).toBe(true);
      }
    } finally {
      noCert.close();
      plain.close();
    }
  });

  it('a certificate without its key is refused up front', async () => {
    expect(() => tlsCredentials({ ca: Buffer.from('x'), cert: Buffer.from('y') })).toThrow('needs its key');
  });
});
