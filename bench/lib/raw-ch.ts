import { connect } from 'node:net';

/**
 * The baseline of every VM call: one HTTP/1.1 request to Cloud Hypervisor's API on a fresh
 * unix-socket connection, as bare as it gets (no client library, no validation, no state kept).
 * Rejects on a refused socket or any non-2xx answer, with the VMM's body.
 */
export interface RawAnswer {
  readonly status: number;
  readonly body: string;
}

export function rawCall(socketPath: string, method: 'GET' | 'PUT', endpoint: string, body?: unknown, timeoutMs = 600_000): Promise<RawAnswer> {
  const json = body === undefined ? '' : JSON.stringify(body);
  const head = `${method} /api/v1/${endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n` +
    (body === undefined ? '' : `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\n`) + '\r\n';
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let data = Buffer.alloc(0);
    let settled = false;
    const timer = setTimeout(() => finish(new Error(`${method} ${endpoint}: no answer within ${timeoutMs} ms`)), timeoutMs);
    const finish = (error: Error | undefined, answer?: RawAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else if (answer!.status < 200 || answer!.status > 299) reject(new Error(`${method} ${endpoint}: HTTP ${answer!.status} ${answer!.body}`));
      else resolve(answer!);
    };
    /** A whole response: headers, then Content-Length bytes (none for a 204, or when it says none). */
    const complete = (atEnd: boolean): RawAnswer | undefined => {
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) return undefined;
      const headers = data.subarray(0, end).toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(headers)?.[1] ?? 0);
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(headers)?.[1];
      const bodyStart = end + 4;
      if (length !== undefined) {
        if (data.length < bodyStart + Number(length)) return undefined;
        return { status, body: data.subarray(bodyStart, bodyStart + Number(length)).toString('utf8') };
      }
      if (status === 204 || status === 304) return { status, body: '' };
      return atEnd ? { status, body: data.subarray(bodyStart).toString('utf8') } : undefined;
    };
    socket.on('connect', () => socket.write(head + json));
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      const answer = complete(false);
      if (answer) finish(undefined, answer);
    });
    socket.on('end', () => {
      const answer = complete(true);
      finish(answer ? undefined : new Error(`${method} ${endpoint}: connection closed before a whole answer`), answer);
    });
    socket.on('error', (error) => finish(error));
  });
}
