/**
 * The lifecycle events of a supervised process, as WatchEvents publishes them. The daemon's own
 * transitions (started, ready, exited) and what Cloud Hypervisor's event monitor reports from
 * inside the VMM and the guest (booted, paused, ..., guest panic) share one numbering.
 */
import type { MemoryRestoreMode, ProcessExitEvent } from './domain.js';

export const EVENT_KINDS = [
  'started',
  'ready',
  'vm-booted',
  'paused',
  'resumed',
  'snapshotted',
  'restored',
  'resized',
  'guest-panic',
  'guest-reboot',
  'guest-shutdown',
  'exited',
] as const;

export type EventKind = (typeof EVENT_KINDS)[number];

/** Who caused the change: the daemon (an RPC, a start, a stop) or something else (the guest, a call on the VMM's own socket). */
export type EventOrigin = 'daemon' | 'vmm';

export type EventDetail =
  | { readonly kind: 'snapshot'; readonly snapshotUrl: string }
  | { readonly kind: 'restore'; readonly sourceUrl: string; readonly memoryRestoreMode?: MemoryRestoreMode }
  /** What the daemon asked for; empty for a resize made on the VMM's own socket (Cloud Hypervisor's event does not say). */
  | { readonly kind: 'resize'; readonly vcpus?: number; readonly memoryMib?: number; readonly balloonMib?: number }
  /** Cloud Hypervisor's pvpanic event: `panic`, `crash_loaded` or `unknown_event` (devices/src/pvpanic.rs). */
  | { readonly kind: 'guest-panic'; readonly event: string }
  | { readonly kind: 'exit'; readonly exit: ProcessExitEvent };

export interface ProcessEvent {
  readonly sequence: number;
  readonly sandboxId: string;
  readonly kind: EventKind;
  readonly time: Date;
  readonly labels: Readonly<Record<string, string>>;
  readonly origin: EventOrigin;
  /** The VMM's PID (0 before there was one). */
  readonly pid: number;
  readonly detail?: EventDetail;
}

export type UnsequencedEvent = Omit<ProcessEvent, 'sequence'>;

/**
 * Sent to a filtered watcher when events it did not want went by: the latest sequence, so its
 * cursor advances and a reconnect after it never fails for those events.
 */
export interface ProgressMarker {
  readonly kind: 'progress';
  readonly sequence: number;
}

export type EventStreamItem = ProcessEvent | ProgressMarker;

/** What a watcher asks for: only these sandboxes and kinds, each all when empty or undefined. */
export interface EventFilter {
  readonly sandboxIds?: readonly string[];
  readonly kinds?: readonly EventKind[];
}

/** The filter as a predicate; undefined when it lets everything through. */
export function eventPredicate(filter: EventFilter): ((event: ProcessEvent) => boolean) | undefined {
  const sandboxes = filter.sandboxIds && filter.sandboxIds.length > 0 ? new Set(filter.sandboxIds) : undefined;
  const kinds = filter.kinds && filter.kinds.length > 0 ? new Set(filter.kinds) : undefined;
  if (!sandboxes && !kinds) return undefined;
  return (event) => (!sandboxes || sandboxes.has(event.sandboxId)) && (!kinds || kinds.has(event.kind));
}
