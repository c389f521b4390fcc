import { describe, expect, it } from '@jest/globals';
import { assertTransition, canTransition, isLive } from '../../src/supervisor/process-state.js';
import type { ProcessState } from '../../src/supervisor/process-types.js';
import { expectThrowsVmprocError } from './support/errors.js';

const STATES: readonly ProcessState[] = ['starting', 'running', 'stopping', 'exited'];

/** The whole table: every legal move is listed, everything else is illegal. */
const LEGAL = new Set([
  'starting->running',
  'starting->stopping',
  'starting->exited',
  'running->stopping',
  'running->exited',
  'stopping->exited',
]);

const ALL_PAIRS = STATES.flatMap((from) => STATES.map((to) => [from, to] as const));

describe('process state machine', () => {
  it.each(ALL_PAIRS)('%s -> %s follows the table', (from, to) => {
    const legal = LEGAL.has(`${from}->${to}`);
    expect(canTransition(from, to)).toBe(legal);
    if (legal) {
      expect(() => assertTransition('sb-1', from, to)).not.toThrow();
    } else {
      expectThrowsVmprocError(() => assertTransition('sb-1', from, to), 'failed-precondition', `sandbox sb-1 cannot go from ${from} to ${to}`);
    }
  });

  it('has no self-transitions and no way back', () => {
    for (const state of STATES) expect(canTransition(state, state)).toBe(false);
    expect(canTransition('running', 'starting')).toBe(false);
    expect(canTransition('stopping', 'running')).toBe(false);
  });

  it('makes exited final and reachable from every other state', () => {
    for (const to of STATES) expect(canTransition('exited', to)).toBe(false);
    for (const from of STATES.filter((s) => s !== 'exited')) expect(canTransition(from, 'exited')).toBe(true);
  });

  it('calls every state but exited live', () => {
    expect(STATES.filter(isLive)).toEqual(['starting', 'running', 'stopping']);
  });
});
