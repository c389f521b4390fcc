import { describe, expect, it } from '@jest/globals';
import { constants } from 'node:os';
import { parseSignalName, signalName } from '../../src/core/signals.js';

describe('parseSignalName', () => {
  it.each([
    ['SIGUSR1', 'SIGUSR1'],
    ['USR1', 'SIGUSR1'],
    ['usr1', 'SIGUSR1'],
    ['sigterm', 'SIGTERM'],
    ['  TERM  ', 'SIGTERM'],
    ['kill', 'SIGKILL'],
    ['SIGIOT', 'SIGIOT'],
  ])('parses %j as %s with the platform number', (input, name) => {
    expect(parseSignalName(input)).toEqual({ name, number: constants.signals[name as keyof typeof constants.signals] });
  });

  it('gives the Linux numbers', () => {
    expect(parseSignalName('KILL')?.number).toBe(9);
    expect(parseSignalName('TERM')?.number).toBe(15);
    expect(parseSignalName('USR1')?.number).toBe(10);
  });

  it.each(['', 'SIG', 'FOO', 'SIGFOO', '9', 'SIG9', 'SIGKILLX', 'toString', 'constructor', '__proto__', 'hasOwnProperty', 'SIGRTMIN', 'KILL TERM'])(
    'returns undefined for %j',
    (input) => {
      expect(parseSignalName(input)).toBeUndefined();
    },
  );
});

describe('signalName', () => {
  it.each([
    [1, 'SIGHUP'],
    [2, 'SIGINT'],
    [9, 'SIGKILL'],
    [11, 'SIGSEGV'],
    [15, 'SIGTERM'],
    [6, 'SIGABRT'],
    [29, 'SIGIO'],
  ])('names %i as %s (the canonical name for aliases)', (number, name) => {
    expect(signalName(number)).toBe(name);
  });

  it('falls back to SIG<n> for numbers without a name (real-time signals)', () => {
    expect(signalName(34)).toBe('SIG34');
    expect(signalName(64)).toBe('SIG64');
  });

  it('round-trips every named signal number through parseSignalName', () => {
    for (const number of new Set(Object.values(constants.signals))) {
      expect(parseSignalName(signalName(number))?.number).toBe(number);
    }
  });
});
