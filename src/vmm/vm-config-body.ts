import type { VmSpec } from '../core/domain.js';
import { inSandbox, SANDBOX_NAMES } from '../core/sandbox-files.js';

const MIB = 1024 * 1024;

/**
 * The VmConfig Cloud Hypervisor's vm.create takes, for a VM whose files are linked into
 * `sandboxDir` under their fixed names (core/sandbox-files.ts): every path it names is a path in
 * the sandbox, never the host path, so the snapshot's config.json restores in any sandbox.
 */
export function vmConfigBody(vm: VmSpec, sandboxDir: string): Record<string, unknown> {
  const at = (name: string) => inSandbox({ sandboxDir }, name);
  const hotplugMib = vm.maxMemoryMib - vm.memoryMib;
  return {
    cpus: { boot_vcpus: vm.vcpus, max_vcpus: vm.maxVcpus },
    memory: { size: vm.memoryMib * MIB, ...(hotplugMib > 0 ? { hotplug_size: hotplugMib * MIB } : {}) },
    payload: {
      kernel: at(SANDBOX_NAMES.kernel),
      ...(vm.cmdline !== '' ? { cmdline: vm.cmdline } : {}),
      ...(vm.initramfsPath ? { initramfs: at(SANDBOX_NAMES.initramfs) } : {}),
    },
    disks: [
      { path: at(SANDBOX_NAMES.rootfs), readonly: vm.rootfsReadonly, id: 'rootfs' },
      ...vm.disks.map((disk) => ({ path: at(SANDBOX_NAMES.disk(disk.id)), readonly: disk.readonly, id: disk.id })),
    ],
    ...(vm.net.length > 0 ? { net: vm.net.map((nic) => ({ tap: nic.tap, id: nic.id, ...(nic.mac ? { mac: nic.mac } : {}) })) } : {}),
    // Tty: the guest's serial console on the VMM's stdout, which is its log (StreamLogs).
    serial: { mode: vm.serial === 'log' ? 'Tty' : 'Off' },
    console: { mode: 'Off' },
    ...(vm.vsock ? { vsock: { cid: vm.vsock.cid, socket: at(SANDBOX_NAMES.vsock) } } : {}),
    ...(vm.pvpanic ? { pvpanic: true } : {}),
  };
}
