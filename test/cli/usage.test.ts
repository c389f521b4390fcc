/**
 * vmprocctl's own contract, no daemon needed: help, usage errors (exit 2, nothing sent), an
 * unreachable daemon (exit 1 with a hint), the address from VMPROCD_ADDRESS, TLS flag checks.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ctl } from './support.js';

describe('vmprocctl without a daemon', () => {
  let dir: string;
  let nowhere: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmpt-ctl-'));
    nowhere = `unix://${dir}/missing.sock`;
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('--help lists every command and the exit codes, and exits 0', async () => {
    const { exitCode, stdout } = await ctl(['--help']);
    expect(exitCode).toBe(0);
    for (const command of ['start', 'stop', 'signal', 'get', 'list', 'wait', 'watch', 'logs']) expect(stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
    expect(stdout).toContain('Exit codes');
    expect(stdout).toContain('VMPROCD_ADDRESS');
    const start = await ctl(['start', '--help']);
    expect(start.exitCode).toBe(0);
    expect(start.stdout).toContain('--restore-source <url>');
    expect(start.stdout).toContain('Global Options');
  });

  it.each([
    [[], 'Usage: vmprocctl'],
    [['lst'], "unknown command 'lst'"],
    [['list', '--bogus'], "unknown option '--bogus'"],
    [['get'], "missing required argument 'sandbox-id'"],
    [['get', 'a', 'b'], 'too many arguments'],
    [['start', 'sb', '--kernel', '/k', '--netns', 'n'], "required option '--rootfs <path>' not specified"],
    [['start', 'sb', '--rootfs', '/r', '--netns', 'n'], 'boot mode needs --kernel PATH'],
    [['start', 'sb', '--mode', 'boot', '--kernel', '/k', '--rootfs', '/r', '--netns', 'n', '--resume'], 'need --mode restore'],
    [['start', 'sb', '--mode', 'restore', '--kernel', '/k', '--rootfs', '/r', '--netns', 'n'], '--kernel is for boot mode only'],
    [['start', 'sb', '--mode', 'reboot', '--rootfs', '/r', '--netns', 'n'], 'Allowed choices are boot, restore'],
    [['start', 'sb', '--kernel', '/k', '--rootfs', '/r', '--netns', 'n', '--label', 'oops'], 'must be KEY=VALUE'],
    [['stop', 'sb', '--grace', '10'], 'is not a duration; write it with a unit, e.g. 500ms, 5s'],
    [['list', '--state', 'sleeping'], 'use starting, running, stopping, exited'],
    [['watch', '--after', '-1'], 'must be a sequence number'],
    [['logs', 'sb', '--tail', 'many'], 'must be a number of lines'],
    [['get', 'sb', '--timeout', 'soon'], '--timeout "soon" is not a duration'],
    [['get', 'sb', '--tls-cert', '/c', '--tls-key', '/k'], 'need --tls-ca'],
    [['get', 'sb', '--tls-ca', '/nonexistent/ca.pem'], 'cannot read --tls-ca /nonexistent/ca.pem: ENOENT'],
  ])('usage error %j: exit 2, says what is wrong', async (args, message) => {
    // Pointed at nothing: a usage error must be reported before any connection is tried.
    const { exitCode, stderr, stdout } = await ctl([...args, '--address', nowhere]);
    expect({ exitCode, stderr }).toEqual({ exitCode: 2, stderr: expect.stringContaining(message) });
    expect(stderr).not.toContain('UNAVAILABLE');
    if (args.length > 0) expect(stderr).toMatch(/--help/);
    expect(stdout).toBe('');
  });

  it('an unreachable daemon: exit 1, the status, and a hint naming the address', async () => {
    const { exitCode, stderr, stdout } = await ctl(['list', '--address', nowhere]);
    expect(exitCode).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/^vmprocctl: UNAVAILABLE: .*ENOENT/);
    expect(stderr).not.toContain('Resolution note');
    expect(stderr).toContain(`hint: is vmprocd running? check --address (now ${nowhere}) or VMPROCD_ADDRESS`);
  });

  it('takes the address from VMPROCD_ADDRESS, and a bare socket path as unix://PATH', async () => {
    const fromEnv = await ctl(['get', 'sb'], { env: { VMPROCD_ADDRESS: `${dir}/env.sock` } });
    expect(fromEnv.exitCode).toBe(1);
    expect(fromEnv.stderr).toContain(`(now unix://${dir}/env.sock)`);
    const flagWins = await ctl(['get', 'sb', '--address', `${dir}/flag.sock`], { env: { VMPROCD_ADDRESS: `${dir}/env.sock` } });
    expect(flagWins.stderr).toContain(`(now unix://${dir}/flag.sock)`);
  });

  it('wait and watch fail at once too when the daemon is unreachable', async () => {
    for (const args of [['wait', 'sb'], ['watch']]) {
      const { exitCode, stderr } = await ctl([...args, '--address', nowhere], { timeoutMs: 10_000 });
      expect({ args, exitCode }).toEqual({ args, exitCode: 1 });
      expect(stderr).toContain('UNAVAILABLE');
    }
  });
});
