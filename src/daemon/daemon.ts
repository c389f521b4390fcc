import { access, constants, mkdir } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import { pino } from 'pino';
import { isVmprocError, VmprocError } from '../errors.js';
import type { Logger } from '../logger.js';
import { formatListenAddress } from '../rpc/listen-address.js';
import { type RpcServer, startRpcServer } from '../rpc/server.js';
import { StreamCaps } from '../rpc/stream-caps.js';
import { sequenceFloorPath } from '../host/run-layout.js';
import { readBootId } from '../launch/proc-stat.js';
import { lockStateDir } from '../store/state-lock.js';
import { JournalStateStore } from '../store/state-store.js';
import { ExitExchange } from '../core/exit-exchange.js';
import { EventExchange } from '../core/event-exchange.js';
import { EventFloors } from '../core/event-floors.js';
import type { Supervisor } from '../core/supervisor.js';
import type { DaemonConfig } from './config.js';
import { createHostSupervisor } from './host-supervisor.js';
import { PathPolicy } from '../host/path-policy.js';
import { exitsDir, logsDir } from '../host/run-layout.js';
import { DaemonOperations } from './operations.js';

/** How long calls in flight may take to finish when the daemon is asked to stop. */
const SHUTDOWN_GRACE_MS = 5_000;

/**
 * How far exit numbering jumps after the host rebooted. Exits are not fdatasync'd one by one (see
 * SyncMode), so a host crash may take the last ones published with it; numbering on from the
 * journal would hand their sequences to new exits, and a watcher holding one would skip them.
 * After the jump every new exit sorts after anything a watcher can have seen.
 */
export const SEQUENCE_GAP_AFTER_REBOOT = 1_000_000;

export interface RunningDaemon {
  readonly config: DaemonConfig;
  readonly server: RpcServer;
  readonly supervisor: Supervisor;
  readonly logger: Logger;
  /** VMM logs, metrics, TLS (src/daemon/operations.ts). */
  readonly operations: DaemonOperations;
  /** Stops serving (streams end with UNAVAILABLE) and abandons unready starts; VMMs keep running. */
  stop(): Promise<void>;
  /**
   * Settles once the daemon has stopped, whoever stopped it: resolves after stop(), rejects with
   * the reason when it stopped itself (it lost the state directory's lock) or could not stop
   * cleanly. The process that runs it decides what to do then (src/daemon/main.ts exits non-zero).
   */
  readonly stopped: Promise<void>;
}

export function createLogger(config: Pick<DaemonConfig, 'logLevel'>): Logger & pino.Logger {
  return pino({ level: config.logLevel, base: { service: 'vmprocd' }, timestamp: pino.stdTimeFunctions.isoTime });
}

/**
 * Checks the host, takes the state directory, re-adopts what a previous daemon left running,
 * and serves. Nothing is served before recovery has settled every record. On failure, whatever
 * was set up is taken down again, in reverse order.
 */
export async function startDaemon(config: DaemonConfig, logger: Logger): Promise<RunningDaemon> {
  await checkHost(config);
  const operations = await DaemonOperations.prepare(config, logger);
  const teardown: Array<() => Promise<void>> = [];
  const undo = async () => {
    for (const step of teardown.reverse()) await step().catch(() => undefined);
  };
  try {
    const lock = await lockStateDir(config.stateDir, config.reaperBin);
    teardown.push(() => lock.release());
    // Lost before serving: the start fails (below) with this instead of going on unlocked.
    let lostBeforeServing: VmprocError | undefined;
    lock.onLost((error) => {
      lostBeforeServing ??= error;
    });
    const { store, state } = await JournalStateStore.open({
      stateDir: config.stateDir,
      historyLimit: config.exitHistory,
      exitedRecordLimit: config.exitHistory,
      eventHistoryLimit: config.eventHistory,
      sync: config.stateSync,
      // In the run dir: another file system than the state dir in production (a tmpfs), so it
      // can be written when the state disk is full.
      sequenceFloorPath: sequenceFloorPath(config.runDir),
    });
    teardown.push(() => store.close());
    if (state.droppedTailBytes > 0) {
      logger.warn({ stateDir: config.stateDir, bytes: state.droppedTailBytes }, 'dropped a torn final record from the state journal (a crash mid-write)');
    }
    const bootId = await readBootId();
    const rebooted = state.lastBootId !== undefined && state.lastBootId !== bootId;
    if (rebooted && config.stateSync !== 'always') {
      logger.warn({ lastSequence: state.lastSequence, gap: SEQUENCE_GAP_AFTER_REBOOT }, 'the host rebooted since the last run: exit sequences jump ahead');
    }
    if (state.sequenceFloor !== undefined) {
      logger.warn(
        { sequenceFloor: state.sequenceFloor, floorFile: sequenceFloorPath(config.runDir) },
        'the last daemon published exits it could not journal (state disk full): numbering goes on after them, and those exits are published again',
      );
    }
    // Not recording this boot costs at most a needless jump of sequences at the next start; a
    // daemon that will not start on a full state disk leaves every VMM unsupervised.
    await store.booted(bootId).catch((error: unknown) => {
      if (!isVmprocError(error, 'resource-exhausted')) throw error;
      logger.error({ err: error }, `${error.message}; serving anyway`);
    });
    const exchange = new ExitExchange({
      historyLimit: config.exitHistory,
      subscriberBufferLimit: config.watchBuffer,
      initialSequence: state.lastSequence + (rebooted && config.stateSync !== 'always' ? SEQUENCE_GAP_AFTER_REBOOT : 0),
      initialHistory: state.exits,
      observer: operations.exitObserver,
    });
    const events = new EventExchange({
      historyLimit: config.eventHistory,
      subscriberBufferLimit: config.watchBuffer,
      initialSequence: state.lastEventSequence + (rebooted && config.stateSync !== 'always' ? SEQUENCE_GAP_AFTER_REBOOT : 0),
      initialHistory: state.events,
      initialFloors: EventFloors.fromJson(state.eventFloors),
      onWatcherCutOff: () => operations.exitObserver?.watcherCutOff?.(),
    });
    const paths = await pathPolicyFor(config);
    const { supervisor } = createHostSupervisor({
      paths,
      defaults: { runDir: config.runDir, sandboxDir: config.sandboxDir, vmmBin: config.vmmBin, netnsDir: config.netnsDir },
      reaperBin: config.reaperBin,
      launchStrategy: config.launcher,
      bootId,
      exchange,
      events,
      exitedRecordLimit: config.exitHistory,
      store: operations.instrumentStore(store),
      logger,
      observer: operations.supervisorObserver,
    });
    await supervisor.prepare();
    await supervisor.recover(state);
    teardown.push(() => supervisor.shutdown());
    const logs = await operations.startLogs(supervisor, config.runDir);
    teardown.push(() => operations.stop());
    await operations.makeSocketDirectories(config.listen);
    const server = await startRpcServer({
      supervisor,
      logger,
      listen: config.listen,
      logs,
      tcpCredentials: operations.tcpCredentials,
      unixSocketMode: operations.unixSocketMode,
      unixSocketGroup: operations.unixSocketGroup,
      ...(config.streamLimits
        ? { streamCaps: { watches: new StreamCaps('WatchExits and WatchEvents streams', config.streamLimits.watches), logs: new StreamCaps('StreamLogs streams', config.streamLimits.logs) } }
        : {}),
    });
    teardown.push(() => server.shutdown(SHUTDOWN_GRACE_MS));
    await operations.serveMetrics(supervisor, exchange);
    if (lostBeforeServing) throw lostBeforeServing;
    logger.info(
      {
        listen: server.addresses.map(formatListenAddress),
        vmmBin: config.vmmBin,
        runDir: config.runDir,
        stateDir: config.stateDir,
        sandboxDir: config.sandboxDir,
        readopted: supervisor.list({ states: ['starting', 'running', 'stopping'] }).processes.length,
        exitSequence: exchange.latestSequence,
        eventSequence: events.latestSequence,
        ...operations.describe(),
      },
      'vmprocd serving',
    );

    let stopping: Promise<void> | undefined;
    let fatal: VmprocError | undefined;
    let settleStopped!: { resolve: () => void; reject: (error: unknown) => void };
    const stopped = new Promise<void>((resolve, reject) => {
      settleStopped = { resolve, reject };
    });
    // Only for whoever asks: a test's in-process daemon need not listen.
    stopped.catch(() => undefined);
    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        logger.info({}, 'vmprocd shutting down; VMMs keep running');
        // Streams end with UNAVAILABLE and unready starts are abandoned first, so that the
        // server's grace period is spent only on calls that can still finish.
        exchange.closeAll(new VmprocError('unavailable', 'vmprocd is shutting down; reconnect with after_sequence to resume'));
        events.closeAll(new VmprocError('unavailable', 'vmprocd is shutting down; reconnect with after_sequence to resume'));
        operations.closeStreams();
        await supervisor.shutdown();
        await undo();
      })().then(
        () => (fatal ? settleStopped.reject(fatal) : settleStopped.resolve()),
        (error: unknown) => {
          logger.error({ err: error }, 'unclean shutdown');
          settleStopped.reject(error);
          throw error;
        },
      );
      return stopping;
    };
    lock.onLost((error) => {
      if (stopping) return; // a stop releases the lock itself
      fatal = error;
      // Another daemon may take the state directory now: stop before two supervise one set of VMMs.
      logger.fatal({ err: error, stateDir: config.stateDir }, `${error.message}; stopping (VMMs keep running)`);
      stop().catch(() => undefined);
    });
    return { config, server, supervisor, logger, operations, stop, stopped };
  } catch (error) {
    await undo();
    throw error;
  }
}

/**
 * The roots a request's paths may lead into, and the daemon's own files no request may name:
 * its listening sockets, its state dir, the run dir's logs, exit records and sequence floor, its
 * binaries and TLS files.
 */
export async function pathPolicyFor(config: DaemonConfig): Promise<PathPolicy> {
  const socketRoots = config.socketRoots?.length ? config.socketRoots : [config.runDir];
  // Roots that do not exist yet are made, root's alone; existing ones are checked as they are.
  for (const dir of [...config.imageRoots, ...socketRoots, ...(config.sandboxRoots ?? [])]) await mkdir(dir, { recursive: true, mode: 0o755 });
  const unixListeners = [...config.listen, ...(config.metricsListen ? [config.metricsListen] : [])].flatMap((address) => (address.kind === 'unix' ? [address.path] : []));
  // The run dir's one file outside logs/ and exits/ (and its temp file): a VMM socket bound there
  // would keep the next daemon from reading it, or be replaced by it. The binaries and TLS files,
  // for an operator who keeps them under an image root: a guest must never get them as a disk.
  const floor = sequenceFloorPath(config.runDir);
  const tls = config.tls ? [config.tls.certPath, config.tls.keyPath, ...(config.tls.clientCaPath ? [config.tls.clientCaPath] : [])] : [];
  const ownFiles = [...unixListeners, floor, `${floor}.tmp`, config.vmmBin, config.reaperBin, ...tls];
  return PathPolicy.create({
    images: config.imageRoots,
    sockets: socketRoots,
    sandboxDir: config.sandboxDir,
    sandboxes: config.sandboxRoots ?? [],
    allowBlockDevices: config.allowBlockDevices ?? false,
    reservedFiles: ownFiles,
    reservedDirs: [config.stateDir, logsDir(config.runDir), exitsDir(config.runDir)],
  });
}

/** Fails early, with the fix in the message, instead of at the first StartProcess. */
async function checkHost(config: DaemonConfig): Promise<void> {
  await expectExecutable('--vmm-bin', config.vmmBin);
  await expectExecutable('--reaper-bin', config.reaperBin, 'build it with: npm run build');
  const status = await readFile('/proc/self/status', 'utf8');
  const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0'}`);
  const CAP_NET_ADMIN = 12n;
  const CAP_SYS_ADMIN = 21n;
  if (!((capEff >> CAP_SYS_ADMIN) & 1n) || !((capEff >> CAP_NET_ADMIN) & 1n)) {
    throw new VmprocError(
      'failed-precondition',
      'vmprocd needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN, to create mount namespaces and enter network namespaces',
    );
  }
}

async function expectExecutable(flag: string, path: string, hint = ''): Promise<void> {
  try {
    await access(path, constants.X_OK);
  } catch (cause) {
    throw new VmprocError('failed-precondition', `${flag} ${path} is not an executable file${hint ? `; ${hint}` : ''}`, { cause });
  }
}
