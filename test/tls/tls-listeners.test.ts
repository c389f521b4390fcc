/**
 * Transport security with the real daemon binary (root): TLS and mutual TLS on TCP listeners,
 * the refusal of plaintext on addresses the network can reach, and unix socket permissions.
 * Certificates are made with openssl for each run.
 */
import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { type ChannelCredentials, credentials, status } from '@grpc/grpc-js';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { killProcessesMentioning } from '../helpers/process-scan.js';
import { describeAsRoot } from '../helpers/root.js';
import { createSandboxFixture, type SandboxFixture } from '../helpers/sandbox-fixture.js';
import { scrape } from '../metrics/scrape.js';
import { createTestPki, type TestPki } from './certs.js';

/** The TCP port the daemon logged it listens on. */
function tcpPort(daemon: DaemonProcess): number {
  const listen = (daemon.servingLine?.listen ?? []) as string[];
  const tcp = listen.find((address) => !address.startsWith('unix://'));
  if (!tcp) throw new Error(`no TCP listener in ${JSON.stringify(listen)}`);
  return Number(tcp.slice(tcp.lastIndexOf(':') + 1));
}

/** One ListProcesses through `credentials`: resolves with the gRPC status code (OK is 0). */
async function listWith(address: string, channelCredentials: ChannelCredentials): Promise<number> {
  const client = new VmProcessClient(address, { credentials: channelCredentials });
  try {
    await client.listProcesses({}, { timeoutMs: 5_000 });
    return status.OK;
  } catch (error) {
    return (error as { code: number }).code;
  } finally {
    client.close();
  }
}

let pki: TestPki;
let fixture: SandboxFixture;
const daemons: DaemonProcess[] = [];

/** A daemon on its own state dir and socket, stopped in afterAll if the test did not. */
async function startDaemon(name: string, extraArgs: string[]): Promise<DaemonProcess> {
  const daemon = await DaemonProcess.start(fixture, { stateDir: join(fixture.root, `state-${name}`), socketPath: join(fixture.root, `${name}.sock`), extraArgs });
  daemons.push(daemon);
  return daemon;
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) return;
  pki = await createTestPki();
  fixture = await createSandboxFixture();
});

afterAll(async () => {
  for (const daemon of daemons) if (!daemon.exit) await daemon.stop().catch(() => daemon.kill());
  if (fixture) {
    await killProcessesMentioning(fixture.root);
    await fixture.remove();
  }
  await pki?.remove();
});

describeAsRoot('mutual TLS on a TCP listener', () => {
  let daemon: DaemonProcess;
  let address: string;
  let ca: Buffer;
  beforeAll(async () => {
    daemon = await startDaemon('mtls', ['--listen', '127.0.0.1:0', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-client-ca', pki.caCert]);
    address = `127.0.0.1:${tcpPort(daemon)}`;
    ca = await pki.read(pki.caCert);
  });

  it('serves a client whose certificate the CA signed', async () => {
    expect(daemon.servingLine).toMatchObject({ tls: 'mutual' });
    expect(await listWith(address, credentials.createSsl(ca, await pki.read(pki.clientKey), await pki.read(pki.clientCert)))).toBe(status.OK);
    // The certificate names localhost too.
    expect(await listWith(`localhost:${tcpPort(daemon)}`, credentials.createSsl(ca, await pki.read(pki.clientKey), await pki.read(pki.clientCert)))).toBe(status.OK);
  });

  it('rejects a TLS client without a certificate', async () => {
    expect(await listWith(address, credentials.createSsl(ca))).toBe(status.UNAVAILABLE);
  });

  it('rejects a client whose certificate another CA signed', async () => {
    expect(await listWith(address, credentials.createSsl(ca, await pki.read(pki.rogueClientKey), await pki.read(pki.rogueClientCert)))).toBe(status.UNAVAILABLE);
  });

  it('rejects a plaintext client', async () => {
    expect(await listWith(address, credentials.createInsecure())).toBe(status.UNAVAILABLE);
  });

  it('is rejected by a client that does not trust the server\'s CA', async () => {
    const rogueCa = await pki.read(pki.rogueCaCert);
    expect(await listWith(address, credentials.createSsl(rogueCa, await pki.read(pki.clientKey), await pki.read(pki.clientCert)))).toBe(status.UNAVAILABLE);
  });

  it('leaves the unix socket plaintext, guarded by its mode (0600, root)', async () => {
    expect(await listWith(daemon.address, credentials.createInsecure())).toBe(status.OK);
    const socket = await stat(daemon.socketPath);
    expect({ mode: socket.mode & 0o777, uid: socket.uid, gid: socket.gid }).toEqual({ mode: 0o600, uid: 0, gid: 0 });
  });
});

describeAsRoot('server-only TLS, the plaintext policy, socket groups', () => {
  it('with TLS but no client CA, serves any client that trusts the server', async () => {
    const daemon = await startDaemon('tls', ['--listen', '127.0.0.1:0', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey]);
    const address = `127.0.0.1:${tcpPort(daemon)}`;
    expect(daemon.servingLine).toMatchObject({ tls: 'server' });
    expect(await listWith(address, credentials.createSsl(await pki.read(pki.caCert)))).toBe(status.OK);
    expect(await listWith(address, credentials.createInsecure())).toBe(status.UNAVAILABLE);
    await daemon.stop();
  });

  it('refuses plaintext on an address the network can reach, naming the flags', async () => {
    for (const listen of ['0.0.0.0:0', '[::]:0', 'example.internal:50051']) {
      const refused = DaemonProcess.launch(fixture, { stateDir: join(fixture.root, 'state-refused'), socketPath: join(fixture.root, 'refused.sock'), extraArgs: ['--listen', listen] });
      daemons.push(refused);
      expect((await refused.waitExit()).code).toBe(2);
      expect(refused.stderr).toContain('refusing to serve plaintext gRPC');
      expect(refused.stderr).toContain('--insecure-listen');
      expect(refused.stderr).toContain('--tls-cert');
    }
  });

  it('serves plaintext there with --insecure-listen, and says so', async () => {
    const daemon = await startDaemon('insecure', ['--listen', '0.0.0.0:0', '--insecure-listen']);
    expect(await listWith(`127.0.0.1:${tcpPort(daemon)}`, credentials.createInsecure())).toBe(status.OK);
    expect(daemon.logs.some((line) => String(line.msg).includes('plaintext gRPC where the network can reach it'))).toBe(true);
    await daemon.stop();
  });

  it('gives unix sockets (gRPC and metrics) a group and mode 0660 with --socket-group', async () => {
    const group = await someGroup();
    const metricsSocket = join(fixture.root, 'metrics.sock');
    const daemon = await startDaemon('group', ['--socket-group', group.name, '--metrics-listen', `unix://${metricsSocket}`]);
    for (const path of [daemon.socketPath, metricsSocket]) {
      const socket = await stat(path);
      expect({ path, mode: socket.mode & 0o777, gid: socket.gid }).toEqual({ path, mode: 0o660, gid: group.gid });
    }
    const scraped = await scrape({ socketPath: metricsSocket });
    expect(scraped.status).toBe(200);
    expect(scraped.value('vmprocd_processes', { state: 'running' })).toBe(0);
    await daemon.stop();
  });

  it('refuses an unknown socket group, and TLS files that do not fit', async () => {
    const cases: Array<[string[], number, string]> = [
      [['--socket-group', 'no-such-group-vmpt'], 1, '--socket-group no-such-group-vmpt is not a group'],
      [['--listen', '127.0.0.1:0', '--tls-cert', pki.serverCert, '--tls-key', pki.clientKey], 1, 'is not the private key of --tls-cert'],
      [['--listen', '127.0.0.1:0', '--tls-cert', join(pki.dir, 'missing.crt'), '--tls-key', pki.serverKey], 1, '--tls-cert'],
      [['--tls-cert', pki.serverCert], 2, '--tls-cert and --tls-key go together'],
      [['--tls-client-ca', pki.caCert], 2, '--tls-client-ca needs --tls-cert'],
    ];
    for (const [extraArgs, code, message] of cases) {
      const refused = DaemonProcess.launch(fixture, { stateDir: join(fixture.root, 'state-bad'), socketPath: join(fixture.root, 'bad.sock'), extraArgs });
      daemons.push(refused);
      expect({ code: (await refused.waitExit()).code, says: refused.output.includes(message) }).toEqual({ code, says: true });
    }
  });
});

/** A group other than root's, from the group database. */
async function someGroup(): Promise<{ name: string; gid: number }> {
  for (const line of (await readFile('/etc/group', 'utf8')).split('\n')) {
    const [name, , gid] = line.split(':');
    if (name && gid && Number(gid) !== 0) return { name, gid: Number(gid) };
  }
  throw new Error('no group other than root in /etc/group');
}
