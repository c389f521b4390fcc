/**
 * The JSON shapes of the CH endpoints this daemon uses, and their translation to camelCase values.
 * Decoders throw a TypeError naming the offending field; the client wraps it as a `protocol` VmmApiError.
 */

/** GET vmm.ping. `pid` is absent from older CH releases. */
export interface VmmPing {
  buildVersion: string;
  version: string;
  pid: number | undefined;
  features: string[];
}

export type MemoryRestoreMode = 'Copy' | 'OnDemand';

/** PUT vm.restore. Not validated here (e.g. OnDemand with prefault is CH's validation error, not ours). */
export interface RestoreConfig {
  /** `file://` URL of the snapshot directory. */
  sourceUrl: string;
  /** Omitted when undefined, so CH applies its default (Copy); case-sensitive on the wire. */
  memoryRestoreMode?: MemoryRestoreMode;
  /** Without it the restored VM stays Paused. */
  resume?: boolean;
  prefault?: boolean;
}

export const VM_STATES = ['Created', 'Running', 'Shutdown', 'Paused', 'BreakPoint'] as const;
export type VmState = (typeof VM_STATES)[number];

/** GET vm.info. `config` is CH's normalised VmConfig, read only where the daemon needs a field of it. */
export interface VmInfo {
  state: VmState;
  memoryActualSize: number;
  config: Record<string, unknown>;
  /** Present once the VM booted: devices by id, with their parent and PCI address. */
  deviceTree?: Record<string, { parent?: string; pci_bdf?: string }>;
  /** The response as it came. */
  raw: string;
}

/** The vm.restore request body; resume and prefault are always explicit so a request log shows them. */
export function toRestoreRequestBody(config: RestoreConfig): Record<string, unknown> {
  return {
    source_url: config.sourceUrl,
    ...(config.memoryRestoreMode === undefined ? {} : { memory_restore_mode: config.memoryRestoreMode }),
    resume: config.resume ?? false,
    prefault: config.prefault ?? false,
  };
}

export function decodePing(value: unknown): VmmPing {
  const ping = asObject(value, 'ping response');
  const pid = ping['pid'];
  const features = ping['features'];
  if (pid !== undefined && !Number.isSafeInteger(pid)) throw new TypeError(`"pid" is not an integer: ${JSON.stringify(pid)}`);
  if (features !== undefined && !isStringArray(features)) throw new TypeError('"features" is not an array of strings');
  return {
    buildVersion: requireString(ping, 'build_version'),
    version: requireString(ping, 'version'),
    pid: pid as number | undefined,
    features: features ?? [],
  };
}

export function decodeVmInfo(value: unknown, raw = ''): VmInfo {
  const info = asObject(value, 'vm.info response');
  const state = info['state'];
  if (!(VM_STATES as readonly unknown[]).includes(state)) throw new TypeError(`unknown VM state ${JSON.stringify(state)}`);
  const memoryActualSize = info['memory_actual_size'];
  if (typeof memoryActualSize !== 'number' || !Number.isFinite(memoryActualSize) || memoryActualSize < 0) {
    throw new TypeError(`"memory_actual_size" is not a size: ${JSON.stringify(memoryActualSize)}`);
  }
  const deviceTree = info['device_tree'];
  return {
    state: state as VmState,
    memoryActualSize,
    config: asObject(info['config'], '"config"'),
    ...(deviceTree !== undefined && deviceTree !== null ? { deviceTree: asObject(deviceTree, '"device_tree"') as VmInfo['deviceTree'] } : {}),
    raw,
  };
}

/**
 * GET vm.counters: `{device: {counter: u64}}`. The values are u64 (an unused latency minimum is
 * u64::MAX), beyond what a JSON number keeps exactly in JavaScript, so they are read as text.
 */
export function decodeCounters(text: string): Record<string, Record<string, bigint>> {
  // Every value in this body is an unsigned integer: quote them before JSON.parse rounds them.
  const value = JSON.parse(text.replace(/(:\s*)(\d+)(?=\s*[,}])/g, '$1"$2"')) as unknown;
  const devices = asObject(value, 'vm.counters response');
  const counters: Record<string, Record<string, bigint>> = {};
  for (const [device, values] of Object.entries(devices)) {
    counters[device] = {};
    for (const [name, count] of Object.entries(asObject(values, `counters of ${JSON.stringify(device)}`))) {
      if (typeof count !== 'string' || !/^\d+$/.test(count)) throw new TypeError(`counter ${device}.${name} is not an unsigned integer: ${JSON.stringify(count)}`);
      counters[device]![name] = BigInt(count);
    }
  }
  return counters;
}

function asObject(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TypeError(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

function requireString(object: Record<string, unknown>, field: string): string {
  const value = object[field];
  if (typeof value !== 'string') throw new TypeError(`"${field}" is missing or not a string`);
  return value;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((entry) => typeof entry === 'string');
}
