/**
 * A worker process for the event-delivery benchmark: opens N WatchEvents streams (one channel
 * each) for one sandbox and notes, for every event on every stream, when it arrived on the
 * system-wide monotonic clock. It tells the parent once every stream has an event (one IPC message
 * per event, sent after the timestamps are taken), and sends the timestamps at the end.
 *   node event-watchers.js <address> <count> <sandbox-id>
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { EventKind } from '../gen/vmprocess/v1/vmprocess_pb.js';
import { VmProcessClient } from '../src/client/vm-process-client.js';
import { monotonicMs } from './lib/stats.js';

const [address, countText, sandboxId] = process.argv.slice(2);
const count = Number(countText);
const clients = Array.from({ length: count }, () => new VmProcessClient(address!));
/** Arrival times by event sequence. */
const arrivals = new Map<string, number[]>();
const { latestEventSequence } = await clients[0]!.getLatestSequence();
for (const client of clients) {
  void (async () => {
    const request = { sandboxIds: [sandboxId!], kinds: [EventKind.PAUSED, EventKind.RESUMED], afterSequence: latestEventSequence };
    for await (const event of client.watchEvents(request)) {
      if (event.kind === EventKind.PROGRESS) continue;
      const at = monotonicMs();
      const key = String(event.sequence);
      const list = arrivals.get(key) ?? [];
      list.push(at);
      arrivals.set(key, list);
      if (list.length === count) setImmediate(() => process.send!({ type: 'all', kind: EventKind[event.kind] }));
    }
  })().catch(() => undefined);
}
process.on('message', (message: { type: string }) => {
  if (message.type === 'report') process.send!({ type: 'report', arrivals: Object.fromEntries(arrivals) }, () => process.exit(0));
});
await sleep(300);
process.send!({ type: 'ready' });
process.on('disconnect', () => process.exit(0));
