/**
 * The client half of the transport-floor benchmark: reads one WatchExits stream from a minimal
 * grpc-js server (no daemon behind it) and reports when each message arrived, on the system-wide
 * monotonic clock.
 *   node stream-floor-client.js <address> <count>
 */
import { VmProcessClient } from '../src/client/vm-process-client.js';
import { monotonicMs } from './lib/stats.js';

const [address, countText] = process.argv.slice(2);
const count = Number(countText);
const client = new VmProcessClient(address!);
const arrivals: number[] = [];
process.send!({ type: 'ready' });
for await (const exit of client.watchExits({})) {
  arrivals[Number(exit.sequence)] = monotonicMs();
  process.send!({ type: 'got', sequence: Number(exit.sequence) });
  if (arrivals.filter((a) => a !== undefined).length === count) break;
}
process.send!({ type: 'report', arrivals }, () => process.exit(0));
