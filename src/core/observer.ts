import { type ErrorCode, isVmprocError } from '../errors.js';
import type { ProcessExitEvent, ProcessSnapshot } from './domain.js';

/** How a start() ended: ready, or the code of the error it failed with. */
export type StartOutcome = 'ready' | ErrorCode;

/**
 * What the supervisor reports as it works, for metrics and housekeeping (log rotation), never
 * for decisions. Every method is optional, must return at once and must not throw.
 */
export interface SupervisorObserver {
  /** A VMM process now exists and writes to `logPath`. */
  spawned?(sandboxId: string, logPath: string): void;
  /** A start() ended; `readySeconds` (launch to ready) when it is `ready`. */
  startFinished?(outcome: StartOutcome, readySeconds?: number): void;
}

/** What the exit exchange reports: every published exit, and every watcher it cut off. */
export interface ExitObserver {
  exitPublished?(event: ProcessExitEvent): void;
  /** A subscriber fell more than its buffer behind and was ended with `resource-exhausted`. */
  watcherCutOff?(): void;
}

/** Reports the end of a start() to `observer`, whichever way it goes; returns `start` unchanged. */
export function observeStart(observer: SupervisorObserver | undefined, start: Promise<ProcessSnapshot>): Promise<ProcessSnapshot> {
  if (!observer?.startFinished) return start;
  start.then(
    (snapshot) => {
      const readyMs = (snapshot.readyAt ?? snapshot.startedAt).getTime() - snapshot.startedAt.getTime();
      observer.startFinished!('ready', Math.max(0, readyMs) / 1000);
    },
    (error: unknown) => observer.startFinished!(isVmprocError(error) ? error.code : 'internal'),
  );
  return start;
}
