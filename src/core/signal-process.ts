import { VmprocError } from '../errors.js';
import { parseSignalName } from './signals.js';
import type { SupervisorContext } from './context.js';
import type { ProcessSnapshot } from './domain.js';
import type { SupervisedProcess } from './supervised-process.js';

/** SignalProcess: a signal by name (`SIGUSR1` or `USR1`) to the VMM's process group. */
export async function signalProcess(context: SupervisorContext, sandboxId: string, signalName: string): Promise<ProcessSnapshot> {
  const signal = parseSignalName(signalName);
  if (!signal) {
    throw new VmprocError('invalid-argument', `unknown signal ${JSON.stringify(signalName)}; use a name such as SIGTERM, SIGUSR1 or USR1`);
  }
  const record = context.table.find(sandboxId);
  const handle = record.handle;
  if (!handle && record.phase === 'starting') {
    throw new VmprocError('failed-precondition', `sandbox ${sandboxId} is being launched and has no process yet; retry shortly`);
  }
  if (record.phase === 'exited' || !handle) throw notRunning(record);
  const send = async () => {
    record.recordSignal(signal.name);
    await context.store.signalled(sandboxId, signal.name);
    if ((await handle.signal(signal.number)) === 'gone') throw notRunning(record);
    context.logger.info({ sandboxId, pid: handle.identity.pid, signal: signal.name }, 'signalled vmm');
    return record.snapshot();
  };
  // In line with the sandbox's VM operations; a stop in progress has closed that line, and a
  // signal then still goes straight to the process, as it always could.
  return record.phase === 'running' ? record.lane.run('signal', send) : send();
}

function notRunning(record: SupervisedProcess): VmprocError {
  const exit = record.exit;
  const how = exit ? ` (${exit.reason}${exit.exitCode !== undefined ? `, exit code ${exit.exitCode}` : ''}${exit.signal ? `, ${exit.signal}` : ''})` : '';
  return new VmprocError('failed-precondition', `sandbox ${record.sandboxId} has exited${how}; nothing to signal`);
}
