import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import type { ServerWritableStream } from '@grpc/grpc-js';
import type { StreamLogsRequest } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { Logger } from '../logger.js';
import type { VmmLogs } from '../logs/vmm-logs.js';
import type { Supervisor } from '../core/supervisor.js';
import { toGrpcStatus } from './status-mapping.js';
import { connectionOf, type StreamCaps } from './stream-caps.js';

type LogCall = ServerWritableStream<StreamLogsRequest, Uint8Array>;

/**
 * StreamLogs: looks the process up (NOT_FOUND before anything is sent), then relays its log as
 * the logs module reads it. The process's end tells a follower when to drain and stop.
 */
export function streamLogsHandler(supervisor: Supervisor, logs: VmmLogs, logger: Logger, caps: StreamCaps) {
  return (call: LogCall): void => {
    const { sandboxId, tailLines, follow } = call.request;
    const cancelled = new AbortController();
    let chunks: AsyncGenerator<Buffer, void, undefined>;
    let release = (): void => {};
    try {
      const process = supervisor.get(sandboxId);
      release = caps.acquire(connectionOf(call));
      chunks = logs.read({ path: process.logPath, tailLines, follow, writerGone: supervisor.wait(sandboxId), signal: cancelled.signal });
    } catch (error) {
      release();
      call.emit('error', toGrpcStatus(error));
      return;
    }
    call.once('cancelled', () => cancelled.abort());
    relayLog(chunks, call)
      .catch((error: unknown) => logger.error({ err: error, sandboxId }, 'log stream failed'))
      .finally(release);
  };
}

/**
 * Writes chunks as fast as the client takes them, and no faster: the next chunk is read only
 * once grpc-js has taken the previous one (write() returned true, or 'drain'), so a slow or stuck
 * client holds one chunk and grpc-js's buffer, never a growing queue.
 */
async function relayLog(chunks: AsyncGenerator<Buffer, void, undefined>, call: LogCall): Promise<void> {
  try {
    for (;;) {
      const next = await chunks.next();
      if (next.done || call.cancelled) break;
      if (!call.write(encodeStreamLogsResponse(next.value))) await writable(call);
    }
    if (!call.cancelled) call.end();
  } catch (error) {
    if (!call.cancelled) call.emit('error', toGrpcStatus(error));
  } finally {
    await chunks.return(undefined);
  }
}

/** StreamLogsResponse: `bytes data = 1;`, encoded by hand: one tag and the bytes. */
function encodeStreamLogsResponse(data: Uint8Array): Uint8Array {
  return new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(data).finish();
}

/** Resolves when the stream takes writes again, or when the call is over. */
function writable(call: LogCall): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.removeListener('drain', done);
      call.removeListener('close', done);
      call.removeListener('cancelled', done);
      resolve();
    };
    call.once('drain', done);
    call.once('close', done);
    call.once('cancelled', done);
  });
}
