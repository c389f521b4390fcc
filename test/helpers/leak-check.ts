import { describeProcessesMentioning, killProcessesMentioning, processesMentioning } from './process-scan.js';
import { eventually, WAIT_MS } from './wait.js';

/**
 * The end of every suite's leak check: the processes mentioning `root` (a fixture's temp dir, in
 * the argv of each of its reapers and VMMs) that outlived the suite, as found in one read of /proc.
 * They are killed, and waited for, so a leak is reported but never left behind.
 */
export async function collectLeftovers(root: string): Promise<string[]> {
  const found = await describeProcessesMentioning(root);
  await killProcessesMentioning(root);
  await eventually(async () => (await processesMentioning(root)).length === 0, WAIT_MS);
  return found.map(({ pid, cmdline }) => `${pid}: ${cmdline.slice(0, 300)}`);
}
