import { parseArgs } from 'node:util';
import { VmprocError } from '../errors.js';
import { nativeBin } from '../package-paths.js';
import type { LaunchStrategy } from '../launch/launch-command.js';
import type { SyncMode } from '../store/state-store.js';
import { type ListenAddress, parseListenAddress } from '../rpc/listen-address.js';
import { validatePath } from '../validation/paths.js';
import { DEFAULT_LOG_STREAM_LIMITS, DEFAULT_WATCH_LIMITS, type StreamLimits } from '../rpc/stream-caps.js';
import { checkListenSecurity } from '../rpc/transport-security.js';
import { INSECURE_LISTEN, OPERATIONS_SETTINGS, OPERATIONS_USAGE, type OperationsSettings, parseOperationsSettings } from './operations-config.js';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/** The daemon's settings; the operations ones (logs, metrics, TLS) are in OperationsSettings. */
export interface DaemonConfig extends OperationsSettings {
  readonly listen: readonly ListenAddress[];
  readonly vmmBin: string;
  readonly reaperBin: string;
  /** How a VMM gets into its sandbox (src/launch/launch-command.ts). */
  readonly launcher: LaunchStrategy;
  readonly runDir: string;
  readonly stateDir: string;
  /** What the state journal fdatasyncs before acknowledging (see SyncMode). */
  readonly stateSync: SyncMode;
  readonly sandboxDir: string;
  /** Where a request's kernels, root file systems, disks and snapshots may be (resolved). */
  readonly imageRoots: readonly string[];
  /** Where a request's API sockets may be; the run dir when empty. */
  readonly socketRoots?: readonly string[];
  /** Where a request's sandbox dirs may be, besides the configured one. */
  readonly sandboxRoots?: readonly string[];
  /** Block devices as disks (refused otherwise). */
  readonly allowBlockDevices?: boolean;
  readonly netnsDir: string;
  readonly exitHistory: number;
  readonly eventHistory: number;
  readonly watchBuffer: number;
  /** Open WatchExits and StreamLogs streams, over the daemon and per connection; defaults when unset. */
  readonly streamLimits?: { readonly watches: StreamLimits; readonly logs: StreamLimits };
  readonly logLevel: LogLevel;
}

/** Each setting: its flag, the environment variable that stands in for it, and its default. */
const SETTINGS = {
  listen: { env: 'VMPROCD_LISTEN', multiple: true, fallback: 'unix:///run/vmprocd/vmprocd.sock' },
  'vmm-bin': { env: 'VMPROCD_VMM_BIN', fallback: undefined },
  'reaper-bin': { env: 'VMPROCD_REAPER_BIN', fallback: nativeBin('vmprocd-reaper') },
  launcher: { env: 'VMPROCD_LAUNCHER', fallback: 'native' },
  'run-dir': { env: 'VMPROCD_RUN_DIR', fallback: '/run/vmprocd' },
  'state-dir': { env: 'VMPROCD_STATE_DIR', fallback: '/var/lib/vmprocd' },
  'state-sync': { env: 'VMPROCD_STATE_SYNC', fallback: 'launches' },
  'sandbox-dir': { env: 'VMPROCD_SANDBOX_DIR', fallback: '/run/vmprocd/sandbox' },
  'image-root': { env: 'VMPROCD_IMAGE_ROOT', multiple: true, fallback: '/srv/vmprocd' },
  'socket-root': { env: 'VMPROCD_SOCKET_ROOT', multiple: true, fallback: undefined },
  'sandbox-root': { env: 'VMPROCD_SANDBOX_ROOT', multiple: true, fallback: undefined },
  'netns-dir': { env: 'VMPROCD_NETNS_DIR', fallback: '/var/run/netns' },
  'exit-history': { env: 'VMPROCD_EXIT_HISTORY', fallback: '10000' },
  'event-history': { env: 'VMPROCD_EVENT_HISTORY', fallback: '10000' },
  'watch-buffer': { env: 'VMPROCD_WATCH_BUFFER', fallback: '1024' },
  'max-watchers': { env: 'VMPROCD_MAX_WATCHERS', fallback: String(DEFAULT_WATCH_LIMITS.total) },
  'max-watchers-per-connection': { env: 'VMPROCD_MAX_WATCHERS_PER_CONNECTION', fallback: String(DEFAULT_WATCH_LIMITS.perConnection) },
  'max-log-streams': { env: 'VMPROCD_MAX_LOG_STREAMS', fallback: String(DEFAULT_LOG_STREAM_LIMITS.total) },
  'max-log-streams-per-connection': { env: 'VMPROCD_MAX_LOG_STREAMS_PER_CONNECTION', fallback: String(DEFAULT_LOG_STREAM_LIMITS.perConnection) },
  'log-level': { env: 'VMPROCD_LOG_LEVEL', fallback: 'info' },
  ...OPERATIONS_SETTINGS,
} as const;

type SettingName = keyof typeof SETTINGS;

export const USAGE = `usage: vmprocd --vmm-bin PATH [options]

Supervises Cloud Hypervisor processes and serves vmprocess.v1.VmProcessService over gRPC.
Every flag can also be set by the environment variable named beside it (the flag wins).

  --listen ADDR         unix:///path or host:port; repeatable            VMPROCD_LISTEN (comma-separated)
                        default unix:///run/vmprocd/vmprocd.sock (mode 0600)
  --vmm-bin PATH        the VMM to run, e.g. /usr/local/bin/cloud-hypervisor   VMPROCD_VMM_BIN (required)
  --run-dir DIR         default sockets, VMM logs, exit records; default /run/vmprocd   VMPROCD_RUN_DIR
  --state-dir DIR       durable process records and exit history (a journal); one daemon per
                        directory; default /var/lib/vmprocd             VMPROCD_STATE_DIR
  --state-sync MODE     what the journal fdatasyncs: launches (default: a VMM is never forgotten,
                        even by a host crash), always (every record), none; every mode survives
                        any daemon crash                                 VMPROCD_STATE_SYNC
  --sandbox-dir DIR     where each VMM sees its kernel and rootfs (a private tmpfs);
                        default /run/vmprocd/sandbox                     VMPROCD_SANDBOX_DIR

Confinement: every host path a request names is resolved and must lie under one of these.
  --image-root DIR      kernels, root file systems, disks, snapshots; repeatable; root's
                        alone (not group or other writable); default /srv/vmprocd
                                                                         VMPROCD_IMAGE_ROOT (comma-separated)
  --socket-root DIR     API sockets; repeatable; default the run dir     VMPROCD_SOCKET_ROOT
  --sandbox-root DIR    sandbox dirs other than --sandbox-dir; repeatable; default none
                                                                         VMPROCD_SANDBOX_ROOT
  --allow-block-devices a rootfs or disk may be a block device under an image root (refused
                        otherwise)                                       VMPROCD_ALLOW_BLOCK_DEVICES=1
  --exit-history N      exits kept for WatchExits replay; default 10000  VMPROCD_EXIT_HISTORY
  --event-history N     events kept for WatchEvents replay; default 10000  VMPROCD_EVENT_HISTORY
  --watch-buffer N      exits or events one watcher may lag before it is cut off; default 1024   VMPROCD_WATCH_BUFFER
  --max-watchers N      open WatchExits and WatchEvents streams, over the daemon; default ${DEFAULT_WATCH_LIMITS.total}   VMPROCD_MAX_WATCHERS
  --max-watchers-per-connection N
                        ... over one client connection; default ${DEFAULT_WATCH_LIMITS.perConnection}     VMPROCD_MAX_WATCHERS_PER_CONNECTION
  --max-log-streams N   open StreamLogs streams, over the daemon; default ${DEFAULT_LOG_STREAM_LIMITS.total}   VMPROCD_MAX_LOG_STREAMS
  --max-log-streams-per-connection N
                        ... over one client connection; default ${DEFAULT_LOG_STREAM_LIMITS.perConnection}      VMPROCD_MAX_LOG_STREAMS_PER_CONNECTION
  --log-level LEVEL     trace, debug, info, warn, error, fatal; default info   VMPROCD_LOG_LEVEL
  --launcher KIND       native (default): the sandbox is set up in the VMM's own process; script:
                        unshare -m -- bash -c <script> ... ip netns exec (same isolation, slower)
                                                                         VMPROCD_LAUNCHER
  --reaper-bin PATH     the per-VMM reaper; default the one built with this package   VMPROCD_REAPER_BIN
  --netns-dir DIR       where named network namespaces live; default /var/run/netns   VMPROCD_NETNS_DIR
  -h, --help            show this help
${OPERATIONS_USAGE}`;

export type ParsedCommandLine = { readonly help: true } | { readonly help: false; readonly config: DaemonConfig };

/** Reads flags, then environment, then defaults. Throws `invalid-argument` naming the setting. */
export function parseDaemonConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ParsedCommandLine {
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        ...Object.fromEntries(
          Object.entries(SETTINGS).map(([name, setting]) => [name, { type: 'string', multiple: 'multiple' in setting }]),
        ),
        help: { type: 'boolean', short: 'h' },
        [INSECURE_LISTEN.flag]: { type: 'boolean' },
        [ALLOW_BLOCK_DEVICES.flag]: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (cause) {
    throw new VmprocError('invalid-argument', `${(cause as Error).message}\n\n${USAGE}`, { cause });
  }
  if (values.help) return { help: true };

  const one = (name: SettingName): string | undefined => {
    const flag = values[name];
    if (typeof flag === 'string') return flag;
    const fromEnv = env[SETTINGS[name].env];
    return fromEnv !== undefined && fromEnv !== '' ? fromEnv : SETTINGS[name].fallback;
  };
  /** A repeatable setting: its flags, else its comma-separated environment variable, else its default. */
  const many = (name: 'listen' | 'image-root' | 'socket-root' | 'sandbox-root'): string[] => {
    const flags = values[name] as string[] | undefined;
    if (flags?.length) return flags;
    const fromEnv = env[SETTINGS[name].env];
    if (fromEnv) return fromEnv.split(',').map((s) => s.trim()).filter(Boolean);
    const fallback = SETTINGS[name].fallback;
    return fallback === undefined ? [] : [fallback];
  };
  const listenTexts = many('listen');

  if (listenTexts.length === 0) {
    throw new VmprocError('invalid-argument', `${SETTINGS.listen.env} names no address; give unix:///path or host:port (comma-separated)`);
  }
  const vmmBin = one('vmm-bin');
  if (!vmmBin) {
    throw new VmprocError('invalid-argument', 'the VMM binary is required: pass --vmm-bin /path/to/cloud-hypervisor (or set VMPROCD_VMM_BIN)');
  }
  const logLevel = one('log-level')!;
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal'].includes(logLevel)) {
    throw new VmprocError('invalid-argument', `--log-level (or VMPROCD_LOG_LEVEL) ${logLevel} is not one of trace, debug, info, warn, error, fatal`);
  }
  const launcher = one('launcher')!;
  if (launcher !== 'native' && launcher !== 'script') {
    throw new VmprocError('invalid-argument', `--launcher (or VMPROCD_LAUNCHER) ${launcher} is not one of native, script`);
  }
  const stateSync = one('state-sync')!;
  if (stateSync !== 'always' && stateSync !== 'launches' && stateSync !== 'none') {
    throw new VmprocError('invalid-argument', `--state-sync (or VMPROCD_STATE_SYNC) ${stateSync} is not one of launches, always, none`);
  }
  const operations = parseOperationsSettings(one, values[INSECURE_LISTEN.flag] === true, env);
  const runDir = validatePath('--run-dir', one('run-dir')!);
  const imageRoots = many('image-root').map((dir) => validatePath('--image-root', dir));
  if (imageRoots.length === 0) throw new VmprocError('invalid-argument', `${SETTINGS['image-root'].env} names no directory; give one or more absolute paths (comma-separated)`);
  const allowBlockDevices = values[ALLOW_BLOCK_DEVICES.flag] === true || booleanEnv(env, ALLOW_BLOCK_DEVICES.env);
  const listen = listenTexts.map(parseListenAddress);
  checkListenSecurity(listen, operations);
  return {
    help: false,
    config: {
      listen,
      vmmBin: validatePath('--vmm-bin', vmmBin),
      reaperBin: validatePath('--reaper-bin', one('reaper-bin')!),
      launcher,
      runDir,
      stateDir: validatePath('--state-dir', one('state-dir')!),
      stateSync,
      sandboxDir: validatePath('--sandbox-dir', one('sandbox-dir')!),
      imageRoots,
      socketRoots: many('socket-root').map((dir) => validatePath('--socket-root', dir)),
      sandboxRoots: many('sandbox-root').map((dir) => validatePath('--sandbox-root', dir)),
      allowBlockDevices,
      netnsDir: validatePath('--netns-dir', one('netns-dir')!),
      exitHistory: positiveInteger('--exit-history', one('exit-history')!),
      eventHistory: positiveInteger('--event-history', one('event-history')!),
      watchBuffer: positiveInteger('--watch-buffer', one('watch-buffer')!),
      streamLimits: {
        watches: { total: positiveInteger('--max-watchers', one('max-watchers')!), perConnection: positiveInteger('--max-watchers-per-connection', one('max-watchers-per-connection')!) },
        logs: { total: positiveInteger('--max-log-streams', one('max-log-streams')!), perConnection: positiveInteger('--max-log-streams-per-connection', one('max-log-streams-per-connection')!) },
      },
      logLevel: logLevel as LogLevel,
      ...operations,
    },
  };
}

/** A flag without a value, set through its environment variable: 1/true/yes or 0/false/no. */
const ALLOW_BLOCK_DEVICES = { flag: 'allow-block-devices', env: 'VMPROCD_ALLOW_BLOCK_DEVICES' } as const;

function booleanEnv(env: NodeJS.ProcessEnv, name: string): boolean {
  const value = env[name]?.trim().toLowerCase();
  if (value === undefined || value === '' || value === '0' || value === 'false' || value === 'no') return false;
  if (value === '1' || value === 'true' || value === 'yes') return true;
  throw new VmprocError('invalid-argument', `${name} must be 1, true, yes or 0, false, no; got ${JSON.stringify(env[name])}`);
}

function positiveInteger(flag: string, text: string): number {
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < 1) throw new VmprocError('invalid-argument', `${flag} must be a positive integer, got ${JSON.stringify(text)}`);
  return value;
}
