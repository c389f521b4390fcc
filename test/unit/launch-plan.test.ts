import { describe, expect, it } from '@jest/globals';
import { buildLaunchCommand, LAUNCH_SCRIPT, planLaunch, type LaunchPlan } from '../../src/launch/launch-command.js';
import { encodeRequest } from '../../src/launch/spawner.js';

const boot: LaunchPlan = {
  mode: 'boot',
  sandboxDir: '/run/vmprocd/sandbox',
  kernelPath: '/images/vmlinux',
  rootfsPath: '/images/rootfs.ext4',
  networkNamespace: 'ns-1',
  vmmBin: '/usr/local/bin/cloud-hypervisor',
  socketPath: '/run/vmprocd/sb-1.sock',
};

/** The NUL-terminated fields of an encoded spawner request, after its 4-byte length. */
function fieldsOf(request: Buffer): string[] {
  expect(request.readUInt32LE(0)).toBe(request.length - 4);
  const payload = request.subarray(4).toString();
  expect(payload.endsWith('\0')).toBe(true);
  return payload.slice(0, -1).split('\0');
}

describe('planLaunch', () => {
  it('script: runs the launch script as it is', () => {
    expect(planLaunch(boot, 'script', '/var/run/netns')).toEqual({ kind: 'exec', ...buildLaunchCommand(boot) });
  });

  it('native: the VMM itself, with the sandbox the script would have set up', () => {
    expect(planLaunch(boot, 'native', '/var/run/netns')).toEqual({
      kind: 'sandbox',
      sandbox: { dir: boot.sandboxDir, kernel: boot.kernelPath, rootfs: boot.rootfsPath, netnsPath: '/var/run/netns/ns-1', netnsName: 'ns-1' },
      file: boot.vmmBin,
      args: ['--api-socket', `path=${boot.socketPath}`],
    });
  });

  it('native, restore mode: no kernel to link', () => {
    const program = planLaunch({ ...boot, mode: 'restore' }, 'native', '/var/run/netns');
    expect(program.kind === 'sandbox' && program.sandbox.kernel).toBe('');
  });
});

describe('encodeRequest (the spawner framing)', () => {
  it('frames a script launch as id, status, log, "exec", argc, argv, envc, env', () => {
    const command = buildLaunchCommand(boot);
    const fields = fieldsOf(
      encodeRequest({ id: 'sb-1', statusPath: '/s', logPath: '/l', argv: ['/usr/bin/unshare', ...command.args], env: { PATH: '/bin' } }),
    );
    expect(fields.slice(0, 5)).toEqual(['sb-1', '/s', '/l', 'exec', String(command.args.length + 1)]);
    // The script travels as one field, newlines and all, never split or quoted.
    expect(fields).toContain(LAUNCH_SCRIPT);
    expect(fields.slice(-2)).toEqual(['1', 'PATH=/bin']);
  });

  it('frames a native launch with its five sandbox fields after "sandbox"', () => {
    const fields = fieldsOf(
      encodeRequest({
        id: 'sb-1',
        statusPath: '/s',
        logPath: '/l',
        sandbox: { dir: '/d', kernel: '', rootfs: '/r', netnsPath: '/var/run/netns/n', netnsName: 'n' },
        argv: ['/vmm', '--api-socket', 'path=/x.sock'],
        env: {},
      }),
    );
    expect(fields).toEqual(['sb-1', '/s', '/l', 'sandbox', '/d', '', '/r', '/var/run/netns/n', 'n', '3', '/vmm', '--api-socket', 'path=/x.sock', '0']);
  });

  it('refuses a NUL inside a field, which would break the framing', () => {
    expect(() => encodeRequest({ id: 'a\0b', statusPath: '/s', logPath: '/l', argv: ['/x'], env: {} })).toThrow(/NUL/);
  });
});
