/**
 * A worker process for the exit-delivery benchmark: opens N WatchExits streams (one channel each)
 * and notes, for every exit on every stream, when it arrived on the system-wide monotonic clock.
 * It tells the parent once all its streams have an exit (one IPC message per exit, sent after the
 * timestamps are taken, so reporting never delays a measurement), and sends the timestamps at the end.
 *   node exit-watchers.js <address> <count>
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { VmProcessClient } from '../src/client/vm-process-client.js';
import { monotonicMs } from './lib/stats.js';

const [address, countText] = process.argv.slice(2);
const count = Number(countText);
const clients = Array.from({ length: count }, () => new VmProcessClient(address!));
const arrivals = new Map<string, number[]>();
// Resume from the current sequence: a stream that registers late still gets every exit after it.
const { exitSequence } = await clients[0]!.listProcesses({});
for (const client of clients) {
  void (async () => {
    for await (const exit of client.watchExits({ afterSequence: exitSequence })) {
      const at = monotonicMs();
      const list = arrivals.get(exit.sandboxId) ?? [];
      list.push(at);
      arrivals.set(exit.sandboxId, list);
      if (list.length === count) setImmediate(() => process.send!({ type: 'all', sandboxId: exit.sandboxId }));
    }
  })().catch(() => undefined);
}
process.on('message', (message: { type: string }) => {
  if (message.type === 'report') process.send!({ type: 'report', arrivals: Object.fromEntries(arrivals) }, () => process.exit(0));
});
await sleep(300);
process.send!({ type: 'ready' });
process.on('disconnect', () => process.exit(0));
