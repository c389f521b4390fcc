import { asVmprocError } from '../errors.js';
import type { SupervisorContext } from './context.js';
import type { ExitStatus, UnsequencedExit } from './domain.js';
import { classifyExit } from './exit-classification.js';
import type { ProcessHandle } from './ports.js';
import { assignEvent, recordEvent } from './publish-event.js';
import type { SupervisedProcess } from './supervised-process.js';
import { followVmmEvents } from './vmm-events.js';

/**
 * Attaches `handle` to `record` and routes its one end to recordExit: from here on the process
 * gets exactly one exit event, whatever path ends it. `lostBecause` explains an end nobody saw.
 */
export function supervise(context: SupervisorContext, record: SupervisedProcess, handle: ProcessHandle, lostBecause?: string, monitorOffset = 0): void {
  record.attach(handle);
  followVmmEvents(context, record, monitorOffset);
  handle.exited.then(
    (status) => recordExit(context, record, status, status ? undefined : lostBecause),
    (error: unknown) =>
      recordExit(context, record, undefined, `the exit status could not be read: ${asVmprocError(error, 'reading the exit status').message}`),
  );
}

/**
 * The single place a process's end becomes an exit event: numbered, recorded in the store, then
 * published and applied to the record in one synchronous step.
 */
async function recordExit(context: SupervisorContext, record: SupervisedProcess, status: ExitStatus | undefined, lostBecause?: string): Promise<void> {
  // After shutdown the journal is closed: leave the reaper's record for the next daemon.
  if (context.detached) return;
  // A start still waiting on the VMM learns of the exit now, not once it is published: the exit
  // removes the socket first, and a VM call failing on that must not pass for the reason.
  record.interruptStart({ kind: 'exited' });
  const { spec } = record;
  const handle = record.handle!;
  // Whatever the VMM reported before it ended is published before its exit.
  const feed = record.eventFeed;
  await feed?.drain().catch((error: unknown) => context.logger.warn({ sandboxId: spec.sandboxId, err: error }, 'cannot read the last vmm events'));
  feed?.close();
  if (context.detached) return;
  const { reason, message } = classifyExit(record, status, lostBecause);
  // The reaper read the log's tail at the exit; only an exit nobody recorded needs the log here.
  let stderrTail = status?.logTail;
  if (stderrTail === undefined) {
    stderrTail = await context.layout.readLogTail(record.files.logPath, handle.logOffset).catch((error: unknown) => {
      context.logger.warn({ sandboxId: spec.sandboxId, err: error }, 'cannot read the vmm log tail');
      return '';
    });
  }

  const exit: UnsequencedExit = {
    sandboxId: spec.sandboxId,
    pid: handle.identity.pid,
    ...(status?.exitCode !== undefined ? { exitCode: status.exitCode } : {}),
    ...(status?.signal !== undefined ? { signal: status.signal } : {}),
    reason,
    exitedAt: status?.exitedAt ?? context.clock.now(),
    startedAt: record.startedAt,
    labels: spec.labels,
    stderrTail,
    message,
    signalSentByDaemon:
      status?.signal !== undefined &&
      ((record.stopRequested && (status.signal === 'SIGTERM' || status.signal === 'SIGKILL')) ||
        record.sentSignal(status.signal) ||
        record.startFailure !== undefined),
    ...(record.stopRequested && record.stopSnapshotUrl ? { snapshotUrl: record.stopSnapshotUrl } : {}),
  };
  const { exchange } = context;
  const event = exchange.assign(exit);
  // The EXITED event is numbered with the exit and delivered in the same step below, so a listing
  // agrees with both sequences it reports.
  const exitedEvent = assignEvent(context, record, { kind: 'exited', origin: 'daemon', detail: { kind: 'exit', exit: event } });
  // The socket goes while the exit is recorded: once the exit is published, the sandbox ID and
  // its socket path may be taken again at once.
  const [written] = await Promise.allSettled([context.store.exited(event), context.layout.releaseSocket(spec.socketPath, record.socketFiles), recordEvent(context, exitedEvent)]);
  if (written.status === 'rejected') {
    // Publishing matters more than the record: a watcher must not miss this exit. The reaper's
    // status stays, so a restarted daemon still knows how the VMM ended.
    context.logger.error({ sandboxId: spec.sandboxId, sequence: event.sequence, err: written.reason }, 'cannot record the exit; publishing it anyway');
  }
  // Publishing and the state change happen in one synchronous step, so a List taken at any
  // moment agrees with the exit sequence it reports.
  exchange.deliver(event);
  context.events.deliver(exitedEvent);
  record.markExited(event);
  context.table.releaseSocket(record);
  context.retention.retain(spec.sandboxId);
  if (written.status === 'fulfilled') {
    // The exit is recorded, so the reaper's files may go; off the way to the watchers. (A restart
    // before they are gone removes them as orphans: the journal has the exit.)
    context.layout.removeLaunchFiles(record.files).catch((error: unknown) =>
      context.logger.warn({ sandboxId: spec.sandboxId, err: error }, 'cannot remove the reaper status files'));
  }
  context.logger.info(
    { sandboxId: spec.sandboxId, pid: handle.identity.pid, sequence: event.sequence, reason, exitCode: event.exitCode, signal: event.signal },
    'vmm exited',
  );
}
