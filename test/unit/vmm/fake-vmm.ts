/**
 * Fake Cloud Hypervisor API sockets for unit tests: a net server on a temporary unix socket that records the
 * raw request bytes and answers with exact bytes as CH's micro-http writes them.
 */
import { mkdtemp, rename, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

export interface RecordedRequest {
  raw: string;
  method: string;
  path: string;
  /** Header names lower-cased. */
  headers: Record<string, string>;
  body: string;
}

/** Decides what the fake VMM does with each complete request on a connection. */
export type FakeVmmBehaviour = (request: RecordedRequest, socket: Socket) => void;

export interface FakeVmm {
  socketPath: string;
  requests: RecordedRequest[];
  /** Connections accepted so far. */
  connections: number;
  /** Connections the client closed (half-close or full close seen by the server). */
  closedByClient: number;
  close(): Promise<void>;
}

/** CH's response bytes: no reason phrase, keep-alive, Content-Length except on 204. */
export const chBytes = {
  json(status: number, body: unknown): string {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return (
      `HTTP/1.1 ${status} \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`
    );
  },
  noContent(): string {
    return 'HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n';
  },
  ok(): string {
    return 'HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n';
  },
  /** micro-http's canned answer to an 11th connection: note "503" with no space and no reason phrase. */
  serverFull(): string {
    return 'HTTP/1.1 503\r\nServer: Firecracker API\r\nConnection: close\r\nContent-Length: 40\r\n\r\n{ "error": "Too many open connections" }';
  },
};

export const PING_BODY = { build_version: 'v53.0', version: '53.0.0', pid: 1234, features: ['io_uring', 'kvm'] };

export async function makeTempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  // Short base: unix socket paths are limited to 107 bytes.
  const dir = await mkdtemp(path.join(tmpdir(), 'vmm-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function startFakeVmm(
  socketPath: string,
  behaviour: FakeVmmBehaviour,
  onAccept?: (socket: Socket) => void,
): Promise<FakeVmm> {
  const sockets = new Set<Socket>();
  const fake: FakeVmm = {
    socketPath,
    requests: [],
    connections: 0,
    closedByClient: 0,
    close: () => closeServer(server, sockets),
  };
  const server = createServer((socket) => {
    fake.connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('end', () => (fake.closedByClient += 1));
    socket.on('error', () => {});
    onAccept?.(socket);
    let buffered: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      for (;;) {
        const parsed = takeRequest(buffered);
        if (parsed === undefined) return;
        buffered = parsed.rest;
        fake.requests.push(parsed.request);
        behaviour(parsed.request, socket);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return fake;
}

/** Leaves a socket file nobody listens on, as a SIGKILLed VMM does (node unlinks on a clean close). */
export async function makeStaleSocket(socketPath: string): Promise<void> {
  const bindPath = `${socketPath}.binding`;
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(bindPath, () => resolve()));
  await rename(bindPath, socketPath);
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

function takeRequest(buffered: Buffer): { request: RecordedRequest; rest: Buffer } | undefined {
  const headerEnd = buffered.indexOf('\r\n\r\n');
  if (headerEnd < 0) return undefined;
  const head = buffered.subarray(0, headerEnd).toString('latin1');
  const [requestLine = '', ...headerLines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = Number(headers['content-length'] ?? 0);
  const end = headerEnd + 4 + length;
  if (buffered.length < end) return undefined;
  const [method = '', requestPath = ''] = requestLine.split(' ');
  return {
    request: {
      raw: buffered.subarray(0, end).toString('utf8'),
      method,
      path: requestPath,
      headers,
      body: buffered.subarray(headerEnd + 4, end).toString('utf8'),
    },
    rest: buffered.subarray(end),
  };
}

async function closeServer(server: Server, sockets: Set<Socket>): Promise<void> {
  for (const socket of sockets) socket.destroy();
  if (!server.listening) return;
  await new Promise<void>((resolve) => server.close(() => resolve()));
}
