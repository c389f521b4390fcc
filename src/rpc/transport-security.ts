import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { ServerCredentials } from '@grpc/grpc-js';
import { VmprocError } from '../errors.js';
import { grpcTarget, type ListenAddress } from './listen-address.js';

/** PEM files of the TLS served on TCP listeners (`--tls-cert`, `--tls-key`, `--tls-client-ca`). */
export interface TlsFiles {
  /** The server's certificate chain, leaf first. */
  readonly certPath: string;
  readonly keyPath: string;
  /** CA bundle that client certificates must chain to: when set, every client must present one (mutual TLS). */
  readonly clientCaPath?: string;
}

/**
 * True for addresses only this host can reach: 127.0.0.0/8, ::1 (also IPv4-mapped) and `localhost`.
 * Anything else, including 0.0.0.0, :: and every other host name, may be reachable from the network.
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.toLowerCase().replace(/^::ffff:/, '');
  if (bare === 'localhost' || bare === '::1') return true;
  return isIP(bare) === 4 && bare.startsWith('127.');
}

/**
 * The daemon starts and kills VMMs as root: whoever can call it owns the host. So plaintext gRPC
 * is allowed only where the network cannot reach it (unix sockets, whose file mode decides, and
 * loopback TCP), unless the operator says otherwise explicitly.
 */
export function checkListenSecurity(listen: readonly ListenAddress[], options: { readonly tls?: TlsFiles; readonly insecureListen?: boolean }): void {
  if (options.tls || options.insecureListen) return;
  const exposed = listen.filter((address) => address.kind === 'tcp' && !isLoopbackHost(address.host));
  if (exposed.length > 0) {
    throw new VmprocError(
      'invalid-argument',
      `refusing to serve plaintext gRPC on ${exposed.map(grpcTarget).join(', ')}, which the network can reach: ` +
        'give --tls-cert and --tls-key (and --tls-client-ca for mutual TLS), listen on loopback or a unix socket, ' +
        'or pass --insecure-listen (VMPROCD_INSECURE_LISTEN=1) if something else protects it',
    );
  }
}

/**
 * Reads and checks the TLS files now, so that a wrong path, a key that does not match the
 * certificate or an expired certificate stops the daemon at start-up with the flag named, rather
 * than failing every handshake later. Certificates are read once: to rotate them, restart the
 * daemon (VMMs keep running across restarts).
 */
export async function loadServerCredentials(tls: TlsFiles, now: Date = new Date()): Promise<ServerCredentials> {
  const cert = await readPem('--tls-cert', tls.certPath);
  const key = await readPem('--tls-key', tls.keyPath);
  const clientCa = tls.clientCaPath === undefined ? undefined : await readPem('--tls-client-ca', tls.clientCaPath);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (cause) {
    throw new VmprocError('invalid-argument', `--tls-cert ${tls.certPath} is not a PEM certificate: ${(cause as Error).message}`, { cause });
  }
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(key))) {
      throw new VmprocError('invalid-argument', `--tls-key ${tls.keyPath} is not the private key of --tls-cert ${tls.certPath}`);
    }
  } catch (cause) {
    if (cause instanceof VmprocError) throw cause;
    throw new VmprocError('invalid-argument', `--tls-key ${tls.keyPath} is not a PEM private key: ${(cause as Error).message}`, { cause });
  }
  if (new Date(leaf.validTo) < now) {
    throw new VmprocError('invalid-argument', `--tls-cert ${tls.certPath} expired on ${leaf.validTo}`);
  }
  if (clientCa !== undefined) {
    try {
      new X509Certificate(clientCa);
    } catch (cause) {
      throw new VmprocError('invalid-argument', `--tls-client-ca ${tls.clientCaPath} is not a PEM certificate: ${(cause as Error).message}`, { cause });
    }
  }
  // With a client CA, a client without a certificate signed by it fails the handshake.
  return ServerCredentials.createSsl(clientCa ?? null, [{ private_key: key, cert_chain: cert }], clientCa !== undefined);
}

async function readPem(flag: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (cause) {
    throw new VmprocError('failed-precondition', `${flag} ${path} cannot be read: ${(cause as Error).message}`, { cause });
  }
}
