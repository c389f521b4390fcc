/**
 * A byte-level HTTP/1.1 client over a unix socket, for checking the stand-in VMM's exact wire format.
 *
 * Why not node:http: these tests assert the bytes themselves (no reason phrase, no Content-Length on a 204,
 * the 503 line), pipelining and requests split across writes, which a real client hides or normalises.
 */
import { connect, type Socket } from 'node:net';

export interface RawResponse {
  /** Status line and headers exactly as received, including the blank line that ends them. */
  head: string;
  status: number;
  /** Header names lower-cased. */
  headers: Record<string, string>;
  body: string;
  /** head + body: every byte of this response. */
  raw: string;
}

/** `METHOD target HTTP/1.1` with Host, and Content-Type/Content-Length when there is a body. */
export function buildRequest(method: string, target: string, body?: string, extraHeaders: string[] = []): string {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: localhost', ...extraHeaders];
  if (body !== undefined) {
    lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`);
  }
  return `${lines.join('\r\n')}\r\n\r\n${body ?? ''}`;
}

/** One client connection that parses responses off the byte stream, in order. */
export class RawConnection {
  private buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private ended = false;
  private failure: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('error', (error) => {
      this.failure = error;
      this.notify();
    });
  }

  /** Connects; rejects with the socket error (ENOENT, ECONNREFUSED, ...). */
  static open(socketPath: string): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(socketPath);
      const onError = (error: Error) => {
        socket.destroy();
        reject(error);
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve(new RawConnection(socket));
      });
    });
  }

  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (error) => (error ? reject(error) : resolve())));
  }

  /** Bytes received but not yet returned as part of a response. */
  get pendingBytes(): number {
    return this.buffer.length;
  }

  get isClosed(): boolean {
    return this.ended;
  }

  /** The next complete response; rejects if the connection closes first or nothing complete arrives in time. */
  async nextResponse(timeoutMs = 3000): Promise<RawResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const response = this.takeResponse();
      if (response) return response;
      if (this.ended || this.failure) {
        throw new Error(
          `connection closed before a complete response (${this.failure?.message ?? 'EOF'}); ` +
            `received: ${JSON.stringify(this.buffer.toString('latin1'))}`,
        );
      }
      if (!(await this.waitForActivity(deadline - Date.now()))) {
        const received = JSON.stringify(this.buffer.toString('latin1'));
        throw new Error(`no complete response within ${timeoutMs} ms; received: ${received}`);
      }
    }
  }

  /** Resolves once the server has closed the connection. */
  async waitClosed(timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (!(await this.waitForActivity(deadline - Date.now()))) {
        throw new Error(`connection still open after ${timeoutMs} ms`);
      }
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** False on timeout. */
  private waitForActivity(ms: number): Promise<boolean> {
    if (ms <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve(false);
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
  }

  private takeResponse(): RawResponse | undefined {
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const head = this.buffer.subarray(0, end + 4).toString('latin1');
    const [statusLine, ...headerLines] = head.slice(0, -4).split('\r\n');
    // micro_http writes "HTTP/1.1 204 \r\n" (no reason phrase) and its canned 503 as "HTTP/1.1 503\r\n".
    const match = /^HTTP\/1\.[01] (\d{3}) ?$/.exec(statusLine ?? '');
    if (!match) throw new Error(`bad status line ${JSON.stringify(statusLine)}`);
    const status = Number(match[1]);
    const headers: Record<string, string> = {};
    for (const line of headerLines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = status < 200 || status === 204 ? 0 : Number(headers['content-length'] ?? 0);
    if (this.buffer.length < end + 4 + length) return undefined;
    const body = this.buffer.subarray(end + 4, end + 4 + length).toString('utf8');
    this.buffer = this.buffer.subarray(end + 4 + length);
    return { head, status, headers, body, raw: head + body };
  }
}

/** One request on a fresh connection, closed afterwards. */
export async function rawRequest(
  socketPath: string,
  method: string,
  endpoint: string,
  body?: string,
  timeoutMs = 3000,
): Promise<RawResponse> {
  const connection = await RawConnection.open(socketPath);
  try {
    await connection.write(buildRequest(method, `/api/v1/${endpoint}`, body));
    return await connection.nextResponse(timeoutMs);
  } finally {
    connection.close();
  }
}
