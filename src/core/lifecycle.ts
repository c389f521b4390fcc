import { VmprocError } from '../errors.js';
import type { ProcessState } from './domain.js';

/**
 * Where a supervised process is in its life. `abandoning` is a start that failed (timeout, cancel,
 * restore refused, daemon shutdown) whose VMM the start path is killing: clients still see it as
 * STARTING until its exit is published.
 */
export type Phase = 'starting' | 'abandoning' | 'running' | 'stopping' | 'exited';

/**
 * The legal moves. A start can fail, be abandoned or be stopped before it is ready; every path
 * ends in `exited`, which is final.
 */
const NEXT: Readonly<Record<Phase, readonly Phase[]>> = {
  starting: ['running', 'abandoning', 'stopping', 'exited'],
  abandoning: ['stopping', 'exited'],
  running: ['stopping', 'exited'],
  stopping: ['exited'],
  exited: [],
};

export function canMove(from: Phase, to: Phase): boolean {
  return NEXT[from].includes(to);
}

/** An illegal move is the daemon's own bug, never the caller's: `internal`, naming the process. */
export function assertMove(sandboxId: string, from: Phase, to: Phase): void {
  if (!canMove(from, to)) throw new VmprocError('internal', `sandbox ${sandboxId} cannot go from ${from} to ${to}`);
}

export function isLive(phase: Phase | ProcessState): boolean {
  return phase !== 'exited';
}

/** The state clients see for a phase. */
export function publicState(phase: Phase): ProcessState {
  return phase === 'abandoning' ? 'starting' : phase;
}

/** Why a start's readiness wait was cut short (the start AbortSignal's reason). */
export type StartAbortReason =
  | { readonly kind: 'timeout' }
  | { readonly kind: 'exited' }
  | { readonly kind: 'stopped' }
  | { readonly kind: 'cancelled' }
  | { readonly kind: 'shutdown' };
