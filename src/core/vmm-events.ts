import type { SupervisorContext } from './context.js';
import type { EventDetail, EventKind } from './events.js';
import type { VmmEvent } from './ports.js';
import { publishEvent } from './publish-event.js';
import type { SupervisedProcess } from './supervised-process.js';

/**
 * What the VMM's event monitor says, as lifecycle events. Cloud Hypervisor reports each change
 * twice, as it starts and once done (`pausing`, `paused`): only the second is an event here. Its
 * `vmm starting`, `vm booting`, `vm deleted`, `vmm shutdown` and device events are not.
 */
const KIND_OF: Readonly<Record<string, EventKind>> = {
  'vm/booted': 'vm-booted',
  'vm/paused': 'paused',
  'vm/resumed': 'resumed',
  'vm/snapshotted': 'snapshotted',
  'vm/restored': 'restored',
  'vm/resized': 'resized',
  'vm/rebooted': 'guest-reboot',
  'vm/shutdown': 'guest-shutdown',
  'guest/panic': 'guest-panic',
};

/** How long an operation of the daemon claims the VMM event it causes (the monitor may lag the API's answer). */
export const EXPECT_WINDOW_MS = 10_000;

/** Starts following `record`'s VMM events from byte `fromOffset` of its monitor's output. */
export function followVmmEvents(context: SupervisorContext, record: SupervisedProcess, fromOffset: number): void {
  record.followEvents(context.vmmEvents.follow(record.files, fromOffset, (events) => publishVmmEvents(context, record, events)));
}

/** Publishes a batch of the monitor's events in order, each recorded with the offset just past it. */
async function publishVmmEvents(context: SupervisorContext, record: SupervisedProcess, events: readonly VmmEvent[]): Promise<void> {
  for (const event of events) {
    // After shutdown the journal is closed: the next daemon publishes these.
    if (context.detached) return;
    const kind = KIND_OF[`${event.source}/${event.event}`];
    if (kind === undefined || record.exit) continue;
    // The VM going down because the daemon stops the VMM (or sent it a signal) is the stop, reported by the exit.
    if (kind === 'guest-shutdown' && (record.stopRequested || record.sentSignal('SIGTERM') || record.sentSignal('SIGINT'))) continue;
    const expected = record.consumeExpected(kind, context.clock.now());
    const detail = detailOf(record, kind, event, expected?.detail);
    await publishEvent(context, record, { kind, origin: expected ? 'daemon' : 'vmm', ...(detail ? { detail } : {}) }, event.end);
  }
}

function detailOf(record: SupervisedProcess, kind: EventKind, event: VmmEvent, expected: EventDetail | undefined): EventDetail | undefined {
  if (expected) return expected;
  if (kind === 'guest-panic') return { kind: 'guest-panic', event: event.properties?.event ?? '' };
  if (kind === 'restored' && record.spec.restore) {
    const { sourceUrl, memoryRestoreMode } = record.spec.restore;
    return { kind: 'restore', sourceUrl, ...(memoryRestoreMode ? { memoryRestoreMode } : {}) };
  }
  if (kind === 'resized') return { kind: 'resize' };
  return undefined;
}

/**
 * The daemon is about to cause `kind` in the VMM (a call on its API): the monitor's event for it
 * is published as the daemon's, with `detail`.
 */
export function expectVmmEvent(context: SupervisorContext, record: SupervisedProcess, kind: EventKind, detail?: EventDetail): () => void {
  return record.expect(kind, context.clock.now().getTime() + EXPECT_WINDOW_MS, detail);
}

/** Runs the daemon's `call`, which causes `kind` in the VMM; a failed call withdraws its claim on the event. */
export async function causingVmmEvent<T>(context: SupervisorContext, record: SupervisedProcess, kind: EventKind, call: () => Promise<T>, detail?: EventDetail): Promise<T> {
  const withdraw = expectVmmEvent(context, record, kind, detail);
  try {
    return await call();
  } catch (error) {
    withdraw();
    throw error;
  }
}

/**
 * Reads what the monitor holds so far and, while the daemon still expects `kind` (its call has
 * returned but the monitor thread has not written the event yet), a little longer: so the
 * events of a start come before its READY.
 */
export async function settleVmmEvent(context: SupervisorContext, record: SupervisedProcess, kind: EventKind, waitMs = 1000): Promise<void> {
  const deadline = context.clock.now().getTime() + waitMs;
  await record.eventFeed?.drain();
  while (record.isExpecting(kind) && record.eventFeed?.monitored && context.clock.now().getTime() < deadline) {
    await new Promise<void>((resolve) => context.clock.schedule(5, resolve));
    await record.eventFeed.drain();
  }
}
