import { VmprocError } from '../errors.js';
import type { ProcessState } from './process-types.js';

/**
 * The legal moves of a supervised process. A start can fail or be stopped before it is ready;
 * every path ends in EXITED, which is final.
 */
const NEXT: Readonly<Record<ProcessState, readonly ProcessState[]>> = {
  starting: ['running', 'stopping', 'exited'],
  running: ['stopping', 'exited'],
  stopping: ['exited'],
  exited: [],
};

export function canTransition(from: ProcessState, to: ProcessState): boolean {
  return NEXT[from].includes(to);
}

/** Throws `failed-precondition` for an illegal move, naming the process. */
export function assertTransition(sandboxId: string, from: ProcessState, to: ProcessState): void {
  if (!canTransition(from, to)) {
    throw new VmprocError('failed-precondition', `sandbox ${sandboxId} cannot go from ${from} to ${to}`);
  }
}

export function isLive(state: ProcessState): boolean {
  return state !== 'exited';
}
