import { chmod, chown, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { VmprocError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ListenAddress } from '../rpc/listen-address.js';
import { removeStaleListenSocket } from '../rpc/server.js';

export interface MetricsServerOptions {
  readonly listen: ListenAddress;
  readonly registry: Registry;
  readonly logger: Logger;
  /** Mode and group of a unix socket, as for the gRPC sockets. */
  readonly unixSocketMode: number;
  readonly unixSocketGroup?: number;
}

export interface MetricsServer {
  /** The bound address, with the real port where port 0 was asked for. */
  readonly address: ListenAddress;
  close(): Promise<void>;
}

/**
 * Plain HTTP, `GET /metrics` in Prometheus's text format; anything else is 404 (405 for another
 * method). Metrics are read-only and name no sandbox (no per-sandbox labels), so, unlike the gRPC
 * API, the endpoint may listen on any address; put it behind TLS termination if it must cross an
 * untrusted network.
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { listen, registry, logger } = options;
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    registry.metrics().then(
      (body) => response.writeHead(200, { 'Content-Type': registry.contentType }).end(request.method === 'HEAD' ? undefined : body),
      (error: unknown) => {
        logger.error({ err: error }, 'cannot collect metrics');
        response.writeHead(500, { 'Content-Type': 'text/plain' }).end('cannot collect metrics\n');
      },
    );
  });
  // A scraper that connects and says nothing must not hold a socket forever.
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  if (listen.kind === 'unix') await removeStaleListenSocket(listen.path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (cause: Error) =>
      reject(new VmprocError('unavailable', `cannot serve metrics on ${describe(listen)}: ${cause.message}`, { cause })));
    if (listen.kind === 'unix') server.listen(listen.path, resolve);
    else server.listen(listen.port, listen.host, resolve);
  });
  let address: ListenAddress = listen;
  if (listen.kind === 'unix') {
    if (options.unixSocketGroup !== undefined) await chown(listen.path, -1, options.unixSocketGroup);
    await chmod(listen.path, options.unixSocketMode);
  } else {
    address = { ...listen, port: (server.address() as AddressInfo).port };
  }
  return {
    address,
    close: () => closeServer(server, listen),
  };
}

async function closeServer(server: Server, listen: ListenAddress): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    // Scrapers keep their connections alive between scrapes.
    server.closeAllConnections();
  });
  if (listen.kind === 'unix') await rm(listen.path, { force: true });
}

function describe(listen: ListenAddress): string {
  return listen.kind === 'unix' ? `unix://${listen.path}` : `${listen.host}:${listen.port}`;
}
