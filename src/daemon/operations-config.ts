import { VmprocError } from '../errors.js';
import { type ListenAddress, parseListenAddress } from '../rpc/listen-address.js';
import type { TlsFiles } from '../rpc/transport-security.js';
import { validatePath } from '../validation/paths.js';
import { DEFAULT_LOG_CHECK_INTERVAL_MS, DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES } from '../logs/vmm-logs.js';

/**
 * Settings for running the daemon on a host: VMM log caps, the metrics endpoint, transport
 * security. Optional in DaemonConfig, so an in-process daemon (tests, benchmarks) need not name
 * them; parseDaemonConfig always fills them in.
 */
export interface OperationsSettings {
  /** A live VMM's log larger than this is rotated (copy-truncate). Default 16 MiB. */
  readonly logMaxBytes?: number;
  /** Rotated copies kept per log (`<log>.1` .. `<log>.N`). Default 1. */
  readonly logKeep?: number;
  /** How often live VMMs' log sizes are checked. Default 15 s. */
  readonly logCheckIntervalMs?: number;
  /** Where to serve Prometheus metrics (`/metrics`); none when unset. */
  readonly metricsListen?: ListenAddress;
  /** TLS on the TCP gRPC listeners; mutual TLS when it has a client CA. */
  readonly tls?: TlsFiles;
  /** Allow plaintext gRPC on TCP addresses the network can reach. */
  readonly insecureListen?: boolean;
  /** Unix sockets (gRPC and metrics) get this group and mode 0660, instead of mode 0600. */
  readonly socketGroup?: string;
}

/** Flag name, environment variable and default of each setting, merged into config.ts's table. */
export const OPERATIONS_SETTINGS = {
  'log-max-bytes': { env: 'VMPROCD_LOG_MAX_BYTES', fallback: '16MiB' },
  'log-keep': { env: 'VMPROCD_LOG_KEEP', fallback: String(DEFAULT_LOG_KEEP) },
  'log-check-interval': { env: 'VMPROCD_LOG_CHECK_INTERVAL', fallback: String(DEFAULT_LOG_CHECK_INTERVAL_MS / 1000) },
  'metrics-listen': { env: 'VMPROCD_METRICS_LISTEN', fallback: undefined },
  'tls-cert': { env: 'VMPROCD_TLS_CERT', fallback: undefined },
  'tls-key': { env: 'VMPROCD_TLS_KEY', fallback: undefined },
  'tls-client-ca': { env: 'VMPROCD_TLS_CLIENT_CA', fallback: undefined },
  'socket-group': { env: 'VMPROCD_SOCKET_GROUP', fallback: undefined },
} as const;

/** A flag without a value; its environment variable takes 1/true/yes or 0/false/no. */
export const INSECURE_LISTEN = { flag: 'insecure-listen', env: 'VMPROCD_INSECURE_LISTEN' } as const;

export const OPERATIONS_USAGE = `
VMM logs (<run-dir>/logs/<sandbox_id>.log, read remotely with StreamLogs):
  --log-max-bytes SIZE  rotate a live VMM's log past this size (bytes, or with KiB, MiB, GiB);
                        default 16MiB                                    VMPROCD_LOG_MAX_BYTES
  --log-keep N          rotated copies kept (<log>.1 .. <log>.N); default 1   VMPROCD_LOG_KEEP
  --log-check-interval SECONDS
                        how often live logs' sizes are checked; default 15   VMPROCD_LOG_CHECK_INTERVAL

Metrics:
  --metrics-listen ADDR serve Prometheus metrics at /metrics on host:port or unix:///path
                        (plain HTTP; no metrics endpoint unless given)   VMPROCD_METRICS_LISTEN

Transport security (TCP listeners; unix sockets rely on their file mode):
  --tls-cert PATH       PEM certificate chain served on TCP listeners    VMPROCD_TLS_CERT
  --tls-key PATH        its PEM private key                               VMPROCD_TLS_KEY
  --tls-client-ca PATH  PEM CA bundle: require client certificates signed by it (mutual TLS)
                                                                         VMPROCD_TLS_CLIENT_CA
  --insecure-listen     allow plaintext gRPC on a TCP address other than loopback (refused
                        otherwise)                                       VMPROCD_INSECURE_LISTEN=1
  --socket-group GROUP  unix sockets get this group and mode 0660 (default: mode 0600, root only)
                                                                         VMPROCD_SOCKET_GROUP
`;

/** Reads the operations settings through config.ts's `setting` lookup (flag, then environment, then default). */
export function parseOperationsSettings(
  setting: (name: keyof typeof OPERATIONS_SETTINGS) => string | undefined,
  insecureFlag: boolean,
  env: NodeJS.ProcessEnv,
): Required<Omit<OperationsSettings, 'metricsListen' | 'tls' | 'socketGroup'>> & OperationsSettings {
  const certPath = setting('tls-cert');
  const keyPath = setting('tls-key');
  const clientCaPath = setting('tls-client-ca');
  if ((certPath === undefined) !== (keyPath === undefined)) {
    throw new VmprocError('invalid-argument', '--tls-cert and --tls-key go together: give both (or neither)');
  }
  if (clientCaPath !== undefined && certPath === undefined) {
    throw new VmprocError('invalid-argument', '--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first');
  }
  const metricsListen = setting('metrics-listen');
  const socketGroup = setting('socket-group');
  if (socketGroup !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(socketGroup)) {
    throw new VmprocError('invalid-argument', `--socket-group ${JSON.stringify(socketGroup)} is not a group name or number`);
  }
  const label = (name: keyof typeof OPERATIONS_SETTINGS) => `--${name} (or ${OPERATIONS_SETTINGS[name].env})`;
  return {
    logMaxBytes: byteSize(label('log-max-bytes'), setting('log-max-bytes') ?? String(DEFAULT_LOG_MAX_BYTES)),
    logKeep: boundedInteger(label('log-keep'), setting('log-keep') ?? String(DEFAULT_LOG_KEEP), 1, 100),
    logCheckIntervalMs: seconds(label('log-check-interval'), setting('log-check-interval') ?? String(DEFAULT_LOG_CHECK_INTERVAL_MS / 1000)),
    ...(metricsListen !== undefined ? { metricsListen: parseListenAddress(metricsListen) } : {}),
    ...(certPath !== undefined && keyPath !== undefined
      ? {
          tls: {
            certPath: validatePath('--tls-cert', certPath),
            keyPath: validatePath('--tls-key', keyPath),
            ...(clientCaPath !== undefined ? { clientCaPath: validatePath('--tls-client-ca', clientCaPath) } : {}),
          },
        }
      : {}),
    insecureListen: insecureFlag || yes(INSECURE_LISTEN.env, env[INSECURE_LISTEN.env]),
    ...(socketGroup !== undefined ? { socketGroup } : {}),
  };
}

const UNITS: Readonly<Record<string, number>> = { '': 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** `16777216`, `512KiB`, `16MiB`, `1GiB`: at least 4 KiB. */
export function byteSize(flag: string, text: string): number {
  const match = /^(\d+)(KiB|MiB|GiB)?$/.exec(text.trim());
  const value = match ? Number(match[1]) * UNITS[match[2] ?? '']! : NaN;
  if (!Number.isSafeInteger(value) || value < 4096) {
    throw new VmprocError('invalid-argument', `${flag} must be a size of at least 4KiB, in bytes or with KiB, MiB or GiB (e.g. 16MiB), got ${JSON.stringify(text)}`);
  }
  return value;
}

/** Decimal seconds, at least 0.01, as milliseconds. */
function seconds(flag: string, text: string): number {
  const value = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
  if (!(value >= 0.01) || value > 86_400) throw new VmprocError('invalid-argument', `${flag} must be a number of seconds between 0.01 and 86400, got ${JSON.stringify(text)}`);
  return Math.round(value * 1000);
}

function boundedInteger(flag: string, text: string, min: number, max: number): number {
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(value >= min && value <= max)) throw new VmprocError('invalid-argument', `${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return value;
}

function yes(name: string, text: string | undefined): boolean {
  if (text === undefined || text === '') return false;
  const lower = text.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(lower)) return true;
  if (['0', 'false', 'no', 'off'].includes(lower)) return false;
  throw new VmprocError('invalid-argument', `${name} must be 1/true/yes or 0/false/no, got ${JSON.stringify(text)}`);
}
