import { chmod, chown, mkdir, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { ServerCredentials } from '@grpc/grpc-js';
import type { Logger } from '../logger.js';
import { logsDir } from '../host/run-layout.js';
import { sweepForgottenLogs } from '../logs/log-sweep.js';
import { DEFAULT_LOG_CHECK_INTERVAL_MS, DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, VmmLogs } from '../logs/vmm-logs.js';
import { DaemonMetrics } from '../metrics/daemon-metrics.js';
import { instrumentStore } from '../metrics/instrumented-store.js';
import { type MetricsServer, startMetricsServer } from '../metrics/metrics-server.js';
import { formatListenAddress, type ListenAddress } from '../rpc/listen-address.js';
import { resolveGroupId } from '../rpc/socket-group.js';
import { isLoopbackHost, loadServerCredentials } from '../rpc/transport-security.js';
import type { StateStore } from '../store/state-store.js';
import type { ExitExchange } from '../core/exit-exchange.js';
import type { ExitObserver, SupervisorObserver } from '../core/observer.js';
import type { Supervisor } from '../core/supervisor.js';
import type { DaemonConfig } from './config.js';

const LIVE_STATES = ['starting', 'running', 'stopping'] as const;

/**
 * What running the daemon on a host adds around the supervisor: VMM log rotation and reading,
 * Prometheus metrics, TLS credentials and unix socket ownership. startDaemon creates it first (so
 * bad TLS files or an unknown group fail before anything is taken), hands its observers to the
 * exchange, the store and the supervisor, and starts logs and metrics once recovery is done.
 */
export class DaemonOperations {
  readonly #config: DaemonConfig;
  readonly #logger: Logger;
  /** Set when metrics are served (`--metrics-listen`). */
  readonly metrics: DaemonMetrics | undefined;
  readonly tcpCredentials: ServerCredentials | undefined;
  readonly unixSocketGroup: number | undefined;
  #logs: VmmLogs | undefined;
  #metricsServer: MetricsServer | undefined;

  private constructor(config: DaemonConfig, logger: Logger, tcpCredentials: ServerCredentials | undefined, unixSocketGroup: number | undefined) {
    this.#config = config;
    this.#logger = logger;
    this.tcpCredentials = tcpCredentials;
    this.unixSocketGroup = unixSocketGroup;
    this.metrics = config.metricsListen ? new DaemonMetrics() : undefined;
  }

  /** Reads the TLS files and resolves the socket group; throws naming the flag when one is wrong. */
  static async prepare(config: DaemonConfig, logger: Logger): Promise<DaemonOperations> {
    const credentials = config.tls ? await loadServerCredentials(config.tls) : undefined;
    if (config.tls && !config.listen.some((address) => address.kind === 'tcp')) {
      logger.warn({}, '--tls-cert is set but no --listen address is TCP: TLS applies to TCP listeners only');
    }
    const exposed = config.listen.filter((address) => address.kind === 'tcp' && !isLoopbackHost(address.host));
    if (!config.tls && exposed.length > 0) {
      logger.warn(
        { listen: exposed.map(formatListenAddress) },
        'serving plaintext gRPC where the network can reach it (--insecure-listen): anyone who can connect can start and kill VMMs',
      );
    }
    const group = config.socketGroup !== undefined ? await resolveGroupId(config.socketGroup) : undefined;
    return new DaemonOperations(config, logger, credentials, group);
  }

  /** 0660 with a socket group, else 0600: only root (and the group) may talk to a root daemon. */
  get unixSocketMode(): number {
    return this.unixSocketGroup !== undefined ? 0o660 : 0o600;
  }

  /** For the exit exchange: counts exits and cut-off watchers. */
  get exitObserver(): ExitObserver | undefined {
    return this.metrics;
  }

  /** For the supervisor: a spawn starts the log size checks; start outcomes go to the metrics. */
  get supervisorObserver(): SupervisorObserver {
    const metrics = this.metrics;
    return {
      spawned: () => this.#logs?.rotator.wake(),
      ...(metrics ? { startFinished: (outcome, readySeconds) => metrics.startFinished(outcome, readySeconds) } : {}),
    };
  }

  /**
   * Creates the unix listening sockets' directories. With a socket group, a directory created
   * here is 0750 in that group (the process umask would make it root's alone), and an existing
   * one the group cannot enter is reported: the socket's mode alone does not let the group in.
   */
  async makeSocketDirectories(listen: readonly ListenAddress[]): Promise<void> {
    for (const address of listen) {
      if (address.kind !== 'unix') continue;
      const dir = posix.dirname(address.path);
      const created = await mkdir(dir, { recursive: true, mode: 0o755 });
      if (this.unixSocketGroup === undefined) continue;
      if (created !== undefined) {
        // Every directory mkdir created, from the first one down to the socket's.
        for (let path = dir; path.length >= created.length; path = posix.dirname(path)) {
          await chown(path, -1, this.unixSocketGroup);
          await chmod(path, 0o750);
        }
        continue;
      }
      const { mode, gid } = await stat(dir);
      if (!(mode & 0o001) && !(gid === this.unixSocketGroup && mode & 0o010)) {
        this.#logger.warn(
          { dir, socketGroup: this.#config.socketGroup },
          'the socket group cannot enter the directory of a listening socket: give the directory that group with mode 0750, or another directory',
        );
      }
    }
  }

  /** The store, timed when metrics are on. */
  instrumentStore(store: StateStore): StateStore {
    return this.metrics ? instrumentStore(store, this.metrics) : store;
  }

  /**
   * VMM logs over the supervisor's live processes; rotation checks start if any is live. Call
   * after recovery and before serving: logs of sandboxes no record names any more are removed.
   */
  async startLogs(supervisor: Supervisor, runDir: string): Promise<VmmLogs> {
    const known = new Set(supervisor.list().processes.map((process) => process.sandboxId));
    const removed = await sweepForgottenLogs(logsDir(runDir), known);
    if (removed > 0) this.#logger.info({ files: removed }, 'removed the logs of sandboxes no longer retained');
    const metrics = this.metrics;
    const logs = new VmmLogs({
      maxBytes: this.#config.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES,
      keep: this.#config.logKeep ?? DEFAULT_LOG_KEEP,
      checkIntervalMs: this.#config.logCheckIntervalMs ?? DEFAULT_LOG_CHECK_INTERVAL_MS,
      liveLogs: () => supervisor.list({ states: LIVE_STATES }).processes.map((process) => process.logPath),
      logger: this.#logger,
      ...(metrics ? { onRotated: () => metrics.logRotated(), onRotationFailed: () => metrics.logRotationFailed() } : {}),
    });
    this.#logs = logs;
    logs.rotator.wake();
    return logs;
  }

  get logs(): VmmLogs | undefined {
    return this.#logs;
  }

  /** Serves /metrics when `--metrics-listen` is set; resolves with the bound address. */
  async serveMetrics(supervisor: Supervisor, exchange: ExitExchange): Promise<ListenAddress | undefined> {
    const { metrics } = this;
    const listen = this.#config.metricsListen;
    if (!metrics || !listen) return undefined;
    const logs = this.#logs;
    metrics.bind({
      processStates: () => supervisor.list().processes.map((process) => process.state),
      exitWatchers: () => exchange.subscriberCount,
      exitSequence: () => exchange.latestSequence,
      eventWatchers: () => supervisor.events.subscriberCount,
      eventSequence: () => supervisor.events.latestSequence,
      logStreams: () => logs?.readCount ?? 0,
    });
    if (listen.kind === 'unix') await mkdir(posix.dirname(listen.path), { recursive: true, mode: 0o755 });
    this.#metricsServer = await startMetricsServer({
      listen,
      registry: metrics.registry,
      logger: this.#logger,
      unixSocketMode: this.unixSocketMode,
      ...(this.unixSocketGroup !== undefined ? { unixSocketGroup: this.unixSocketGroup } : {}),
    });
    return this.#metricsServer.address;
  }

  /** The bound metrics address (with its real port), once served. */
  get metricsAddress(): ListenAddress | undefined {
    return this.#metricsServer?.address;
  }

  /** Ends log streams with UNAVAILABLE and stops rotating (the daemon is stopping). */
  closeStreams(): void {
    this.#logs?.close();
  }

  /** Stops serving metrics. */
  async stop(): Promise<void> {
    this.closeStreams();
    await this.#metricsServer?.close();
    this.#metricsServer = undefined;
  }

  /** For the "serving" log line. */
  describe(): Record<string, unknown> {
    return {
      ...(this.#metricsServer ? { metrics: formatListenAddress(this.#metricsServer.address) } : {}),
      tls: this.tcpCredentials ? (this.#config.tls?.clientCaPath ? 'mutual' : 'server') : 'off',
    };
  }
}
