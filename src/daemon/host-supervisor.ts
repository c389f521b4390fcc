import { EventExchange } from '../core/event-exchange.js';
import type { ExitExchange } from '../core/exit-exchange.js';
import type { SupervisorObserver } from '../core/observer.js';
import type { ProcessHost, StateStore } from '../core/ports.js';
import { Supervisor } from '../core/supervisor.js';
import type { PathPolicy } from '../host/path-policy.js';
import { RunDirLayout } from '../host/run-dir-layout.js';
import { ImageRootSnapshotDirs } from '../host/snapshot-dirs.js';
import { systemClock } from '../host/system-clock.js';
import { VmmEventFiles } from '../host/vmm-event-files.js';
import type { LaunchStrategy } from '../launch/launch-command.js';
import { ReaperProcessHost } from '../launch/reaper-process-host.js';
import type { Logger } from '../logger.js';
import { DEFAULT_EVENT_HISTORY, ephemeralStore } from '../store/state-store.js';
import type { StartDefaults } from '../validation/start-request.js';
import { cloudHypervisorApi } from '../vmm/cloud-hypervisor-api.js';

export interface HostSupervisorOptions {
  readonly defaults: StartDefaults;
  /** The per-VMM reaper binary, also run as the spawner helper. */
  readonly reaperBin: string;
  /** Where a request's host paths may lead (src/host/path-policy.ts). */
  readonly paths: PathPolicy;
  readonly launchStrategy?: LaunchStrategy;
  readonly exchange: ExitExchange;
  /** Lifecycle events; by default an exchange of its own, remembering nothing across restarts. */
  readonly events?: EventExchange;
  readonly exitedRecordLimit: number;
  /** Durable memory; the default remembers nothing across restarts. */
  readonly store?: StateStore;
  readonly logger?: Logger;
  readonly observer?: SupervisorObserver;
  /** This host boot, if the caller has read it already. */
  readonly bootId?: string;
}

/** A supervisor wired to this host: reapers and namespaces, the run dir, Cloud Hypervisor's API, the system clock. */
export function createHostSupervisor(options: HostSupervisorOptions): { supervisor: Supervisor; host: ProcessHost } {
  const host = new ReaperProcessHost({
    reaperBin: options.reaperBin,
    paths: options.paths,
    defaults: options.defaults,
    ...(options.launchStrategy ? { strategy: options.launchStrategy } : {}),
    ...(options.bootId !== undefined ? { bootId: options.bootId } : {}),
  });
  const supervisor = new Supervisor({
    host,
    layout: new RunDirLayout(options.defaults.runDir),
    store: options.store ?? ephemeralStore,
    vmm: cloudHypervisorApi(),
    clock: systemClock,
    snapshotDirs: new ImageRootSnapshotDirs(options.paths),
    defaults: options.defaults,
    exchange: options.exchange,
    events: options.events ?? new EventExchange({ historyLimit: DEFAULT_EVENT_HISTORY, subscriberBufferLimit: 1024 }),
    vmmEvents: new VmmEventFiles(options.logger),
    exitedRecordLimit: options.exitedRecordLimit,
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.observer ? { observer: options.observer } : {}),
  });
  return { supervisor, host };
}
