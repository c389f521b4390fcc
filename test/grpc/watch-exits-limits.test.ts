/**
 * WatchExits and WatchEvents at their limits: a cursor older than the retained history (OUT_OF_RANGE) and a watcher
 * that stops reading (RESOURCE_EXHAUSTED once it lags more than the per-watcher buffer, while other
 * watchers on the same connection are unaffected).
 */
import { expect, it } from '@jest/globals';
import { create } from '@bufbuild/protobuf';
import {
  type ClientReadableStream,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { EventKind, type ProcessEvent, type ProcessExit, VmProcessService, WatchEventsRequestSchema, WatchExitsRequestSchema } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { grpcServiceDefinition } from '../../src/rpc/grpc-service-definition.js';
import { describeAsRoot } from '../helpers/root.js';
import { eventually, ExitStream, expectRpcError, range, sequencesOf, useGrpcSuite, WAIT_MS } from './support.js';

describeAsRoot('gRPC end to end: WatchExits history limit (exitHistory: 3)', () => {
  const s = useGrpcSuite({ exitHistory: 3 });

  async function firstOf(request: ConstructorParameters<typeof ExitStream>[1]): Promise<ProcessExit | undefined> {
    const stream = new ExitStream(s.client, request);
    try {
      return await stream.next();
    } finally {
      await stream.close();
    }
  }

  it('after_sequence older than the retained history is OUT_OF_RANGE; the oldest retained boundary replays', async () => {
    const ids = range(1, 5).map(() => s.id('hist'));
    for (const id of ids) {
      await s.startBoot(id);
      await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    }
    const latest = (await s.client.listProcesses({})).exitSequence;
    expect(latest).toBe(5n);
    // History holds 3, 4, 5: a cursor at 2 still resumes without a gap, 1 and 0 cannot.
    for (const after of [0n, 1n]) {
      await expectRpcError(
        firstOf({ afterSequence: after }),
        status.OUT_OF_RANGE,
        `after_sequence ${after} is older than the retained exit history (oldest retained is 3)`,
        'resync with ListProcesses',
      );
    }
    const stream = new ExitStream(s.client, { afterSequence: 2n });
    const replayed = await stream.until((r) => r.length === 3);
    await stream.close();
    expect(sequencesOf(replayed)).toEqual([3, 4, 5]);
    expect(replayed.map((e) => e.sandboxId)).toEqual(ids.slice(2));
    expect(replayed).toEqual(s.recorder.exits.slice(2));

    // Get/List keep the same bounded number of exited records: the oldest are forgotten.
    const listed = (await s.client.listProcesses({})).processes.map((p) => p.sandboxId).sort();
    expect(listed).toEqual(ids.slice(2).sort());
    await expectRpcError(s.client.getProcess({ sandboxId: ids[0]! }), status.NOT_FOUND);
  });
});

/** 64 labels of 1000 bytes: each ProcessExit is ~65 KB, so a few fill the HTTP/2 window. */
const BIG_LABELS = Object.fromEntries(range(0, 63).map((i) => [`l${String(i).padStart(2, '0')}`, 'x'.repeat(1000)]));
const MAX_EXITS = 150;

/** The batches' VMMs exit before they are ready (exit_before_socket): anything else is a broken setup. */
function expectStartFailed(error: ServiceError): void {
  expect({ code: status[error.code], details: error.details }).toEqual({
    code: 'FAILED_PRECONDITION',
    details: expect.stringContaining('exited before it was ready (exit code 1)'),
  });
}
const BATCH = 6;

describeAsRoot('gRPC end to end: a slow watcher (watchBuffer: 4)', () => {
  const s = useGrpcSuite({ watchBuffer: 4 });

  it('is cut off with RESOURCE_EXHAUSTED while a normal watcher on the same connection receives every exit', async () => {
    const exchange = s.harness.daemon.supervisor.exchange;
    const normal = new ExitStream(s.harness.newClient());
    await eventually(() => exchange.subscriberCount === 2, WAIT_MS);

    // The slow watcher: a raw grpc-js stream (same target, so the same HTTP/2 connection), never read.
    const Raw = makeGenericClientConstructor(grpcServiceDefinition(VmProcessService), 'RawVmProcess');
    const raw = new Raw(s.harness.address, credentials.createInsecure(), {});
    const slow = (raw as unknown as { watchExits: (...args: unknown[]) => ClientReadableStream<ProcessExit> }).watchExits(
      create(WatchExitsRequestSchema, {}),
      new Metadata(),
      {},
    );
    // A 'data' listener starts grpc-js reading (until then it buffers everything without flow control);
    // pausing right away then lets its buffer fill (16 messages) and HTTP/2 flow control back up to the daemon.
    const slowReceived: ProcessExit[] = [];
    slow.on('data', (exit: ProcessExit) => slowReceived.push(exit));
    slow.pause();
    let slowError: ServiceError | undefined;
    slow.on('error', (error: ServiceError) => {
      slowError = error;
    });
    await eventually(() => exchange.subscriberCount === 3, WAIT_MS);

    const begun = Date.now();
    const base = s.recorder.lastSequence;
    let produced = 0;
    try {
      // Exits in batches until the daemon drops the slow subscription (or we give up).
      while (exchange.subscriberCount === 3 && produced < MAX_EXITS) {
        const ids = range(1, BATCH).map(() => s.id('big'));
        await Promise.all(ids.map((id) => s.startBoot(id, { exit_before_socket: 1 }, { labels: BIG_LABELS }).catch(expectStartFailed)));
        produced += BATCH;
        // Others are unaffected: the normal watcher has every exit of the batch before the next one.
        await normal.untilExitsOf(ids);
      }
      const cutOffAfter = produced;
      process.stderr.write(`slow watcher cut off after ${cutOffAfter} exits of ~65 KB (${Date.now() - begun} ms)\n`);
      expect(exchange.subscriberCount).toBe(2);

      // More exits after the cut-off: the normal watcher still gets them.
      const after = range(1, 3).map(() => s.id('after'));
      for (const id of after) await s.startBoot(id, { exit_before_socket: 1 }).catch(expectStartFailed);
      await normal.untilExitsOf(after);
      const total = produced + after.length;
      expect(sequencesOf(normal.received)).toEqual(range(Number(base) + 1, Number(base) + total));

      // The slow watcher, read at last: what was in flight arrives in order, then RESOURCE_EXHAUSTED.
      expect(slowReceived).toEqual([]);
      slow.resume();
      await eventually(() => slowError !== undefined, WAIT_MS);
      expect({ code: status[slowError!.code], details: slowError!.details }).toEqual({
        code: 'RESOURCE_EXHAUSTED',
        details: expect.stringContaining('exit watcher fell more than 4 events behind and was cut off'),
      });
      expect(slowError!.details).toContain('reconnect with after_sequence set to the last sequence you received');
      expect(slowReceived.length).toBeGreaterThan(0);
      expect(slowReceived.length).toBeLessThan(cutOffAfter);
      expect(sequencesOf(slowReceived)).toEqual(range(Number(base) + 1, Number(base) + slowReceived.length));

      // Reconnecting with the last sequence it received gives it exactly the rest.
      const resumed = new ExitStream(s.harness.newClient(), { afterSequence: slowReceived.at(-1)!.sequence });
      const rest = await resumed.until((r) => r.length === total - slowReceived.length);
      await resumed.close();
      expect(sequencesOf([...slowReceived, ...rest])).toEqual(range(Number(base) + 1, Number(base) + total));
      expect(rest).toEqual(normal.received.slice(slowReceived.length));
    } finally {
      slow.cancel();
      raw.close();
      await normal.close();
    }
  }, 60_000);
});

describeAsRoot('gRPC end to end: a slow event watcher (watchBuffer: 4)', () => {
  const s = useGrpcSuite({ watchBuffer: 4 });
  const MEDIUM_LABELS = Object.fromEntries(range(0, 63).map((i) => [`l${String(i).padStart(2, '0')}`, 'x'.repeat(200)]));

  it('WatchEvents the same: a watcher that stops reading is cut off, and resumes from its last sequence with no gap', async () => {
    const events = s.harness.daemon.supervisor.events;
    const Raw = makeGenericClientConstructor(grpcServiceDefinition(VmProcessService), 'RawVmProcessEvents');
    const raw = new Raw(s.harness.address, credentials.createInsecure(), {});
    const slow = (raw as unknown as { watchEvents: (...args: unknown[]) => ClientReadableStream<ProcessEvent> }).watchEvents(
      create(WatchEventsRequestSchema, { afterSequence: BigInt(events.latestSequence) }),
      new Metadata(),
      {},
    );
    const base = BigInt(events.latestSequence);
    const slowReceived: ProcessEvent[] = [];
    slow.on('data', (event: ProcessEvent) => slowReceived.push(event));
    slow.pause();
    let slowError: ServiceError | undefined;
    slow.on('error', (error: ServiceError) => {
      slowError = error;
    });
    // (The suite's own event recorder comes and goes here: it is cut off too, and reconnects.)
    await new Promise((resolve) => slow.once('metadata', resolve));
    try {
      // Three events an exit, ~13 KB each: far more than the watcher's buffer, grpc-js's and HTTP/2's
      // windows hold, in small batches the suite's own exit recorder keeps up with.
      for (let produced = 0; produced < 45; produced += 3) {
        const ids = range(1, 3).map(() => s.id('ev'));
        await Promise.all(ids.map((id) => s.startBoot(id, { exit_before_socket: 1 }, { labels: MEDIUM_LABELS }).catch(expectStartFailed)));
        // Paced by the suite's exit recorder, which must not fall 4 exits behind itself.
        await s.recorder.until((exits) => ids.every((id) => exits.some((e) => e.sandboxId === id)));
      }
      const latest = BigInt(events.latestSequence);
      slow.resume();
      await eventually(() => slowError !== undefined, WAIT_MS);
      expect({ code: status[slowError!.code], details: slowError!.details }).toEqual({
        code: 'RESOURCE_EXHAUSTED',
        details: expect.stringContaining('event watcher fell more than 4 events behind and was cut off'),
      });
      expect(slowReceived.map((e) => e.sequence)).toEqual(range(1, slowReceived.length).map((i) => base + BigInt(i)));
      // Reconnecting after the last sequence it received gives exactly the rest.
      const rest: ProcessEvent[] = [];
      const last = slowReceived.at(-1)?.sequence ?? base;
      for await (const event of s.client.watchEvents({ afterSequence: last }, { timeoutMs: 10_000 })) {
        rest.push(event);
        if (event.sequence === latest) break;
      }
      expect([...slowReceived, ...rest].map((e) => e.sequence)).toEqual(range(1, Number(latest - base)).map((i) => base + BigInt(i)));
      expect(rest.filter((e) => e.kind === EventKind.PROGRESS)).toEqual([]);
    } finally {
      slow.cancel();
      raw.close();
    }
  }, 60_000);
});
