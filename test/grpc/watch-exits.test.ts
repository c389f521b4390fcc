/**
 * WatchExits end to end: live delivery of every exit exactly once in sequence order, the
 * sandbox_ids filter, replay with after_sequence, resuming across a reconnect, and
 * ListProcesses.exit_sequence as a gap-free starting point.
 */
import { afterEach, expect, it } from '@jest/globals';
import { ExitReason, type ProcessExit, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { StandinKnobs } from '../helpers/sandbox-fixture.js';
import { describeAsRoot } from '../helpers/root.js';
import { status } from '@grpc/grpc-js';
import { delay, eventually, ExitStream, range, sequencesOf, useGrpcSuite, WAIT_MS } from './support.js';

describeAsRoot('gRPC end to end: WatchExits', () => {
  const s = useGrpcSuite();

  /**
   * Streams this test opened. The daemon's subscriber count is the suite's recorder plus these, so
   * opening waits until the daemon has subscribed the new one (a live stream misses earlier exits)
   * and closing waits until it has dropped it.
   */
  const openStreams = new Set<ExitStream>();
  const expectedSubscribers = () => 1 + openStreams.size;
  const subscribersSettled = () =>
    eventually(() => s.harness.daemon.supervisor.exchange.subscriberCount === expectedSubscribers(), WAIT_MS);

  async function open(request: ConstructorParameters<typeof ExitStream>[1] = {}): Promise<ExitStream> {
    const stream = new ExitStream(s.harness.newClient(), request);
    openStreams.add(stream);
    await subscribersSettled();
    return stream;
  }

  async function close(stream: ExitStream): Promise<void> {
    await stream.close();
    openStreams.delete(stream);
    await subscribersSettled();
  }

  afterEach(async () => {
    for (const stream of [...openStreams]) await close(stream);
  });

  /** Starts a VMM and ends it (stop), returning its exit. */
  async function startAndStop(id: string): Promise<ProcessExit> {
    await s.startBoot(id);
    return (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } })).process!.exit!;
  }

  /** Produces one exit of each cause, concurrently; resolves with their sandbox IDs once all have exited. */
  async function exitsOfEveryCause(tag: string): Promise<Record<string, string>> {
    const ids = {
      crashed: s.id(`${tag}-crash`),
      stopped: s.id(`${tag}-stop`),
      killed: s.id(`${tag}-kill`),
      failed: s.id(`${tag}-fail`),
      timedOut: s.id(`${tag}-timeout`),
    };
    const swallow = (p: Promise<unknown>) => p.catch(() => undefined);
    await Promise.all([
      // Well after ready, even on a loaded machine: a crash before ready is a failed start instead.
      s.startBoot(ids.crashed, { crash_after_ms: 500, crash_exit_code: 4 }),
      startAndStop(ids.stopped),
      s.startBoot(ids.killed).then(() => s.client.signalProcess({ sandboxId: ids.killed, signal: 'KILL' })),
      swallow(s.startBoot(ids.failed, { exit_before_socket: 2 })),
      swallow(s.startBoot(ids.timedOut, { no_socket: 1 }, { readyTimeout: { nanos: 250_000_000 } })),
    ]);
    await Promise.all(Object.values(ids).map((id) => s.recorder.exitOf(id)));
    return ids;
  }

  it('a live stream receives every exit exactly once, with strictly increasing, gap-free sequences', async () => {
    const stream = await open();
    const first = s.recorder.lastSequence;
    const ids = await exitsOfEveryCause('live');
    // A sentinel exit after all of them: whatever arrives before it is the complete set.
    const sentinel = s.id('live-sentinel');
    await startAndStop(sentinel);
    const received = await stream.untilExitsOf([sentinel]);
    await close(stream);

    expect(received.map((e) => e.sandboxId).sort()).toEqual([...Object.values(ids), sentinel].sort());
    expect(sequencesOf(received)).toEqual(range(Number(first) + 1, Number(first) + 6));
    // Identical to what every other watcher (the suite's recorder) saw.
    expect(received).toEqual(s.recorder.exits.filter((e) => e.sequence > first));
    const reasonOf = (id: string) => ExitReason[received.find((e) => e.sandboxId === id)!.reason];
    expect({
      crashed: reasonOf(ids.crashed!),
      stopped: reasonOf(ids.stopped!),
      killed: reasonOf(ids.killed!),
      failed: reasonOf(ids.failed!),
      timedOut: reasonOf(ids.timedOut!),
    }).toEqual({ crashed: 'EXITED', stopped: 'STOPPED', killed: 'SIGNALED', failed: 'START_FAILED', timedOut: 'START_TIMEOUT' });
  });

  it('sandbox_ids filters the stream to those sandboxes', async () => {
    const x = s.id('filter-x');
    const y = s.id('filter-y');
    const z = s.id('filter-z');
    const stream = await open({ sandboxIds: [x, z] });
    await startAndStop(y);
    const xExit = await startAndStop(x);
    await startAndStop(y); // y again: still filtered out
    const zExit = await startAndStop(z);
    const xAgain = await startAndStop(x); // an exited ID started again is the same sandbox
    const received = await stream.until((r) => r.length === 3);
    await close(stream);
    expect(received).toEqual([xExit, zExit, xAgain]);
    expect(s.recorder.exitsOf(y)).toHaveLength(2);
  });

  it('after_sequence replays the retained exits after it, then continues live, with no gap and no duplicate', async () => {
    const base = s.recorder.lastSequence;
    const p1 = await startAndStop(s.id('replay'));
    const p2 = await startAndStop(s.id('replay'));
    const p3 = await startAndStop(s.id('replay'));
    expect(sequencesOf([p1, p2, p3])).toEqual(range(Number(base) + 1, Number(base) + 3));

    const stream = await open({ afterSequence: p1.sequence });
    const replayed = await stream.until((r) => r.length === 2);
    expect(replayed).toEqual([p2, p3]);
    const p4 = await startAndStop(s.id('replay'));
    await stream.until((r) => r.length === 3);
    await close(stream);
    expect(stream.received).toEqual([p2, p3, p4]);

    // after_sequence = latest: nothing to replay, only what comes next.
    const fromLatest = await open({ afterSequence: p4.sequence });
    const p5 = await startAndStop(s.id('replay'));
    expect(await fromLatest.next()).toEqual(p5);
    await close(fromLatest);
  });

  it('replay and live exits racing at subscription time still form one gap-free, duplicate-free sequence', async () => {
    const base = s.recorder.lastSequence;
    const ids = range(1, 8).map(() => s.id('race'));
    // VMMs crashing on their own at staggered times, while the watcher subscribes in the middle.
    const starts = ids.map((id, i) => s.startBoot(id, { crash_after_ms: 150 + 60 * i }).catch(() => undefined));
    await s.recorder.waitFor((e) => e.sequence > base, WAIT_MS);
    const stream = await open({ afterSequence: base });
    await Promise.all(starts);
    const received = await stream.untilExitsOf(ids);
    await close(stream);
    expect(received.map((e) => e.sandboxId).sort()).toEqual([...ids].sort());
    expect(sequencesOf(received)).toEqual(range(Number(base) + 1, Number(base) + ids.length));
  });

  it('resumes across a reconnect: after_sequence = last seen gives exactly the missed exits, then live ones', async () => {
    const a = await open();
    const e1 = await startAndStop(s.id('resume'));
    const e2 = await startAndStop(s.id('resume'));
    const seen: ProcessExit[] = [];
    // Watcher A reads two exits, then leaves its loop (break cancels the call).
    for await (const exit of iterate(a)) {
      seen.push(exit);
      if (seen.length === 2) break;
    }
    expect(seen).toEqual([e1, e2]);
    // The break cancelled the call: the daemon drops A's subscription.
    openStreams.delete(a);
    await subscribersSettled();

    // Exits while nobody is watching.
    const missed = [await startAndStop(s.id('resume')), await startAndStop(s.id('resume')), await startAndStop(s.id('resume'))];

    const b = await open({ afterSequence: seen.at(-1)!.sequence });
    await b.until((r) => r.length === 3);
    expect(b.received).toEqual(missed);
    const live = await startAndStop(s.id('resume'));
    await b.until((r) => r.length === 4);
    await close(b);
    expect(b.received).toEqual([...missed, live]);
    expect(sequencesOf([...seen, ...b.received])).toEqual(range(Number(e1.sequence), Number(live.sequence)));
  });

  it('ListProcesses.exit_sequence then WatchExits{after_sequence} has no gap, even with exits racing the list', async () => {
    const ids = range(1, 6).map(() => s.id('listwatch'));
    const starts = await Promise.all(
      ids.map((id, i) => s.startBoot(id, (i % 2 === 0 ? { crash_after_ms: 100 + 80 * i } : {}) as StandinKnobs, { labels: { batch: 'listwatch' } })),
    );
    expect(starts.every((r) => r.process?.state === ProcessState.RUNNING)).toBe(true);
    // Stops of the others run concurrently with the list.
    const stops = ids.filter((_, i) => i % 2 === 1).map((sandboxId) => s.client.stopProcess({ sandboxId, gracePeriod: { seconds: 5n } }));
    await s.recorder.waitFor((e) => ids.includes(e.sandboxId), WAIT_MS);
    const list = await s.client.listProcesses({ labels: { batch: 'listwatch' } });
    const stream = await open({ afterSequence: list.exitSequence });
    await Promise.all(stops);

    const exitedInList = list.processes.filter((p) => p.state === ProcessState.EXITED);
    const liveInList = list.processes.filter((p) => p.state !== ProcessState.EXITED);
    expect(list.processes.map((p) => p.sandboxId).sort()).toEqual([...ids].sort());
    for (const p of exitedInList) expect(p.exit!.sequence).toBeLessThanOrEqual(list.exitSequence);

    const received = await stream.untilExitsOf(liveInList.map((p) => p.sandboxId));
    await close(stream);
    // Every exit after the snapshot arrives, in order, with no gap from exit_sequence on...
    expect(sequencesOf(received)).toEqual(range(Number(list.exitSequence) + 1, Number(received.at(-1)!.sequence)));
    // ...and every process of the batch is accounted for exactly once: exited in the list, or streamed.
    const streamedOfBatch = received.filter((e) => ids.includes(e.sandboxId)).map((e) => e.sandboxId);
    expect([...exitedInList.map((p) => p.sandboxId), ...streamedOfBatch].sort()).toEqual([...ids].sort());
  });

  it('client: an error the daemon sends before the first next() rejects that next(), with no unhandled error event', async () => {
    const latest = (await s.client.listProcesses({})).exitSequence;
    // A consumer that creates the iterator, then does something else before reading (the daemon
    // answers OUT_OF_RANGE at once). VmProcessClient.watchExits must hold the error for next().
    const iterator = s.client.watchExits({ afterSequence: latest + 100n })[Symbol.asyncIterator]();
    const unhandled: unknown[] = [];
    const onUncaught = (error: unknown) => unhandled.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      await delay(300);
      const first = await iterator.next().then(
        (r) => ({ resolved: r.done ? 'done' : 'value' }),
        (e: { code?: number }) => ({ rejected: status[e.code ?? -1] ?? String(e) }),
      );
      expect({ first, unhandled: unhandled.map(String) }).toEqual({ first: { rejected: 'OUT_OF_RANGE' }, unhandled: [] });
    } finally {
      process.off('uncaughtException', onUncaught);
      await iterator.return?.();
    }
  });

  it('WatchExits on a quiet daemon stays open without sending anything', async () => {
    const stream = await open();
    await expect(stream.next(300)).rejects.toThrow('no exit on the stream within 300ms');
    const id = s.id('quiet');
    const exit = await startAndStop(id);
    expect(await stream.next()).toEqual(exit);
    await close(stream);
  });
});

/** An ExitStream as a plain async iterable (for `for await ... break`). */
function iterate(stream: ExitStream): AsyncIterable<ProcessExit> {
  return {
    [Symbol.asyncIterator]: () => ({
      next: async () => {
        const value = await stream.next();
        return value ? { value, done: false } : { value: undefined, done: true };
      },
      return: async () => {
        await stream.close();
        return { value: undefined, done: true };
      },
    }),
  };
}
