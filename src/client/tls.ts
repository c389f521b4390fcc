import { type ChannelCredentials, credentials } from '@grpc/grpc-js';

export interface TlsOptions {
  /** PEM of the CA that signed the daemon's certificate (the `--tls-cert` it serves). */
  readonly ca: Buffer;
  /** PEM client certificate chain, for a daemon that requires one (`--tls-client-ca`). Needs `key`. */
  readonly cert?: Buffer;
  /** PEM private key of `cert`. */
  readonly key?: Buffer;
}

/**
 * Channel credentials for a daemon serving TLS, or mutual TLS when `cert` and `key` are given.
 * The server's certificate is checked against `ca` and the target's host name; for a unix socket
 * target, or a certificate issued for another name, set VmProcessClientOptions.serverName.
 */
export function tlsCredentials(options: TlsOptions): ChannelCredentials {
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new TypeError('tlsCredentials: a client certificate needs its key, and a key its certificate');
  }
  return credentials.createSsl(options.ca, options.key ?? null, options.cert ?? null);
}
