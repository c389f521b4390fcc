import { describe, expect, it } from '@jest/globals';
import { buildLaunchCommand, LAUNCH_SCRIPT, planLaunch, type LaunchPlan } from '../../src/launch/launch-command.js';
import { encodeRequest } from '../../src/launch/spawner.js';

const links = [
  { name: 'vmlinux', root: '/images', path: '/images/vmlinux', allowBlock: false },
  { name: 'rootfs.ext4', root: '/images', path: '/images/sub/rootfs.ext4', allowBlock: true },
];

const boot: LaunchPlan = {
  sandboxDir: '/run/vmprocd/sandbox',
  links,
  networkNamespace: 'ns-1',
  vmmBin: '/usr/local/bin/cloud-hypervisor',
  socketPath: '/run/vmprocd/sb-1.sock',
  eventMonitorPath: '/run/vmprocd/exits/sb-1.1.status.events',
};

/** The NUL-terminated fields of an encoded spawner request, after its 4-byte length. */
function fieldsOf(request: Buffer): string[] {
  expect(request.readUInt32LE(0)).toBe(request.length - 4);
  const payload = request.subarray(4).toString();
  expect(payload.endsWith('\0')).toBe(true);
  return payload.slice(0, -1).split('\0');
}

describe('planLaunch', () => {
  it('script: runs the launch script as it is, with its links', () => {
    expect(planLaunch(boot, 'script', '/var/run/netns')).toEqual({ kind: 'exec', links, ...buildLaunchCommand(boot) });
  });

  it('native: the VMM itself, with the sandbox the script would have set up and the same links', () => {
    expect(planLaunch(boot, 'native', '/var/run/netns')).toEqual({
      kind: 'sandbox',
      links,
      sandbox: { dir: boot.sandboxDir, netnsPath: '/var/run/netns/ns-1', netnsName: 'ns-1' },
      file: boot.vmmBin,
      args: ['--api-socket', `path=${boot.socketPath}`, '--event-monitor', `path=${boot.eventMonitorPath}`],
    });
  });
});

describe('encodeRequest (the spawner framing)', () => {
  it('frames a script launch as id, status, log, "exec", linkc, links, argc, argv, envc, env', () => {
    const command = buildLaunchCommand(boot);
    const fields = fieldsOf(
      encodeRequest({ id: 'sb-1', statusPath: '/s', logPath: '/l', links, argv: ['/usr/bin/unshare', ...command.args], env: { PATH: '/bin' } }),
    );
    expect(fields.slice(0, 13)).toEqual([
      'sb-1', '/s', '/l', 'exec', '2',
      'vmlinux', '/images', 'vmlinux', 'file',
      'rootfs.ext4', '/images', 'sub/rootfs.ext4', 'file-or-block',
    ]);
    expect(fields[13]).toBe(String(command.args.length + 1));
    // The script travels as one field, newlines and all, never split or quoted.
    expect(fields).toContain(LAUNCH_SCRIPT);
    expect(fields.slice(-2)).toEqual(['1', 'PATH=/bin']);
  });

  it('frames a native launch with its three sandbox fields after "sandbox"', () => {
    const fields = fieldsOf(
      encodeRequest({
        id: 'sb-1',
        statusPath: '/s',
        logPath: '/l',
        sandbox: { dir: '/d', netnsPath: '/var/run/netns/n', netnsName: 'n' },
        links: [],
        argv: ['/vmm', '--api-socket', 'path=/x.sock'],
        env: {},
      }),
    );
    expect(fields).toEqual(['sb-1', '/s', '/l', 'sandbox', '/d', '/var/run/netns/n', 'n', '0', '3', '/vmm', '--api-socket', 'path=/x.sock', '0']);
  });

  it('refuses a link whose path is not beneath its root (the daemon resolved it wrong)', () => {
    for (const path of ['/images', '/elsewhere/x', '/images/../etc/x']) {
      expect(() => encodeRequest({ id: 'a', statusPath: '/s', logPath: '/l', links: [{ name: 'x', root: '/images', path, allowBlock: false }], argv: ['/x'], env: {} })).toThrow(/not beneath its root/);
    }
  });

  it('refuses a NUL inside a field, which would break the framing', () => {
    expect(() => encodeRequest({ id: 'a\0b', statusPath: '/s', logPath: '/l', argv: ['/x'], env: {} })).toThrow(/NUL/);
  });
});
