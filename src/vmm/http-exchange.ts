/**
 * One HTTP/1.1 request/response exchange with a VMM over a fresh connection, with a deadline and an
 * AbortSignal, and every failure mapped to a VmmApiError.
 *
 * Why node:http rather than a hand-written exchange over net.Socket: replayed against CH's real bytes
 * (micro-http), llhttp accepts everything CH sends: a status line with no reason phrase (`HTTP/1.1 204 \r\n`),
 * the 503 line with no space at all (`HTTP/1.1 503\r\n`), a 204 with no Content-Length, and keep-alive
 * replies that never close. It also frames bodies and detects truncation for us. Measured on a 2-core VM, a
 * hand-written exchange saves ~0.05 ms per ping when warm (p50 0.21-0.27 vs 0.19 ms) and ~0.45 ms from an idle
 * loop (1.7 vs 1.25 ms): not worth owning an HTTP parser. If that changes, only this module is affected.
 * The connection comes from `createConnection` (not an Agent), so it is used once and closed: CH serves at most
 * 10 connections and pooling would hold them.
 */
import * as http from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { VmmApiError, type VmmApiErrorInit, type VmmApiErrorKind } from './vmm-api-error.js';

/** Opens a byte stream to the API socket; injected by tests (and usable for fd-passing transports). */
export type ConnectToSocket = (socketPath: string) => Duplex;

/** CH's REST API uses only these two methods. */
export type VmmHttpMethod = 'GET' | 'PUT';

/** Every call has a deadline: the VMM's API is served by one thread and can hang (pitfall 5). */
export interface VmmCallOptions {
  timeoutMs: number;
  signal?: AbortSignal;
}

/** A 2xx answer. Non-2xx answers are `http-status` errors. */
export interface VmmResponse {
  status: number;
  body: string;
}

export interface ExchangeRequest {
  socketPath: string;
  connect: ConnectToSocket;
  method: VmmHttpMethod;
  /** The part after /api/v1/, e.g. `vm.restore`. */
  endpoint: string;
  /** JSON text; sent with an explicit Content-Length (micro-http cannot read chunked bodies). */
  body?: string;
}

/** Larger bodies are not something CH sends; stop reading rather than buffer without bound. */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

const MISSING_SOCKET_CODES = new Set(['ENOENT', 'ENOTDIR']);
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);

export function exchange(request: ExchangeRequest, options: VmmCallOptions): Promise<VmmResponse> {
  const { socketPath, connect, method, endpoint, body } = request;
  const { timeoutMs, signal } = options;
  const label = `${method} ${endpoint}`;

  return new Promise<VmmResponse>((resolve, reject) => {
    let connected = false;
    let requestSent = false;
    let settled = false;
    let clientRequest: http.ClientRequest | undefined;
    let timer: NodeJS.Timeout | undefined;

    const failure = (init: Omit<VmmApiErrorInit, 'endpoint' | 'socketPath' | 'requestSent'>) =>
      new VmmApiError({ ...init, endpoint: label, socketPath, requestSent });
    const onAbort = () => settle(failure({ kind: 'aborted', detail: `aborted: ${reasonText(signal?.reason)}`, cause: signal?.reason }));

    function settle(outcome: VmmResponse | VmmApiError): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      // Closes the connection even when CH keeps it alive; listeners stay attached to absorb late errors.
      clientRequest?.destroy();
      if (outcome instanceof VmmApiError) reject(outcome);
      else resolve(outcome);
    }

    if (signal?.aborted) {
      onAbort();
      return;
    }
    const headers: http.OutgoingHttpHeaders = { Host: 'localhost' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    try {
      clientRequest = http.request({
        method,
        path: `/api/v1/${endpoint}`,
        headers,
        createConnection: () => {
          const stream = connect(socketPath);
          // A net.Socket reports `connecting` until connect(2) completes; an injected stream is ready as given.
          connected = (stream as Partial<Socket>).connecting !== true;
          if (!connected) stream.once('connect', () => (connected = true));
          return stream;
        },
      });
    } catch (error) {
      settle(failure({ kind: 'refused', detail: `could not open a connection: ${reasonText(error)}`, cause: error }));
      return;
    }
    timer = setTimeout(
      () => settle(failure({ kind: 'timeout', detail: `no complete response within ${timeoutMs} ms` })),
      timeoutMs,
    );
    signal?.addEventListener('abort', onAbort, { once: true });

    clientRequest.on('finish', () => (requestSent = true));
    clientRequest.on('error', (error) => settle(failure(classifyTransportError(error, connected))));
    clientRequest.on('response', (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_RESPONSE_BYTES) {
          settle(failure({ kind: 'protocol', detail: `response body larger than ${MAX_RESPONSE_BYTES} bytes` }));
          return;
        }
        chunks.push(chunk);
      });
      response.on('error', (error) => settle(failure(classifyTransportError(error, true))));
      response.on('end', () => {
        const status = response.statusCode ?? 0;
        const text = Buffer.concat(chunks).toString('utf8');
        if (status >= 200 && status < 300) settle({ status, body: text });
        else settle(failure({ kind: 'http-status', status, body: text }));
      });
    });
    clientRequest.end(body);
  });
}

type TransportFailure = { kind: VmmApiErrorKind; detail: string; cause: unknown };

/** Maps a socket or parser error to a kind; `connected` separates "could not reach" from "lost mid-exchange". */
function classifyTransportError(error: Error, connected: boolean): TransportFailure {
  const code = (error as NodeJS.ErrnoException).code ?? '';
  if (MISSING_SOCKET_CODES.has(code)) {
    return { kind: 'socket-missing', detail: `the API socket does not exist (${code})`, cause: error };
  }
  if (code === 'ECONNREFUSED') {
    return {
      kind: 'refused',
      detail: 'connection refused (ECONNREFUSED): nothing listens on the socket (stale socket, or VMM not listening yet)',
      cause: error,
    };
  }
  if (code.startsWith('HPE_')) {
    return { kind: 'protocol', detail: `unparseable HTTP response (${code}: ${error.message})`, cause: error };
  }
  if (!connected) {
    return { kind: 'refused', detail: `could not connect (${code || error.message})`, cause: error };
  }
  const what = RESET_CODES.has(code) ? `${code}: ${error.message}` : code || error.message;
  return { kind: 'reset', detail: `the connection closed before a complete response (${what})`, cause: error };
}

function reasonText(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
}
