import { describe, expect, it } from '@jest/globals';
import { assertMove, canMove, isLive, type Phase, publicState } from '../../src/core/lifecycle.js';
import { expectThrowsVmprocError } from './support/errors.js';

const PHASES: readonly Phase[] = ['starting', 'abandoning', 'running', 'stopping', 'exited'];

/** The whole table: every legal move is listed, everything else is illegal. */
const LEGAL = new Set([
  'starting->running',
  'starting->abandoning',
  'starting->stopping',
  'starting->exited',
  'abandoning->stopping',
  'abandoning->exited',
  'running->stopping',
  'running->exited',
  'stopping->exited',
]);

const ALL_PAIRS = PHASES.flatMap((from) => PHASES.map((to) => [from, to] as const));

describe('process lifecycle', () => {
  it.each(ALL_PAIRS)('%s -> %s follows the table', (from, to) => {
    const legal = LEGAL.has(`${from}->${to}`);
    expect(canMove(from, to)).toBe(legal);
    if (legal) {
      expect(() => assertMove('sb-1', from, to)).not.toThrow();
    } else {
      // An illegal move is the daemon's own bug: internal, never the caller's failed precondition.
      expectThrowsVmprocError(() => assertMove('sb-1', from, to), 'internal', `sandbox sb-1 cannot go from ${from} to ${to}`);
    }
  });

  it('has no self-transitions and no way back', () => {
    for (const phase of PHASES) expect(canMove(phase, phase)).toBe(false);
    expect(canMove('running', 'starting')).toBe(false);
    expect(canMove('stopping', 'running')).toBe(false);
    expect(canMove('abandoning', 'running')).toBe(false);
  });

  it('makes exited final and reachable from every other phase', () => {
    for (const to of PHASES) expect(canMove('exited', to)).toBe(false);
    for (const from of PHASES.filter((s) => s !== 'exited')) expect(canMove(from, 'exited')).toBe(true);
  });

  it('calls every phase but exited live', () => {
    expect(PHASES.filter(isLive)).toEqual(['starting', 'abandoning', 'running', 'stopping']);
  });

  it('shows an abandoned start as STARTING until its exit is published', () => {
    expect(PHASES.map(publicState)).toEqual(['starting', 'starting', 'running', 'stopping', 'exited']);
  });
});
