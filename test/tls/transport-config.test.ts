/**
 * The operations settings as parsed from flags and environment, the plaintext policy, and the
 * start-up checks of TLS files; no root, no daemon.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDaemonConfig, USAGE } from '../../src/daemon/config.js';
import { byteSize } from '../../src/daemon/operations-config.js';
import { parseListenAddress } from '../../src/rpc/listen-address.js';
import { checkListenSecurity, isLoopbackHost, loadServerCredentials } from '../../src/rpc/transport-security.js';
import { createTestPki, type TestPki } from './certs.js';

const VMM = ['--vmm-bin', '/usr/local/bin/cloud-hypervisor'];

function config(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const parsed = parseDaemonConfig([...VMM, ...argv], env);
  if (parsed.help) throw new Error('unexpected --help');
  return parsed.config;
}

describe('isLoopbackHost', () => {
  it.each([
    ['127.0.0.1', true], ['127.1.2.3', true], ['::1', true], ['localhost', true], ['LOCALHOST', true], ['::ffff:127.0.0.1', true],
    ['0.0.0.0', false], ['::', false], ['10.0.0.1', false], ['192.168.1.1', false], ['example.com', false], ['127.example.com', false], ['::2', false],
  ])('%s -> %s', (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });
});

describe('checkListenSecurity', () => {
  const tls = { certPath: '/c', keyPath: '/k' };
  it('allows unix sockets and loopback TCP in plaintext', () => {
    expect(() => checkListenSecurity(['unix:///run/x.sock', '127.0.0.1:1', '[::1]:2', 'localhost:3'].map(parseListenAddress), {})).not.toThrow();
  });

  it('refuses plaintext on any other TCP address, naming each and the flags that fix it', () => {
    const attempt = () => checkListenSecurity(['127.0.0.1:1', '0.0.0.0:50051', '[::]:50052'].map(parseListenAddress), {});
    expect(attempt).toThrow(expect.objectContaining({ code: 'invalid-argument' }));
    expect(attempt).toThrow(/0\.0\.0\.0:50051, \[::\]:50052.*--tls-cert and --tls-key.*--insecure-listen/);
  });

  it('allows them with TLS, or with --insecure-listen', () => {
    const exposed = [parseListenAddress('0.0.0.0:50051')];
    expect(() => checkListenSecurity(exposed, { tls })).not.toThrow();
    expect(() => checkListenSecurity(exposed, { insecureListen: true })).not.toThrow();
  });
});

describe('parseDaemonConfig: operations settings', () => {
  it('refuses a non-loopback plaintext listener from the environment as from flags', () => {
    expect(() => config([], { VMPROCD_LISTEN: 'unix:///run/v.sock,0.0.0.0:50051' })).toThrow(/--insecure-listen/);
    expect(config([], { VMPROCD_LISTEN: '0.0.0.0:50051', VMPROCD_INSECURE_LISTEN: '1' }).insecureListen).toBe(true);
    expect(config(['--insecure-listen', '--listen', '0.0.0.0:50051']).insecureListen).toBe(true);
    expect(() => config([], { VMPROCD_INSECURE_LISTEN: 'perhaps' })).toThrow(/VMPROCD_INSECURE_LISTEN must be 1\/true\/yes or 0\/false\/no/);
    expect(config([], { VMPROCD_INSECURE_LISTEN: 'false' }).insecureListen).toBe(false);
  });

  it('takes TLS files from flags or environment, and only as a whole', () => {
    expect(config(['--tls-cert', '/etc/v/c.pem', '--tls-key', '/etc/v/k.pem', '--listen', '0.0.0.0:1']).tls).toEqual({ certPath: '/etc/v/c.pem', keyPath: '/etc/v/k.pem' });
    expect(config([], { VMPROCD_TLS_CERT: '/c', VMPROCD_TLS_KEY: '/k', VMPROCD_TLS_CLIENT_CA: '/ca' }).tls).toEqual({ certPath: '/c', keyPath: '/k', clientCaPath: '/ca' });
    expect(() => config(['--tls-key', '/k'])).toThrow('--tls-cert and --tls-key go together');
    expect(() => config(['--tls-client-ca', '/ca'])).toThrow('--tls-client-ca needs --tls-cert');
    expect(() => config(['--tls-cert', 'relative.pem', '--tls-key', '/k'])).toThrow(/--tls-cert/);
  });

  it('parses log caps, generations and the check interval', () => {
    expect(config(['--log-max-bytes', '1MiB', '--log-keep', '3', '--log-check-interval', '0.5'])).toMatchObject({ logMaxBytes: 1 << 20, logKeep: 3, logCheckIntervalMs: 500 });
    expect(config([], { VMPROCD_LOG_MAX_BYTES: '65536', VMPROCD_LOG_KEEP: '2', VMPROCD_LOG_CHECK_INTERVAL: '30' })).toMatchObject({ logMaxBytes: 65536, logKeep: 2, logCheckIntervalMs: 30_000 });
    expect(() => config(['--log-keep', '0'])).toThrow('--log-keep (or VMPROCD_LOG_KEEP) must be an integer from 1 to 100');
    expect(() => config(['--log-check-interval', '0'])).toThrow('--log-check-interval');
    expect(() => config(['--log-max-bytes', '16MB'])).toThrow('--log-max-bytes');
  });

  it.each([
    ['4096', 4096], ['4KiB', 4096], ['16MiB', 16 << 20], ['1GiB', 1 << 30],
  ])('byteSize(%s) = %d', (text, bytes) => {
    expect(byteSize('--x', text)).toBe(bytes);
  });

  it.each(['4095', '1KiB', '', '-1', '1.5MiB', '16M', 'lots'])('byteSize(%j) is refused', (text) => {
    expect(() => byteSize('--x', text)).toThrow(expect.objectContaining({ code: 'invalid-argument' }));
  });

  it('parses the metrics address and the socket group', () => {
    expect(config(['--metrics-listen', '127.0.0.1:9464']).metricsListen).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9464 });
    expect(config([], { VMPROCD_METRICS_LISTEN: 'unix:///run/vmprocd/metrics.sock' }).metricsListen).toEqual({ kind: 'unix', path: '/run/vmprocd/metrics.sock' });
    expect(config(['--socket-group', 'vmprocd']).socketGroup).toBe('vmprocd');
    expect(config(['--socket-group', '998']).socketGroup).toBe('998');
    expect(() => config(['--socket-group', 'a b'])).toThrow('--socket-group');
    expect(config([])).not.toHaveProperty('metricsListen');
  });

  it('documents every operations flag and its variable in --help', () => {
    for (const text of ['--log-max-bytes', 'VMPROCD_LOG_MAX_BYTES', '--log-keep', '--log-check-interval', '--metrics-listen', 'VMPROCD_METRICS_LISTEN',
      '--tls-cert', '--tls-key', '--tls-client-ca', 'VMPROCD_TLS_CLIENT_CA', '--insecure-listen', 'VMPROCD_INSECURE_LISTEN', '--socket-group', 'VMPROCD_SOCKET_GROUP']) {
      expect(USAGE).toContain(text);
    }
  });
});

describe('loadServerCredentials', () => {
  let pki: TestPki;
  beforeAll(async () => {
    pki = await createTestPki();
  });
  afterAll(async () => {
    await pki?.remove();
  });

  it('accepts a matching certificate and key, with or without a client CA', async () => {
    await expect(loadServerCredentials({ certPath: pki.serverCert, keyPath: pki.serverKey })).resolves.toBeDefined();
    await expect(loadServerCredentials({ certPath: pki.serverCert, keyPath: pki.serverKey, clientCaPath: pki.caCert })).resolves.toBeDefined();
  });

  it('names the flag when a file is missing, garbled or does not match', async () => {
    const garbage = join(pki.dir, 'garbage.pem');
    await writeFile(garbage, 'not a pem\n');
    await expect(loadServerCredentials({ certPath: join(pki.dir, 'nope.crt'), keyPath: pki.serverKey })).rejects.toMatchObject({ code: 'failed-precondition', message: expect.stringContaining('--tls-cert') });
    await expect(loadServerCredentials({ certPath: garbage, keyPath: pki.serverKey })).rejects.toMatchObject({ code: 'invalid-argument', message: expect.stringContaining('--tls-cert') });
    await expect(loadServerCredentials({ certPath: pki.serverCert, keyPath: garbage })).rejects.toMatchObject({ code: 'invalid-argument', message: expect.stringContaining('--tls-key') });
    await expect(loadServerCredentials({ certPath: pki.serverCert, keyPath: pki.clientKey })).rejects.toMatchObject({ message: expect.stringContaining('is not the private key of --tls-cert') });
    await expect(loadServerCredentials({ certPath: pki.serverCert, keyPath: pki.serverKey, clientCaPath: garbage })).rejects.toMatchObject({ message: expect.stringContaining('--tls-client-ca') });
  });

  it('refuses a certificate that has expired', async () => {
    const tomorrow = new Date(Date.now() + 3 * 24 * 3600 * 1000);
    await expect(loadServerCredentials({ certPath: pki.serverCert, keyPath: pki.serverKey }, tomorrow)).rejects.toMatchObject({ message: expect.stringContaining('expired') });
  });
});
