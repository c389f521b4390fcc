import { chmod, chown, lstat, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { file_grpc_health_v1_health } from '../../gen/grpc/health/v1/health_pb.js';
import { file_vmprocess_v1_vmprocess, VmProcessService } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { VmprocError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { VmmLogs } from '../logs/vmm-logs.js';
import type { Supervisor } from '../core/supervisor.js';
import { grpcServiceDefinition } from './grpc-service-definition.js';
import { HealthService, ServingStatus } from './health-service.js';
import { grpcTarget, type ListenAddress } from './listen-address.js';
import { addReflection } from './reflection.js';
import { DEFAULT_LOG_STREAM_LIMITS, DEFAULT_WATCH_LIMITS, StreamCaps, connectionInterceptor } from './stream-caps.js';
import { type ServiceStreamCaps, vmProcessServiceImplementation } from './vm-process-service.js';

export const SERVICE_NAME = VmProcessService.typeName;

export interface RpcServerOptions {
  readonly supervisor: Supervisor;
  readonly logger: Logger;
  readonly listen: readonly ListenAddress[];
  /** Permissions of unix listening sockets: only root may talk to a root daemon by default. */
  readonly unixSocketMode?: number;
  /** Group of unix listening sockets (with a mode such as 0660 that lets the group in). */
  readonly unixSocketGroup?: number;
  /** Credentials of TCP listeners (TLS, see transport-security.ts); plaintext when unset. */
  readonly tcpCredentials?: ServerCredentials;
  /** VMM logs, for StreamLogs. */
  readonly logs: VmmLogs;
  /** Caps on open WatchExits and StreamLogs streams; the defaults when unset. */
  readonly streamCaps?: ServiceStreamCaps;
}

/** Calls one connection may have open at once. */
export const MAX_CONCURRENT_STREAMS = 256;
/** The largest request message the daemon reads. */
export const MAX_REQUEST_BYTES = 1024 * 1024;

export function defaultStreamCaps(): ServiceStreamCaps {
  return { watches: new StreamCaps('WatchExits and WatchEvents streams', DEFAULT_WATCH_LIMITS), logs: new StreamCaps('StreamLogs streams', DEFAULT_LOG_STREAM_LIMITS) };
}

export interface RpcServer {
  /** The bound addresses, with the real port where port 0 was asked for. */
  readonly addresses: readonly ListenAddress[];
  /**
   * Stops taking calls, reports NOT_SERVING, lets calls in flight finish for `graceMs`, then
   * cancels what is left and removes the unix sockets.
   */
  shutdown(graceMs: number): Promise<void>;
}

export async function startRpcServer(options: RpcServerOptions): Promise<RpcServer> {
  const server = new Server({
    // Exit streams are long-lived and mostly idle: keep dead peers from holding them forever.
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
    'grpc.keepalive_permit_without_calls': 1,
    // One connection may not hold more calls than this at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS):
    // a client beyond it waits for a free stream, the daemon never sees more.
    'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
    // Requests are small (the largest, a StartProcess with 64 labels at their cap, is ~80 KiB);
    // responses are at most a 1 MiB ListProcesses page or a 64 KiB log chunk.
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': 4 * 1024 * 1024,
    // Memory one connection's HTTP/2 session may use (headers, buffered frames) before new streams are refused.
    'grpc-node.max_session_memory': 16,
    interceptors: [connectionInterceptor()],
  });
  const caps = options.streamCaps ?? defaultStreamCaps();
  server.addService(grpcServiceDefinition(VmProcessService), vmProcessServiceImplementation(options.supervisor, options.logger, options.logs, caps));
  const health = new HealthService({ '': ServingStatus.SERVING, [SERVICE_NAME]: ServingStatus.SERVING });
  health.addToServer(server);
  addReflection(server, [file_vmprocess_v1_vmprocess, file_grpc_health_v1_health]);

  const addresses: ListenAddress[] = [];
  try {
    for (const address of options.listen) addresses.push(await bind(server, address, options));
  } catch (error) {
    server.forceShutdown();
    await removeUnixSockets(addresses);
    throw error;
  }

  return {
    addresses,
    async shutdown(graceMs: number) {
      health.setStatus('', ServingStatus.NOT_SERVING);
      health.setStatus(SERVICE_NAME, ServingStatus.NOT_SERVING);
      // Watchers have been told; what holds the server open now is unary calls finishing.
      health.endWatches();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await removeUnixSockets(addresses);
    },
  };
}

async function bind(server: Server, address: ListenAddress, options: RpcServerOptions): Promise<ListenAddress> {
  if (address.kind === 'unix') await removeStaleListenSocket(address.path);
  // TLS on TCP only: a unix socket is guarded by its file mode and group.
  const credentials = address.kind === 'tcp' && options.tcpCredentials ? options.tcpCredentials : ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(grpcTarget(address), credentials, (error, boundPort) => {
      if (error) reject(new VmprocError('unavailable', `cannot listen on ${grpcTarget(address)}: ${error.message}`, { cause: error }));
      else resolve(boundPort);
    });
  });
  if (address.kind === 'unix') {
    if (options.unixSocketGroup !== undefined) await chown(address.path, -1, options.unixSocketGroup);
    await chmod(address.path, options.unixSocketMode ?? 0o600);
    return address;
  }
  return { ...address, port };
}

/**
 * A socket left by a daemon that was killed would make the bind fail; one that still answers
 * belongs to a running daemon, which must not be hijacked.
 */
export async function removeStaleListenSocket(path: string): Promise<void> {
  try {
    if (!(await lstat(path)).isSocket()) {
      throw new VmprocError('failed-precondition', `listen path ${path} exists and is not a socket`);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  const answered = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (answered) throw new VmprocError('failed-precondition', `another process is listening on ${path}; is vmprocd already running?`);
  await rm(path, { force: true });
}

async function removeUnixSockets(addresses: readonly ListenAddress[]): Promise<void> {
  await Promise.all(addresses.map((a) => (a.kind === 'unix' ? rm(a.path, { force: true }) : undefined)));
}
