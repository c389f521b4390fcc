/**
 * The StreamLogs handler against a fake grpc-js call, no root: it reads the next chunk only once
 * the call has taken the previous one, and it maps failures to status codes.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { fromBinary } from '@bufbuild/protobuf';
import { status } from '@grpc/grpc-js';
import { EventEmitter } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StreamLogsResponseSchema } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { VmprocError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { VmmLogs } from '../../src/logs/vmm-logs.js';
import { DEFAULT_LOG_STREAM_LIMITS, StreamCaps } from '../../src/rpc/stream-caps.js';
import { streamLogsHandler } from '../../src/rpc/stream-logs.js';
import type { Supervisor } from '../../src/core/supervisor.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmpt-relay-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The parts of a ServerWritableStream the handler uses; `accepting` is what write() returns. */
class FakeCall extends EventEmitter {
  readonly writes: Uint8Array[] = [];
  accepting = true;
  cancelled = false;
  ended = false;
  error: { code: number; details: string } | undefined;

  constructor(readonly request: { sandboxId: string; tailLines: number; follow: boolean }) {
    super();
    this.on('error', (error: { code: number; details: string }) => {
      this.error = error;
    });
  }

  write(message: Uint8Array): boolean {
    this.writes.push(message);
    return this.accepting;
  }

  end(): void {
    this.ended = true;
  }

  get data(): Buffer {
    return Buffer.concat(this.writes.map((bytes) => fromBinary(StreamLogsResponseSchema, bytes).data));
  }
}

function fakeSupervisor(logPath: string): Supervisor {
  return {
    get(sandboxId: string) {
      if (sandboxId !== 'sb') throw new VmprocError('not-found', `no process for sandbox "${sandboxId}"`);
      return { logPath };
    },
    wait: () => Promise.resolve(),
  } as unknown as Supervisor;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await delay(5);
  }
}

describe('StreamLogs handler', () => {
  const logs = new VmmLogs({ maxBytes: 1 << 20, keep: 1, checkIntervalMs: 60_000, liveLogs: () => [] });
  afterAll(() => logs.close());

  it('waits for drain after a write the call could not take, then goes on to the end', async () => {
    const content = Buffer.alloc(10 * 64 * 1024, 'abcdefgh\n');
    const logPath = join(dir, 'big.log');
    await writeFile(logPath, content);
    const call = new FakeCall({ sandboxId: 'sb', tailLines: 0, follow: false });
    call.accepting = false;
    streamLogsHandler(fakeSupervisor(logPath), logs, silentLogger, new StreamCaps('StreamLogs streams', DEFAULT_LOG_STREAM_LIMITS))(call as never);
    await until(() => call.writes.length === 1, 'the first write');
    await delay(100);
    // Full: nothing more is read or written until the call drains.
    expect(call.writes.length).toBe(1);
    expect(logs.readCount).toBe(1);
    call.emit('drain');
    await until(() => call.writes.length === 2, 'the second write');
    await delay(50);
    expect(call.writes.length).toBe(2);
    call.accepting = true;
    call.emit('drain');
    await until(() => call.ended, 'the end');
    expect(call.data.equals(content)).toBe(true);
    expect(call.writes.every((bytes) => fromBinary(StreamLogsResponseSchema, bytes).data.length <= 64 * 1024)).toBe(true);
    expect(call.error).toBeUndefined();
    await until(() => logs.readCount === 0, 'the read is released');
  });

  it('stops reading when the client cancels while the call is full', async () => {
    const logPath = join(dir, 'cancelled.log');
    await writeFile(logPath, Buffer.alloc(4 * 64 * 1024, 'x'));
    const call = new FakeCall({ sandboxId: 'sb', tailLines: 0, follow: false });
    call.accepting = false;
    streamLogsHandler(fakeSupervisor(logPath), logs, silentLogger, new StreamCaps('StreamLogs streams', DEFAULT_LOG_STREAM_LIMITS))(call as never);
    await until(() => call.writes.length === 1, 'the first write');
    call.cancelled = true;
    call.emit('cancelled');
    await until(() => logs.readCount === 0, 'the read is released');
    expect(call.writes.length).toBe(1);
    expect(call.ended).toBe(false);
    expect(call.error).toBeUndefined();
  });

  it('maps NOT_FOUND and unreadable logs to status codes', async () => {
    const unknown = new FakeCall({ sandboxId: 'other', tailLines: 0, follow: false });
    streamLogsHandler(fakeSupervisor(join(dir, 'x.log')), logs, silentLogger, new StreamCaps('StreamLogs streams', DEFAULT_LOG_STREAM_LIMITS))(unknown as never);
    expect(unknown.error?.code).toBe(status.NOT_FOUND);

    const unreadable = new FakeCall({ sandboxId: 'sb', tailLines: 0, follow: false });
    streamLogsHandler(fakeSupervisor(dir), logs, silentLogger, new StreamCaps('StreamLogs streams', DEFAULT_LOG_STREAM_LIMITS))(unreadable as never);
    await until(() => unreadable.error !== undefined, 'an error');
    expect(unreadable.error).toMatchObject({ code: status.INTERNAL, details: expect.stringContaining(dir) });
  });
});
