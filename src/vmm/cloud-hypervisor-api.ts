import type { VmInfo as DomainVmInfo, VmState } from '../core/domain.js';
import { isVmSpec } from '../core/domain.js';
import type { VmmApi } from '../core/ports.js';
import { SNAPSHOT_ALLOWANCE_MS } from '../api-defaults.js';
import { VmprocError } from '../errors.js';
import { ChClient } from './ch-client.js';
import { waitForVmmReady } from './socket-readiness.js';
import { vmConfigBody } from './vm-config-body.js';
import { isVmmApiError } from './vmm-api-error.js';
import { vmmFailure } from './vmm-failure.js';
import type { VmInfo } from './vmm-wire-format.js';

/**
 * The start's deadlines (ready timeout, stop, cancel) arrive as the AbortSignal; the client's own
 * timeouts are only a backstop far beyond any of them.
 */
const BACKSTOP_TIMEOUT_MS = 15 * 60_000;
/** A VM operation on a VMM that answers at all answers within milliseconds (pause 1.4 ms here). */
const VM_CALL_TIMEOUT_MS = 30_000;
/** A snapshot writes all of guest memory: about a second a GiB here, far slower on busy disks. */
const SNAPSHOT_TIMEOUT_MS = SNAPSHOT_ALLOWANCE_MS;
const MIB = 1024 * 1024;

const STATES: Readonly<Record<VmInfo['state'], VmState>> = {
  Created: 'created',
  Running: 'running',
  Paused: 'paused',
  Shutdown: 'shut-down',
  // Stopped at a debugger breakpoint (guest_debug builds): not running, as a paused VM.
  BreakPoint: 'paused',
};

/**
 * The VmmApi port over Cloud Hypervisor's REST API on its unix socket. Failures leave as domain
 * errors (vmm-failure.ts); an abort leaves as the signal's reason, which the core reads.
 */
export function cloudHypervisorApi(): VmmApi {
  const call = async <T>(signal: AbortSignal | undefined, action: string, work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw vmmFailure(error, action);
    }
  };
  const options = (timeoutMs: number, signal?: AbortSignal) => (signal ? { timeoutMs, signal } : { timeoutMs });
  return {
    waitReady: (socketPath, signal) =>
      call(signal, 'waiting for the VMM to answer', async () => {
        const ping = await waitForVmmReady(socketPath, { signal, timeoutMs: BACKSTOP_TIMEOUT_MS });
        return { version: ping.version };
      }),
    restore: (socketPath, restore, signal) =>
      call(signal, 'restoring the snapshot', () =>
        new ChClient(socketPath).restore(
          {
            sourceUrl: restore.sourceUrl,
            ...(restore.memoryRestoreMode ? { memoryRestoreMode: restore.memoryRestoreMode } : {}),
            resume: restore.resume,
            prefault: restore.prefault,
          },
          options(BACKSTOP_TIMEOUT_MS, signal),
        )),
    vmState: (socketPath, signal) =>
      call(signal, 'reading the VM state', async () => {
        try {
          return (await new ChClient(socketPath).info(options(BACKSTOP_TIMEOUT_MS, signal))).state;
        } catch (error) {
          // Cloud Hypervisor answers vm.info on a VMM without a VM with an error (500, or 404 in newer versions).
          if (isVmmApiError(error, 'http-status') && (error.status === 500 || error.status === 404)) return undefined;
          throw error;
        }
      }),
    createVm: (socketPath, spec, signal) =>
      call(signal, 'creating the VM', () => {
        if (!isVmSpec(spec.vm)) throw new VmprocError('internal', `sandbox ${spec.sandboxId} has no VM to create`);
        return new ChClient(socketPath).create(vmConfigBody(spec.vm, spec.sandboxDir), options(BACKSTOP_TIMEOUT_MS, signal));
      }),
    bootVm: (socketPath, signal) => call(signal, 'booting the VM', () => new ChClient(socketPath).action('vm.boot', options(BACKSTOP_TIMEOUT_MS, signal))),
    pauseVm: (socketPath) => call(undefined, 'pausing the VM', () => new ChClient(socketPath).action('vm.pause', options(VM_CALL_TIMEOUT_MS))),
    resumeVm: (socketPath) => call(undefined, 'resuming the VM', () => new ChClient(socketPath).action('vm.resume', options(VM_CALL_TIMEOUT_MS))),
    snapshotVm: (socketPath, destinationUrl) =>
      call(undefined, 'snapshotting the VM', () => new ChClient(socketPath).snapshot(destinationUrl, options(SNAPSHOT_TIMEOUT_MS))),
    vmInfo: (socketPath, signal) =>
      call(signal, 'reading the VM info', async () => toDomainInfo(await new ChClient(socketPath).info(options(VM_CALL_TIMEOUT_MS, signal)))),
    vmCounters: (socketPath) => call(undefined, 'reading the VM counters', () => new ChClient(socketPath).counters(options(VM_CALL_TIMEOUT_MS))),
    resizeVm: (socketPath, resize) =>
      call(undefined, 'resizing the VM', () =>
        new ChClient(socketPath).resize(
          {
            ...(resize.vcpus !== undefined ? { desired_vcpus: resize.vcpus } : {}),
            ...(resize.memoryMib !== undefined ? { desired_ram: resize.memoryMib * MIB } : {}),
            ...(resize.balloonMib !== undefined ? { desired_balloon: resize.balloonMib * MIB } : {}),
          },
          options(VM_CALL_TIMEOUT_MS),
        )),
  };
}

/** Which kind of device each VmConfig list holds. */
const DEVICE_LISTS: ReadonlyArray<readonly [string, string]> = [
  ['disks', 'disk'],
  ['net', 'net'],
  ['pmem', 'pmem'],
  ['fs', 'fs'],
  ['devices', 'device'],
  ['user_devices', 'device'],
  ['vdpa', 'device'],
];

function toDomainInfo(info: VmInfo): DomainVmInfo {
  const config = info.config;
  const cpus = (config['cpus'] ?? {}) as { boot_vcpus?: number; max_vcpus?: number };
  const memory = (config['memory'] ?? {}) as { size?: number };
  const pciOf = (id: string): string => {
    const node = info.deviceTree?.[id];
    const parent = node?.parent ? info.deviceTree?.[node.parent] : undefined;
    return node?.pci_bdf ?? parent?.pci_bdf ?? '';
  };
  const devices: Array<{ id: string; kind: string; pciBdf: string }> = [];
  for (const [list, kind] of DEVICE_LISTS) {
    for (const device of (Array.isArray(config[list]) ? config[list] : []) as Array<{ id?: string }>) {
      if (typeof device.id === 'string') devices.push({ id: device.id, kind, pciBdf: pciOf(device.id) });
    }
  }
  const vsock = config['vsock'] as { id?: string } | null | undefined;
  if (vsock && typeof vsock.id === 'string') devices.push({ id: vsock.id, kind: 'vsock', pciBdf: pciOf(vsock.id) });
  return {
    state: STATES[info.state],
    vcpus: cpus.boot_vcpus ?? 0,
    maxVcpus: cpus.max_vcpus ?? 0,
    memoryBytes: memory.size ?? 0,
    memoryActualBytes: info.memoryActualSize,
    devices,
    rawJson: info.raw,
  };
}
