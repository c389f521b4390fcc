import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { EventKind, MemoryRestoreMode, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { tlsCredentials } from '../client/tls.js';
import type { VmProcessClientOptions } from '../client/vm-process-client.js';
import { parseDuration } from './durations.js';
import { UsageError } from './exit-codes.js';

export const DEFAULT_ADDRESS = 'unix:///run/vmprocd/vmprocd.sock';

/** The options every command takes (defined on the program, accepted before or after the command). */
export interface GlobalOptions {
  readonly address: string;
  readonly timeout?: string;
  readonly json?: boolean;
  readonly tlsCa?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly tlsServerName?: string;
}

/** A bare socket path is taken as `unix://PATH`; anything else is a gRPC target as is. */
export function normaliseAddress(address: string): string {
  return address.startsWith('/') ? `unix://${address}` : address;
}

/** Client options from the global flags; files are read here, so a bad path is a usage error. */
export function clientOptions(globals: GlobalOptions): VmProcessClientOptions {
  const options: { -readonly [K in keyof VmProcessClientOptions]: VmProcessClientOptions[K] } = {};
  if (globals.timeout !== undefined) options.defaultTimeoutMs = parseDuration('--timeout', globals.timeout);
  const tlsAsked = globals.tlsCa !== undefined || globals.tlsCert !== undefined || globals.tlsKey !== undefined;
  if (tlsAsked) {
    if (globals.tlsCa === undefined) throw new UsageError('--tls-cert and --tls-key need --tls-ca (the CA that signed the daemon\'s certificate)');
    if ((globals.tlsCert === undefined) !== (globals.tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
    options.credentials = tlsCredentials({
      ca: readFlagFile('--tls-ca', globals.tlsCa),
      ...(globals.tlsCert !== undefined ? { cert: readFlagFile('--tls-cert', globals.tlsCert) } : {}),
      ...(globals.tlsKey !== undefined ? { key: readFlagFile('--tls-key', globals.tlsKey) } : {}),
    });
  } else if (globals.tlsServerName !== undefined) {
    throw new UsageError('--tls-server-name needs --tls-ca');
  }
  if (globals.tlsServerName !== undefined) options.serverName = globals.tlsServerName;
  return options;
}

function readFlagFile(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new UsageError(`cannot read ${flag} ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

/** commander collector for repeatable flags. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** `--label k=v` (repeatable) as a map; a key given twice is a mistake, not an override. */
export function parseLabels(pairs: readonly string[] = []): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--label ${JSON.stringify(pair)} must be KEY=VALUE, e.g. --label team=a`);
    const key = pair.slice(0, eq);
    if (key in labels) throw new UsageError(`--label ${key} is given twice`);
    labels[key] = pair.slice(eq + 1);
  }
  return labels;
}

const STATES: Record<string, ProcessState> = {
  starting: ProcessState.STARTING,
  running: ProcessState.RUNNING,
  stopping: ProcessState.STOPPING,
  exited: ProcessState.EXITED,
};

/** `--state running` (repeatable, or comma-separated). */
export function parseStates(values: readonly string[] = []): ProcessState[] {
  return values.flatMap((value) => value.split(',')).map((name) => {
    const state = STATES[name.trim().toLowerCase().replace(/^process_state_/, '')];
    if (state === undefined) throw new UsageError(`--state ${JSON.stringify(name)} is not a state; use ${Object.keys(STATES).join(', ')}`);
    return state;
  });
}

export function parseRestoreMode(value: string | undefined): MemoryRestoreMode {
  switch (value?.toLowerCase()) {
    case undefined:
      return MemoryRestoreMode.UNSPECIFIED;
    case 'copy':
      return MemoryRestoreMode.COPY;
    case 'on-demand':
    case 'ondemand':
      return MemoryRestoreMode.ON_DEMAND;
    default:
      throw new UsageError(`--restore-mode ${JSON.stringify(value)} is not a restore mode; use copy or on-demand`);
  }
}

/** `--after 42`: a sequence number. */
export function parseSequence(value: string): bigint {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('must be a sequence number (0 or more), e.g. the exitSequence or eventSequence of vmprocctl list --json');
  return BigInt(value);
}

/** What `events --kind` takes: the EventKind names a watcher may filter on, lower case. */
export const EVENT_KIND_NAMES = Object.entries(EventKind)
  .filter(([name, value]) => typeof value === 'number' && name !== 'UNSPECIFIED' && name !== 'PROGRESS')
  .map(([name]) => name.toLowerCase());

/** `--kind paused --kind guest_panic`, collected. */
export function collectEventKind(value: string, previous: EventKind[] = []): EventKind[] {
  const name = value.toUpperCase().replace(/-/g, '_');
  if (!EVENT_KIND_NAMES.includes(name.toLowerCase())) throw new InvalidArgumentError(`is not an event kind; use one of ${EVENT_KIND_NAMES.join(', ')}`);
  return [...previous, EventKind[name as keyof typeof EventKind]];
}

/** `--tail 100`. */
export function parseCount(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 2 ** 31 - 1) throw new InvalidArgumentError('must be a number of lines (0 or more)');
  return Number(value);
}

/** Paths go to the daemon as absolute paths (it refuses relative ones); resolve them here as a shell user expects. */
export const absolute = (path: string | undefined): string | undefined => (path === undefined ? undefined : resolve(path));
