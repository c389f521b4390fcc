/** VmConfig: validated into a VmSpec, and sent to Cloud Hypervisor naming the sandbox's files. */
import { describe, expect, it } from '@jest/globals';
import type { VmRequest } from '../../src/core/domain.js';
import { validateVm } from '../../src/validation/vm-config.js';
import { vmConfigBody } from '../../src/vmm/vm-config-body.js';
import { expectThrowsVmprocError } from './support/errors.js';

const BASE: VmRequest = { vcpus: 1, maxVcpus: 0, memoryMib: 256, maxMemoryMib: 0, cmdline: 'console=ttyS0', initramfsPath: '', rootfsReadonly: false, disks: [], net: [], pvpanic: false };
const vm = (patch: Partial<VmRequest>) => ({ ...BASE, ...patch });

describe('validateVm', () => {
  it('fills in the defaults: max vCPUs and memory as at boot, the serial console in the log', () => {
    expect(validateVm(BASE, 'boot')).toEqual({ vcpus: 1, maxVcpus: 1, memoryMib: 256, maxMemoryMib: 256, cmdline: 'console=ttyS0', rootfsReadonly: false, disks: [], net: [], serial: 'log', pvpanic: false });
  });

  it.each([
    [{ vcpus: 0 }, 'vm.vcpus is required'],
    [{ vcpus: 255 }, 'vm.vcpus 255 is over the maximum of 254'],
    [{ vcpus: 2, maxVcpus: 1 }, 'vm.max_vcpus must be at least vm.vcpus (2)'],
    [{ memoryMib: 0 }, 'vm.memory_mib is required'],
    [{ maxMemoryMib: 128 }, 'vm.max_memory_mib must be at least vm.memory_mib (256)'],
    [{ cmdline: 'a\nb' }, 'control character'],
    [{ cmdline: 'x'.repeat(4097) }, 'over 4096'],
    [{ disks: [{ id: 'rootfs', path: '/srv/d', readonly: false }] }, '"rootfs" is the rootfs\'s own id'],
    [{ disks: [{ id: 'A!', path: '/srv/d', readonly: false }] }, 'must be 1-32 of a-z 0-9 _ -'],
    [{ disks: [{ id: 'd', path: 'relative', readonly: false }] }, 'vm.disks[0].path'],
    [{ disks: [{ id: 'x', path: '/srv/d', readonly: false }], net: [{ id: 'x', tap: 'tap0', mac: '' }] }, 'used twice'],
    [{ net: [{ id: 'n', tap: 'a-name-far-too-long', mac: '' }] }, 'vm.net[0].tap'],
    [{ net: [{ id: 'n', tap: 'tap0', mac: '52:54:00:12:34' }] }, 'six hex bytes'],
    [{ net: [{ id: 'n', tap: 'tap0', mac: '01:54:00:12:34:56' }] }, 'multicast'],
    [{ net: [{ id: 'a', tap: 'tap0', mac: '' }, { id: 'b', tap: 'tap0', mac: '' }] }, 'one TAP device twice'],
    [{ vsock: { cid: 2 } }, 'vm.vsock.cid must be 3 or more'],
  ])('refuses %j: INVALID_ARGUMENT naming the field', (patch, fragment) => {
    expectThrowsVmprocError(() => validateVm(vm(patch as Partial<VmRequest>), 'boot'), 'invalid-argument', fragment);
  });

  it('in restore mode takes only the extra disks', () => {
    expect(validateVm({ ...BASE, vcpus: 0, memoryMib: 0, cmdline: '', disks: [{ id: 'data', path: '/srv/d', readonly: true }] }, 'restore')).toEqual({ disks: [{ id: 'data', path: '/srv/d', readonly: true }] });
    expectThrowsVmprocError(() => validateVm(BASE, 'restore'), 'invalid-argument', 'vm.vcpus, vm.memory_mib, vm.cmdline cannot be set in restore mode');
  });
});

describe('vmConfigBody', () => {
  it("names every file by its path in the sandbox dir, never the host's", () => {
    const spec = validateVm(vm({ maxVcpus: 2, maxMemoryMib: 512, initramfsPath: '/srv/i', rootfsReadonly: true, disks: [{ id: 'data', path: '/srv/d', readonly: false }], net: [{ id: 'net0', tap: 'tap0', mac: '52:54:00:12:34:56' }], vsock: { cid: 3 }, pvpanic: true }), 'boot');
    expect(vmConfigBody(spec as never, '/run/vmprocd/sandbox')).toEqual({
      cpus: { boot_vcpus: 1, max_vcpus: 2 },
      memory: { size: 256 * 1024 * 1024, hotplug_size: 256 * 1024 * 1024 },
      payload: { kernel: '/run/vmprocd/sandbox/vmlinux', cmdline: 'console=ttyS0', initramfs: '/run/vmprocd/sandbox/initramfs' },
      disks: [
        { path: '/run/vmprocd/sandbox/rootfs.ext4', readonly: true, id: 'rootfs' },
        { path: '/run/vmprocd/sandbox/disk-data', readonly: false, id: 'data' },
      ],
      net: [{ tap: 'tap0', id: 'net0', mac: '52:54:00:12:34:56' }],
      serial: { mode: 'Tty' },
      console: { mode: 'Off' },
      vsock: { cid: 3, socket: '/run/vmprocd/sandbox/vsock.sock' },
      pvpanic: true,
    });
  });

  it('turns the serial console off when asked, and leaves out what is not configured', () => {
    const body = vmConfigBody(validateVm(vm({ serial: 'off', cmdline: '' }), 'boot') as never, '/sb');
    expect(body).toEqual({ cpus: { boot_vcpus: 1, max_vcpus: 1 }, memory: { size: 256 * 1024 * 1024 }, payload: { kernel: '/sb/vmlinux' }, disks: [{ path: '/sb/rootfs.ext4', readonly: false, id: 'rootfs' }], serial: { mode: 'Off' }, console: { mode: 'Off' } });
  });
});
