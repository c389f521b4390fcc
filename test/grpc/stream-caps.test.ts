/**
 * Caps on long-lived streams: WatchExits and StreamLogs beyond a daemon-wide or a per-connection
 * cap fail with RESOURCE_EXHAUSTED naming the cap, and a closed stream gives its slot back.
 */
import { expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { describeAsRoot } from '../helpers/root.js';
import { eventually, useGrpcSuite, WAIT_MS } from './support.js';

describeAsRoot('gRPC end to end: stream caps', () => {
  // The suite's own exit recorder holds one watcher slot on its connection.
  const s = useGrpcSuite({ streamLimits: { watches: { total: 5, perConnection: 2 }, logs: { total: 2, perConnection: 1 } } });

  const ownConnection = () => new VmProcessClient(s.harness.address, { channelOptions: { 'grpc.use_local_subchannel_pool': 1 } });

  /** Opens a WatchExits; resolves with how it is after a moment: still open, or the error it got. */
  function openWatch(client: VmProcessClient): { result: Promise<'open' | { code: number; details: string }>; abort: AbortController } {
    const abort = new AbortController();
    const result = new Promise<'open' | { code: number; details: string }>((resolve) => {
      (async () => {
        try {
          for await (const _exit of client.watchExits({}, { signal: abort.signal, onHeaders: () => resolve('open') })) {
            // nothing is published here
          }
        } catch (error) {
          const e = error as { code: number; details: string };
          resolve({ code: e.code, details: e.details });
        }
      })();
    });
    return { result, abort };
  }

  it('per connection and over the daemon, with the slot back once a stream closes', async () => {
    // Clients of one target share one connection in grpc-js unless told to keep their own.
    const one = ownConnection();
    const two = ownConnection();
    const a = openWatch(one);
    const b = openWatch(one);
    expect([await a.result, await b.result]).toEqual(['open', 'open']);
    const c = openWatch(one);
    expect(await c.result).toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: expect.stringContaining('this connection already has 2 WatchExits and WatchEvents streams open, the most one connection may have (2)') });
    // Another connection may: the daemon-wide cap is 5, the suite's two recorders (exits, events) hold two.
    const d = openWatch(two);
    expect(await d.result).toBe('open');
    const e = openWatch(two);
    expect(await e.result).toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: expect.stringContaining('the daemon already serves 5 WatchExits and WatchEvents streams, its maximum') });
    a.abort.abort();
    await eventually(() => s.harness.daemon.supervisor.exchange.subscriberCount === 3, WAIT_MS);
    const f = openWatch(one);
    expect(await f.result).toBe('open');
    for (const w of [b, d, f]) w.abort.abort();
    await eventually(() => s.harness.daemon.supervisor.exchange.subscriberCount === 1, WAIT_MS);
    one.close();
    two.close();
  });

  it('StreamLogs the same way', async () => {
    const id = s.id('logs');
    await s.startBoot(id, { stderr_lines: 1 });
    const client = ownConnection();
    const follow = (abort: AbortController) => client.streamLogs({ sandboxId: id, follow: true }, { signal: abort.signal })[Symbol.asyncIterator]();
    const first = new AbortController();
    const reader = follow(first);
    expect((await reader.next()).done).toBe(false);
    const second = follow(new AbortController());
    await expect(second.next()).rejects.toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: expect.stringContaining('StreamLogs streams') });
    first.abort();
    await reader.return?.();
    await eventually(() => (s.harness.daemon.operations.logs?.readCount ?? 0) === 0, WAIT_MS);
    const third = new AbortController();
    const again = follow(third);
    expect((await again.next()).done).toBe(false);
    third.abort();
    await again.return?.();
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } });
    client.close();
  });
});
