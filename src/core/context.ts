import { VmprocError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { StartDefaults } from '../validation/start-request.js';
import type { ExitExchange } from './exit-exchange.js';
import type { SupervisorObserver } from './observer.js';
import type { EventExchange } from './event-exchange.js';
import type { Clock, ProcessHost, RunLayout, SnapshotDirs, StateStore, VmmApi, VmmEventSource } from './ports.js';
import type { ProcessTable } from './process-table.js';
import type { ExitedRetention } from './retention.js';

/** The ports a supervisor works through. */
export interface SupervisorPorts {
  readonly host: ProcessHost;
  readonly layout: RunLayout;
  readonly store: StateStore;
  readonly vmm: VmmApi;
  readonly clock: Clock;
  readonly snapshotDirs: SnapshotDirs;
  readonly vmmEvents: VmmEventSource;
}

/** What every use case shares: the ports, the process table and the exit exchange. */
export interface SupervisorContext extends SupervisorPorts {
  readonly defaults: StartDefaults;
  readonly exchange: ExitExchange;
  /** Lifecycle events, numbered apart from exits. */
  readonly events: EventExchange;
  readonly logger: Logger;
  readonly observer: SupervisorObserver | undefined;
  readonly table: ProcessTable;
  readonly retention: ExitedRetention;
  /** This host boot, read once by prepare(). */
  bootId: string;
  /** No more starts: the daemon is shutting down. */
  closed: boolean;
  /** Ends seen from now on are left for the next daemon to record (the journal is closing). */
  detached: boolean;
}

export function assertOpen(context: SupervisorContext): void {
  if (context.closed) throw new VmprocError('unavailable', 'the daemon is shutting down; retry against the next instance');
}
