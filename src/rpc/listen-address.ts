import { VmprocError } from '../errors.js';
import { MAX_SOCKET_PATH_BYTES } from '../unix-socket-path.js';

export type ListenAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

/** `unix:///run/vmprocd/vmprocd.sock`, `127.0.0.1:50051`, `[::1]:50051` or `0.0.0.0:0`. */
export function parseListenAddress(text: string): ListenAddress {
  if (text.startsWith('unix://')) {
    const path = text.slice('unix://'.length);
    if (!path.startsWith('/')) throw new VmprocError('invalid-argument', `listen address ${text}: a unix socket needs an absolute path (unix:///run/x.sock)`);
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
      throw new VmprocError('invalid-argument', `listen address ${text}: a unix socket path holds at most ${MAX_SOCKET_PATH_BYTES} bytes`);
    }
    return { kind: 'unix', path };
  }
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) {
    throw new VmprocError('invalid-argument', `listen address ${JSON.stringify(text)} is neither unix:///path nor host:port`);
  }
  return { kind: 'tcp', host: match[1]!.replace(/^\[|\]$/g, ''), port };
}

/** The grpc-js form of an address. */
export function grpcTarget(address: ListenAddress): string {
  if (address.kind === 'unix') return `unix://${address.path}`;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

export function formatListenAddress(address: ListenAddress): string {
  return grpcTarget(address);
}
