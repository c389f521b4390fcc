/** Shared by the client suites: an exit collector over any exit iterable, and small process helpers. */
import { existsSync } from 'node:fs';
import { eventually, WAIT_MS } from '../helpers/wait.js';

export { ExitCollector, sequencesOf } from '../helpers/exit-collector.js';
export { WAIT_MS };

/** Kills a VMM behind the daemon's back (as a crash would) and resolves once its PID is gone. */
export async function killBehindDaemon(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  await eventually(() => !existsSync(`/proc/${pid}`), WAIT_MS);
}

