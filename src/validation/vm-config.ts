import type { DiskSpec, LaunchMode, NetSpec, RestoreVmSpec, VmRequest, VmSpec } from '../core/domain.js';
import { VmprocError } from '../errors.js';
import { validatePath } from './paths.js';

/** Cloud Hypervisor's own cap on vCPUs (x86_64, x2apic). */
export const MAX_VCPUS = 254;
export const MAX_MEMORY_MIB = 1024 * 1024;
export const MAX_CMDLINE_BYTES = 4096;
export const MAX_DISKS = 16;
export const MAX_NETS = 8;
/** Device ids: one file name each (`disk-<id>` in the sandbox dir), one id in Cloud Hypervisor's device tree. */
const DEVICE_ID = /^[a-z0-9_-]{1,32}$/;
/** IFNAMSIZ is 16 with the NUL. */
const TAP_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

const invalid = (message: string) => new VmprocError('invalid-argument', message);

/** VmConfig of a start: the whole VM in boot mode, only the snapshot's extra disks in restore mode. */
export function validateVm(vm: VmRequest, mode: LaunchMode): VmSpec | RestoreVmSpec {
  if (mode === 'restore') {
    const { disks, ...rest } = vm;
    const set = Object.entries(rest).filter(([, value]) => value !== undefined && value !== 0 && value !== '' && value !== false && !(Array.isArray(value) && value.length === 0));
    if (set.length > 0) {
      throw invalid(`vm.${set.map(([key]) => snake(key)).join(', vm.')} cannot be set in restore mode: the VM comes from the snapshot; only vm.disks (its extra disks' files) may be given`);
    }
    return { disks: validateDisks(disks, new Set()) };
  }
  const vcpus = integerIn('vm.vcpus', vm.vcpus, 1, MAX_VCPUS, 'is required');
  const maxVcpus = vm.maxVcpus === 0 ? vcpus : integerIn('vm.max_vcpus', vm.maxVcpus, vcpus, MAX_VCPUS, `must be at least vm.vcpus (${vcpus})`);
  const memoryMib = integerIn('vm.memory_mib', vm.memoryMib, 1, MAX_MEMORY_MIB, 'is required');
  const maxMemoryMib = vm.maxMemoryMib === 0 ? memoryMib : integerIn('vm.max_memory_mib', vm.maxMemoryMib, memoryMib, MAX_MEMORY_MIB, `must be at least vm.memory_mib (${memoryMib})`);
  if (Buffer.byteLength(vm.cmdline) > MAX_CMDLINE_BYTES) throw invalid(`vm.cmdline is ${Buffer.byteLength(vm.cmdline)} bytes, over ${MAX_CMDLINE_BYTES}`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(vm.cmdline)) throw invalid('vm.cmdline contains a control character (a NUL, newline or tab): the kernel reads one line of printable text');
  const ids = new Set<string>();
  const disks = validateDisks(vm.disks, ids);
  if (vm.net.length > MAX_NETS) throw invalid(`vm.net has ${vm.net.length} interfaces, at most ${MAX_NETS} are allowed`);
  const net: NetSpec[] = vm.net.map((nic, i) => {
    const field = `vm.net[${i}]`;
    const id = deviceId(`${field}.id`, nic.id, ids);
    if (!TAP_NAME.test(nic.tap)) throw invalid(`${field}.tap ${JSON.stringify(nic.tap)} must be a TAP device name: 1-15 of A-Za-z0-9 _ . -`);
    if (nic.mac !== '') {
      if (!MAC.test(nic.mac)) throw invalid(`${field}.mac ${JSON.stringify(nic.mac)} must be six hex bytes separated by colons, e.g. 52:54:00:12:34:56`);
      if (parseInt(nic.mac.slice(0, 2), 16) & 1) throw invalid(`${field}.mac ${nic.mac} is a multicast address; a NIC needs a unicast one (even first byte)`);
    }
    return { id, tap: nic.tap, ...(nic.mac !== '' ? { mac: nic.mac.toLowerCase() } : {}) };
  });
  if (new Set(net.map((nic) => nic.tap)).size !== net.length) throw invalid('vm.net names one TAP device twice');
  let vsock: { cid: number } | undefined;
  if (vm.vsock) vsock = { cid: integerIn('vm.vsock.cid', vm.vsock.cid, 3, 0xffff_fffe, 'must be 3 or more (0-2 are reserved)') };
  return {
    vcpus,
    maxVcpus,
    memoryMib,
    maxMemoryMib,
    cmdline: vm.cmdline,
    ...(vm.initramfsPath !== '' ? { initramfsPath: validatePath('vm.initramfs_path', vm.initramfsPath) } : {}),
    rootfsReadonly: vm.rootfsReadonly,
    disks,
    net,
    serial: vm.serial ?? 'log',
    ...(vsock ? { vsock } : {}),
    pvpanic: vm.pvpanic,
  };
}

function validateDisks(disks: VmRequest['disks'], ids: Set<string>): DiskSpec[] {
  if (disks.length > MAX_DISKS) throw invalid(`vm.disks has ${disks.length} disks, at most ${MAX_DISKS} are allowed`);
  return disks.map((disk, i) => ({
    id: deviceId(`vm.disks[${i}].id`, disk.id, ids),
    path: validatePath(`vm.disks[${i}].path`, disk.path),
    readonly: disk.readonly,
  }));
}

function deviceId(field: string, id: string, seen: Set<string>): string {
  if (!DEVICE_ID.test(id)) throw invalid(`${field} ${JSON.stringify(id)} must be 1-32 of a-z 0-9 _ -`);
  if (id === 'rootfs') throw invalid(`${field} "rootfs" is the rootfs's own id; choose another`);
  if (seen.has(id)) throw invalid(`${field} ${JSON.stringify(id)} is used twice: device ids are unique across disks and interfaces`);
  seen.add(id);
  return id;
}

function integerIn(field: string, value: number, min: number, max: number, below: string): number {
  if (!Number.isSafeInteger(value) || value < min) throw invalid(`${field} ${below}${value === 0 ? '' : ` (got ${value})`}: ${min} to ${max}`);
  if (value > max) throw invalid(`${field} ${value} is over the maximum of ${max}`);
  return value;
}

function snake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
