/** vmprocctl's pure parts: durations, labels, states, the start request, and table layout. */
import { describe, expect, it } from '@jest/globals';
import { LaunchMode, MemoryRestoreMode, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { durationOf, formatAge, parseDuration } from '../../src/cli/durations.js';
import { UsageError } from '../../src/cli/exit-codes.js';
import { normaliseAddress, parseLabels, parseStates } from '../../src/cli/options.js';
import { startRequest } from '../../src/cli/process-commands.js';
import { formatFields, formatTable } from '../../src/cli/table.js';

describe('vmprocctl parsing', () => {
  it('reads Go-style durations and writes protobuf Durations', () => {
    expect(['500ms', '5s', '2m', '1h30m', '1.5s', '0', '0s'].map((d) => parseDuration('--x', d))).toEqual([500, 5_000, 120_000, 5_400_000, 1_500, 0, 0]);
    for (const bad of ['5', 's', '-5s', '5 s', '5sec', '']) expect(() => parseDuration('--grace', bad)).toThrow(UsageError);
    expect(durationOf(1_500)).toEqual({ seconds: 1n, nanos: 500_000_000 });
    expect(durationOf(0.5)).toEqual({ seconds: 0n, nanos: 500_000 });
    expect([850, 12_000, 300_000, 7_200_000, 3 * 86_400_000].map(formatAge)).toEqual(['850ms', '12s', '5m', '2h', '3d']);
  });

  it('reads labels, states and addresses', () => {
    expect(parseLabels(['team=a', 'empty=', 'eq=x=y'])).toEqual({ team: 'a', empty: '', eq: 'x=y' });
    expect(() => parseLabels(['=a'])).toThrow('must be KEY=VALUE');
    expect(() => parseLabels(['a=1', 'a=2'])).toThrow('given twice');
    expect(parseStates(['running,Stopping', 'PROCESS_STATE_EXITED'])).toEqual([ProcessState.RUNNING, ProcessState.STOPPING, ProcessState.EXITED]);
    expect(normaliseAddress('/run/x.sock')).toBe('unix:///run/x.sock');
    expect(normaliseAddress('127.0.0.1:50051')).toBe('127.0.0.1:50051');
  });

  it('builds the StartProcess request, inferring restore mode from --restore-source', () => {
    expect(startRequest('sb', { kernel: '/k', rootfs: '/r', netns: 'n', readyTimeout: '2s', label: ['a=b'] })).toEqual({
      sandboxId: 'sb', mode: LaunchMode.BOOT, kernelPath: '/k', rootfsPath: '/r', networkNamespace: 'n',
      readyTimeout: { seconds: 2n, nanos: 0 }, labels: { a: 'b' },
    });
    expect(startRequest('sb', { rootfs: '/r', netns: 'n', restoreSource: 'file:///s', restoreMode: 'on-demand', resume: true, socket: '/run/s.sock' })).toMatchObject({
      mode: LaunchMode.RESTORE, kernelPath: '', socketPath: '/run/s.sock',
      restore: { sourceUrl: 'file:///s', memoryRestoreMode: MemoryRestoreMode.ON_DEMAND, resume: true, prefault: false },
    });
    expect(() => startRequest('sb', { mode: 'restore', rootfs: '/r', netns: 'n', prefault: true })).toThrow('need --restore-source');
  });

  it('aligns table columns without padding the last one, and indents multi-line fields', () => {
    expect(formatTable(['A', 'BB', 'C'], [['xxx', 'y', 'z z'], ['', 'long value', '']])).toBe('A     BB           C\nxxx   y            z z\n      long value\n');
    expect(formatFields([['Key', 'v'], ['Longer key', 'one\ntwo']])).toBe('Key:        v\nLonger key: one\n            two\n');
  });
});
