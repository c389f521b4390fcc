import type { SupervisorContext } from './context.js';
import type { EventDetail, EventKind, EventOrigin, ProcessEvent } from './events.js';
import type { SupervisedProcess } from './supervised-process.js';

/** An event about to be numbered: what happened to which process, and who caused it. */
export interface EventFacts {
  readonly kind: EventKind;
  readonly origin: EventOrigin;
  readonly detail?: EventDetail;
}

/** Numbers an event of `record` now, so that events published concurrently keep the order they happened in. */
export function assignEvent(context: SupervisorContext, record: SupervisedProcess, facts: EventFacts): ProcessEvent {
  return context.events.assign({
    sandboxId: record.sandboxId,
    kind: facts.kind,
    time: context.clock.now(),
    labels: record.spec.labels,
    origin: facts.origin,
    pid: record.handle?.identity.pid ?? 0,
    ...(facts.detail ? { detail: facts.detail } : {}),
  });
}

/**
 * Records an assigned event; never rejects. A record that cannot be written (a full state disk) is
 * logged and the event is to be delivered anyway: a watcher must not miss it, as with exits.
 */
export async function recordEvent(context: SupervisorContext, event: ProcessEvent, monitorOffset?: number): Promise<void> {
  await context.store.event(event, monitorOffset).catch((error: unknown) =>
    context.logger.error({ sandboxId: event.sandboxId, sequence: event.sequence, kind: event.kind, err: error }, 'cannot record the event; publishing it anyway'));
}

/** Records an assigned event, then delivers it. */
export async function recordAndDeliver(context: SupervisorContext, event: ProcessEvent, monitorOffset?: number): Promise<void> {
  await recordEvent(context, event, monitorOffset);
  context.events.deliver(event);
}

/** assignEvent, then recordAndDeliver. */
export function publishEvent(context: SupervisorContext, record: SupervisedProcess, facts: EventFacts, monitorOffset?: number): Promise<void> {
  return recordAndDeliver(context, assignEvent(context, record, facts), monitorOffset);
}
