import { describe, expect, it } from '@jest/globals';
import { describeExitStatus } from '../../src/core/domain.js';
import { parseReaperStatus } from '../../src/launch/exit-status.js';

describe('parseReaperStatus', () => {
  it('parses a normal exit', () => {
    expect(parseReaperStatus('pid=12 code=0 at_ms=1700000000123')).toEqual({
      pid: 12,
      exitCode: 0,
      coreDumped: false,
      exitedAt: new Date(1700000000123),
    });
  });

  it('parses a non-zero exit with a trailing newline and surrounding spaces (an empty log tail)', () => {
    expect(parseReaperStatus('  pid=99 code=137 at_ms=5\n')).toEqual({ pid: 99, exitCode: 137, coreDumped: false, exitedAt: new Date(5), logTail: '' });
  });

  it('takes the log tail after the status line, keeping its last 20 lines', () => {
    const lines = Array.from({ length: 30 }, (_, i) => `line ${i}`);
    const status = parseReaperStatus(`pid=7 signal=11 core=1 at_ms=9\n${lines.join('\n')}\n`);
    expect(status).toMatchObject({ pid: 7, signal: 'SIGSEGV', coreDumped: true, logTail: lines.slice(10).join('\n') });
  });

  it('has no log tail when the reaper wrote none (a status line alone)', () => {
    expect(parseReaperStatus('pid=7 code=0 at_ms=9')).not.toHaveProperty('logTail');
  });

  it('parses a death by signal, with its name and no exit code', () => {
    const status = parseReaperStatus('pid=12 signal=9 core=0 at_ms=1000');
    expect(status).toEqual({ pid: 12, signal: 'SIGKILL', coreDumped: false, exitedAt: new Date(1000) });
    expect(status).not.toHaveProperty('exitCode');
  });

  it('parses a core dump', () => {
    expect(parseReaperStatus('pid=3 signal=11 core=1 at_ms=1')).toMatchObject({ signal: 'SIGSEGV', coreDumped: true });
  });

  it('names a signal without a name by number', () => {
    expect(parseReaperStatus('pid=3 signal=40 core=0 at_ms=1')?.signal).toBe('SIG40');
  });

  it('does not depend on field order', () => {
    expect(parseReaperStatus('at_ms=7 signal=15 pid=4 core=0')).toEqual({ pid: 4, signal: 'SIGTERM', coreDumped: false, exitedAt: new Date(7) });
  });

  it.each([
    ['no pid', 'code=0 at_ms=1'],
    ['no time', 'pid=1 code=0'],
    ['neither code nor signal', 'pid=1 at_ms=1'],
    ['a negative pid', 'pid=-1 code=0 at_ms=1'],
    ['a non-numeric code and no signal', 'pid=1 code=x at_ms=1'],
    ['an empty line', ''],
    ['prose', 'reaper: waitpid failed'],
    ['empty values', 'pid= code= at_ms='],
  ])('returns undefined for %s', (_what, line) => {
    expect(parseReaperStatus(line)).toBeUndefined();
  });
});

describe('describeExitStatus', () => {
  it.each([
    [{ exitCode: 0, coreDumped: false }, 'exit code 0'],
    [{ exitCode: 1, coreDumped: false }, 'exit code 1'],
    [{ signal: 'SIGKILL', coreDumped: false }, 'signal SIGKILL'],
    [{ signal: 'SIGSEGV', coreDumped: true }, 'signal SIGSEGV (core dumped)'],
  ])('describes %j as %j', (status, text) => {
    expect(describeExitStatus(status)).toBe(text);
  });
});
