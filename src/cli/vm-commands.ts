import {
  AfterSnapshot,
  GetVmCountersResponseSchema,
  GetVmInfoResponseSchema,
  PauseVmResponseSchema,
  ResizeVmResponseSchema,
  ResumeVmResponseSchema,
  SerialMode,
  SnapshotVmResponseSchema,
  VmState,
  type VmInfo,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { VmProcessClient } from '../client/vm-process-client.js';
import { ExitCode, UsageError } from './exit-codes.js';
import { absolute } from './options.js';
import type { Output } from './output.js';
import { formatFields, formatTable } from './table.js';

/** `vmprocctl start`'s VM flags: with any of them, the daemon creates and boots a VM. */
export interface VmFlags {
  readonly vcpus?: string;
  readonly maxVcpus?: string;
  readonly memory?: string;
  readonly maxMemory?: string;
  readonly cmdline?: string;
  readonly initramfs?: string;
  readonly rootfsReadonly?: boolean;
  readonly disk?: string[];
  readonly net?: string[];
  readonly serial?: 'log' | 'off';
  readonly vsockCid?: string;
  readonly pvpanic?: boolean;
}

const VM_FLAG_KEYS = [
  'vcpus', 'maxVcpus', 'memory', 'maxMemory', 'cmdline', 'initramfs', 'rootfsReadonly', 'disk', 'net', 'serial', 'vsockCid', 'pvpanic',
] as const satisfies ReadonlyArray<keyof VmFlags>;

export const vmStateName = (state: VmState): string => (VmState[state] ?? String(state)).toLowerCase().replace(/_/g, '-');

/** The VmConfig of `vmprocctl start`, or undefined when no VM flag was given. */
export function vmConfigOf(flags: VmFlags, mode: 'boot' | 'restore') {
  // `flags` may carry every flag of `start`: only the VM's say there is a VM.
  const given = VM_FLAG_KEYS.map((key) => [key, flags[key]] as const).filter(([, value]) => value !== undefined && value !== false);
  if (given.length === 0) return undefined;
  const disks = (flags.disk ?? []).map((text) => {
    const { id, path, readonly } = keyValues('--disk', text, ['id', 'path'], ['readonly']);
    return { id: id!, path: absolute(path)!, readonly: readonly !== undefined };
  });
  if (mode === 'restore') {
    const others = given.filter(([key]) => key !== 'disk');
    if (others.length > 0) throw new UsageError('in restore mode the VM comes from the snapshot: only --disk (its extra disks) may be given');
    return { disks };
  }
  if (flags.vcpus === undefined || flags.memory === undefined) throw new UsageError('a VM needs --vcpus N and --memory MIB');
  return {
    vcpus: count('--vcpus', flags.vcpus),
    ...(flags.maxVcpus !== undefined ? { maxVcpus: count('--max-vcpus', flags.maxVcpus) } : {}),
    memoryMib: BigInt(count('--memory', flags.memory)),
    ...(flags.maxMemory !== undefined ? { maxMemoryMib: BigInt(count('--max-memory', flags.maxMemory)) } : {}),
    cmdline: flags.cmdline ?? '',
    initramfsPath: absolute(flags.initramfs) ?? '',
    rootfsReadonly: flags.rootfsReadonly ?? false,
    disks,
    net: (flags.net ?? []).map((text) => {
      const { id, tap, mac } = keyValues('--net', text, ['id', 'tap'], ['mac']);
      return { id: id!, tap: tap!, mac: mac ?? '' };
    }),
    serial: flags.serial === 'off' ? SerialMode.OFF : SerialMode.LOG,
    ...(flags.vsockCid !== undefined ? { vsock: { cid: count('--vsock-cid', flags.vsockCid) } } : {}),
    pvpanic: flags.pvpanic ?? false,
  };
}

export async function pauseCommand(client: VmProcessClient, out: Output, sandboxId: string): Promise<ExitCode> {
  const response = await client.pauseVm({ sandboxId });
  if (out.json) await out.message(PauseVmResponseSchema, response);
  else await out.write(`paused the VM of ${sandboxId}\n`);
  return ExitCode.OK;
}

export async function resumeCommand(client: VmProcessClient, out: Output, sandboxId: string): Promise<ExitCode> {
  const response = await client.resumeVm({ sandboxId });
  if (out.json) await out.message(ResumeVmResponseSchema, response);
  else await out.write(`resumed the VM of ${sandboxId}\n`);
  return ExitCode.OK;
}

const AFTER: Readonly<Record<string, AfterSnapshot>> = { resume: AfterSnapshot.RESUME, pause: AfterSnapshot.STAY_PAUSED, stop: AfterSnapshot.STOP };

export async function snapshotCommand(client: VmProcessClient, out: Output, sandboxId: string, destination: string, flags: { then: string }): Promise<ExitCode> {
  const destinationUrl = destination.startsWith('/') ? `file://${destination}` : destination;
  const response = await client.snapshotVm({ sandboxId, destinationUrl, afterSnapshot: AFTER[flags.then]! });
  if (out.json) await out.message(SnapshotVmResponseSchema, response);
  else {
    const then = flags.then === 'resume' ? 'the VM runs on' : flags.then === 'pause' ? 'the VM stays paused' : 'the VMM was stopped';
    await out.write(`snapshot of ${sandboxId} written to ${response.snapshotUrl}; ${then}\n`);
  }
  return ExitCode.OK;
}

export async function infoCommand(client: VmProcessClient, out: Output, sandboxId: string): Promise<ExitCode> {
  const response = await client.getVmInfo({ sandboxId });
  if (out.json) await out.message(GetVmInfoResponseSchema, response);
  else await out.write(vmDetails(response.vm!));
  return ExitCode.OK;
}

export async function countersCommand(client: VmProcessClient, out: Output, sandboxId: string): Promise<ExitCode> {
  const response = await client.getVmCounters({ sandboxId });
  if (out.json) {
    await out.message(GetVmCountersResponseSchema, response);
    return ExitCode.OK;
  }
  const rows = Object.entries(response.devices)
    .sort(([a], [b]) => a.localeCompare(b))
    .flatMap(([device, { counters }]) => Object.entries(counters).sort(([a], [b]) => a.localeCompare(b)).map(([name, value]) => [device, name, String(value)]));
  await out.write(formatTable(['DEVICE', 'COUNTER', 'VALUE'], rows));
  return ExitCode.OK;
}

export async function resizeCommand(client: VmProcessClient, out: Output, sandboxId: string, flags: { vcpus?: string; memory?: string; balloon?: string }): Promise<ExitCode> {
  if (flags.vcpus === undefined && flags.memory === undefined && flags.balloon === undefined) throw new UsageError('resize needs --vcpus, --memory or --balloon');
  const response = await client.resizeVm({
    sandboxId,
    ...(flags.vcpus !== undefined ? { vcpus: count('--vcpus', flags.vcpus) } : {}),
    ...(flags.memory !== undefined ? { memoryMib: BigInt(count('--memory', flags.memory)) } : {}),
    ...(flags.balloon !== undefined ? { balloonMib: BigInt(count('--balloon', flags.balloon, 0)) } : {}),
  });
  if (out.json) await out.message(ResizeVmResponseSchema, response);
  else await out.write(vmDetails(response.vm!));
  return ExitCode.OK;
}

function vmDetails(vm: VmInfo): string {
  const mib = (bytes: bigint) => `${bytes / 1048576n} MiB`;
  return formatFields([
    ['State', vmStateName(vm.state)],
    ['vCPUs', `${vm.vcpus} (at most ${vm.maxVcpus})`],
    ['Memory', `${mib(vm.memoryBytes)} (guest has ${mib(vm.memoryActualBytes)})`],
    ['Devices', vm.devices.length === 0 ? '-' : vm.devices.map((d) => `${d.id} (${d.kind}${d.pciBdf ? ` ${d.pciBdf}` : ''})`).join('\n')],
  ]);
}

/** `id=data,path=/srv/d.img,readonly`: the required keys, the optional ones, nothing else. */
function keyValues(flag: string, text: string, required: readonly string[], optional: readonly string[]): Record<string, string | undefined> {
  const values: Record<string, string | undefined> = {};
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const key = eq === -1 ? part : part.slice(0, eq);
    if (![...required, ...optional].includes(key)) throw new UsageError(`${flag} ${JSON.stringify(text)}: unknown key ${JSON.stringify(key)} (use ${[...required, ...optional].join(', ')})`);
    values[key] = eq === -1 ? '' : part.slice(eq + 1);
  }
  for (const key of required) if (!values[key]) throw new UsageError(`${flag} ${JSON.stringify(text)} needs ${key}=...`);
  return values;
}

function count(flag: string, text: string, min = 1): number {
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < min) throw new UsageError(`${flag} must be a whole number of at least ${min}, got ${JSON.stringify(text)}`);
  return value;
}
