import { type Logger, silentLogger } from '../logger.js';
import type { StartDefaults } from '../validation/start-request.js';
import type { SupervisorContext, SupervisorPorts } from './context.js';
import type { PersistedState } from './ports.js';
import type { AfterSnapshot, ProcessSnapshot, StartRequest, VmCounters, VmInfo, VmResize } from './domain.js';
import { getVmCounters, getVmInfo, pauseVm, resizeVm, resumeVm, snapshotVm } from './vm-operations.js';
import type { ExitExchange, ExitSubscription, SubscribeOptions } from './exit-exchange.js';
import type { EventExchange, EventSubscribeOptions, EventSubscription } from './event-exchange.js';
import { observeStart, type SupervisorObserver } from './observer.js';
import { ProcessTable } from './process-table.js';
import { getProcess, type ListFilter, listProcesses, waitProcess, watchExits } from './queries.js';
import { recoverProcesses } from './recover-processes.js';
import { ExitedRetention } from './retention.js';
import { signalProcess } from './signal-process.js';
import { KILL_BACKSTOP_MS } from '../api-defaults.js';
import { startProcess } from './start-process.js';
import { stopProcess } from './stop-process.js';
import { withinTimeout } from './timing.js';

export type { ListFilter };

export interface SupervisorOptions extends SupervisorPorts {
  readonly defaults: StartDefaults;
  readonly exchange: ExitExchange;
  readonly events: EventExchange;
  /** How many exited processes stay visible to Get/List/Wait before the oldest are forgotten. */
  readonly exitedRecordLimit: number;
  readonly logger?: Logger;
  /** Told of spawns and start outcomes (metrics, log rotation); nothing by default. */
  readonly observer?: SupervisorObserver;
}

/**
 * Launches, watches and stops VMM processes and drives their VMs: a small facade over the use
 * cases, one file each (start-process, stop-process, signal-process, vm-operations, queries,
 * recover-processes, record-exit, retention). It knows nothing of gRPC: requests come in as plain values, failures leave as
 * VmprocError, exits go out through the ExitExchange; the host is reached only through the ports.
 *
 * Invariants: at most one live process per sandbox ID and per socket path; every spawned
 * process gets exactly one exit event, whatever path ends it, recorded in the store before it is
 * published; a failed start leaves no process and no socket behind.
 */
export class Supervisor {
  readonly #context: SupervisorContext;

  constructor(options: SupervisorOptions) {
    const logger = options.logger ?? silentLogger;
    const table = new ProcessTable();
    this.#context = {
      host: options.host,
      layout: options.layout,
      store: options.store,
      vmm: options.vmm,
      clock: options.clock,
      snapshotDirs: options.snapshotDirs,
      vmmEvents: options.vmmEvents,
      events: options.events,
      defaults: options.defaults,
      exchange: options.exchange,
      logger,
      observer: options.observer,
      table,
      retention: new ExitedRetention(table, options.layout, options.exitedRecordLimit, logger),
      bootId: '',
      closed: false,
      detached: false,
    };
  }

  /** Creates the run dir's layout and reads the host's boot; before recover() and any start. */
  async prepare(): Promise<void> {
    await this.#context.layout.prepare();
    this.#context.bootId = await this.#context.host.bootId();
  }

  get exchange(): ExitExchange {
    return this.#context.exchange;
  }

  get events(): EventExchange {
    return this.#context.events;
  }

  /**
   * Launches a VMM and resolves once it is ready (ping answered, restore done). `signal` is the
   * caller's interest: aborting it before ready abandons the start; after ready it has no effect.
   */
  start(request: StartRequest, signal?: AbortSignal): Promise<ProcessSnapshot> {
    return observeStart(this.#context.observer, startProcess(this.#context, request, signal));
  }

  /** SIGTERM, SIGKILL after `graceMs`; resolves once the exit is observed. */
  stop(sandboxId: string, graceMs?: number): Promise<ProcessSnapshot> {
    return stopProcess(this.#context, sandboxId, graceMs);
  }

  signal(sandboxId: string, signalName: string): Promise<ProcessSnapshot> {
    return signalProcess(this.#context, sandboxId, signalName);
  }

  pauseVm(sandboxId: string): Promise<ProcessSnapshot> {
    return pauseVm(this.#context, sandboxId);
  }

  resumeVm(sandboxId: string): Promise<ProcessSnapshot> {
    return resumeVm(this.#context, sandboxId);
  }

  snapshotVm(sandboxId: string, destinationUrl: string, after: AfterSnapshot): Promise<{ process: ProcessSnapshot; snapshotUrl: string }> {
    return snapshotVm(this.#context, sandboxId, destinationUrl, after);
  }

  vmInfo(sandboxId: string): Promise<VmInfo> {
    return getVmInfo(this.#context, sandboxId);
  }

  vmCounters(sandboxId: string): Promise<VmCounters> {
    return getVmCounters(this.#context, sandboxId);
  }

  resizeVm(sandboxId: string, resize: VmResize): Promise<{ process: ProcessSnapshot; vm: VmInfo }> {
    return resizeVm(this.#context, sandboxId, resize);
  }

  get(sandboxId: string): ProcessSnapshot {
    return getProcess(this.#context, sandboxId);
  }

  list(filter?: ListFilter): { processes: ProcessSnapshot[]; exitSequence: number; eventSequence: number } {
    return listProcesses(this.#context, filter);
  }

  wait(sandboxId: string, signal?: AbortSignal): Promise<ProcessSnapshot> {
    return waitProcess(this.#context, sandboxId, signal);
  }

  watchExits(options: SubscribeOptions): ExitSubscription {
    return watchExits(this.#context, options);
  }

  watchEvents(options: EventSubscribeOptions): EventSubscription {
    return this.#context.events.subscribe(options);
  }

  /** The latest sequences, and the oldest cursors a watcher can still resume from. */
  latestSequences(): { latestEventSequence: number; eventsRetainedAfter: number; latestExitSequence: number; exitsRetainedAfter: number } {
    const { events, exchange } = this.#context;
    return { latestEventSequence: events.latestSequence, eventsRetainedAfter: events.retainedAfter, latestExitSequence: exchange.latestSequence, exitsRetainedAfter: exchange.retainedAfter };
  }

  /** Re-adopts what a previous daemon left (recover-processes.ts); call before serving. */
  recover(state: PersistedState): Promise<void> {
    return recoverProcesses(this.#context, state);
  }

  /**
   * Stops taking starts and abandons those not yet ready (their VMMs are killed and their exits
   * published). Running VMMs are left alone: they outlive the daemon.
   */
  async shutdown(): Promise<void> {
    const context = this.#context;
    if (context.closed) return;
    context.closed = true;
    const starting = [...context.table.records()].filter((r) => r.phase === 'starting' || r.phase === 'abandoning');
    for (const record of starting) record.interruptStart({ kind: 'shutdown' });
    await Promise.allSettled(starting.map((r) => withinTimeout(context.clock, r.exited, KILL_BACKSTOP_MS)));
    context.detached = true;
    // The next daemon reads on from the offset of the last event this one recorded.
    for (const record of context.table.records()) record.eventFeed?.close();
    await context.host.close();
  }
}
