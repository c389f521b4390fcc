import type { SupervisorContext } from './context.js';
import type { ProcessSnapshot, ProcessState } from './domain.js';
import type { ExitSubscription, SubscribeOptions } from './exit-exchange.js';
import { untilAborted } from './timing.js';

export interface ListFilter {
  readonly states?: readonly ProcessState[];
  readonly labels?: Readonly<Record<string, string>>;
}

export function getProcess(context: SupervisorContext, sandboxId: string): ProcessSnapshot {
  return context.table.find(sandboxId).snapshot();
}

/** The matching processes and the latest exit sequence, taken at one instant. */
export function listProcesses(context: SupervisorContext, filter: ListFilter = {}): { processes: ProcessSnapshot[]; exitSequence: number; eventSequence: number } {
  const states = filter.states && filter.states.length > 0 ? new Set(filter.states) : undefined;
  const labels = Object.entries(filter.labels ?? {});
  const processes: ProcessSnapshot[] = [];
  for (const record of context.table.records()) {
    if (states && !states.has(record.state)) continue;
    if (labels.some(([key, value]) => record.spec.labels[key] !== value)) continue;
    processes.push(record.snapshot());
  }
  return { processes, exitSequence: context.exchange.latestSequence, eventSequence: context.events.latestSequence };
}

/** Resolves once the process has exited (at once if it has); aborting `signal` only ends the wait. */
export function waitProcess(context: SupervisorContext, sandboxId: string, signal?: AbortSignal): Promise<ProcessSnapshot> {
  return untilAborted(context.table.find(sandboxId).exited, signal);
}

export function watchExits(context: SupervisorContext, options: SubscribeOptions): ExitSubscription {
  return context.exchange.subscribe(options);
}
