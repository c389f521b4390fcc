import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ProcessExitEvent, ProcessState } from '../core/domain.js';
import type { ExitObserver, StartOutcome, SupervisorObserver } from '../core/observer.js';
import type { StoreObserver, StoreOperation } from './instrumented-store.js';

/** What the gauges read at scrape time, rather than tracking every change as it happens. */
export interface MetricsSources {
  /** Every process the daemon knows, by state (ListProcesses without filter). */
  readonly processStates: () => Iterable<ProcessState>;
  readonly exitWatchers: () => number;
  readonly exitSequence: () => number;
  /** Open WatchEvents streams and the latest event sequence; none before events were wired. */
  readonly eventWatchers?: () => number;
  readonly eventSequence?: () => number;
  readonly logStreams: () => number;
}

const STATES: readonly ProcessState[] = ['starting', 'running', 'stopping', 'exited'];
const EXIT_REASONS = ['exited', 'signaled', 'stopped', 'start_failed', 'start_timeout', 'lost'] as const;

/**
 * The daemon's Prometheus metrics, on a registry of its own (several daemons may share a process
 * in tests). It is the observer the supervisor, the exit exchange, the store and log rotation
 * report to, so none of them knows prom-client. Counters count from this daemon's start.
 */
export class DaemonMetrics implements SupervisorObserver, ExitObserver, StoreObserver {
  readonly registry = new Registry();
  #sources: MetricsSources | undefined;
  readonly #starts: Counter<'outcome'>;
  readonly #startReady: Histogram;
  readonly #exits: Counter<'reason'>;
  readonly #cutOff: Counter;
  readonly #storeWrites: Histogram<'operation'>;
  readonly #storeFailures: Counter<'operation'>;
  readonly #rotations: Counter;
  readonly #rotationFailures: Counter;

  constructor() {
    const registers = [this.registry];
    // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, nodejs_* ...
    // The event loop delay monitor samples once a second instead of prom-client's 100 times:
    // an idle daemon should stay idle (see README, measured costs).
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 1000 });
    const sources = () => this.#sources;
    new Gauge({
      name: 'vmprocd_processes',
      help: 'Processes the daemon knows, by state (exited ones while retained).',
      labelNames: ['state'],
      registers,
      collect() {
        const counts = new Map<ProcessState, number>(STATES.map((state) => [state, 0]));
        for (const state of sources()?.processStates() ?? []) counts.set(state, (counts.get(state) ?? 0) + 1);
        for (const [state, count] of counts) this.set({ state }, count);
      },
    });
    new Gauge({
      name: 'vmprocd_exit_watchers',
      help: 'Open WatchExits streams (and other exit subscribers).',
      registers,
      collect() {
        this.set(sources()?.exitWatchers() ?? 0);
      },
    });
    new Gauge({
      name: 'vmprocd_exit_sequence',
      help: 'Sequence of the latest published exit.',
      registers,
      collect() {
        this.set(sources()?.exitSequence() ?? 0);
      },
    });
    new Gauge({
      name: 'vmprocd_event_watchers',
      help: 'Open WatchEvents streams (and other event subscribers).',
      registers,
      collect() {
        this.set(sources()?.eventWatchers?.() ?? 0);
      },
    });
    new Gauge({
      name: 'vmprocd_event_sequence',
      help: 'Sequence of the latest published lifecycle event.',
      registers,
      collect() {
        this.set(sources()?.eventSequence?.() ?? 0);
      },
    });
    new Gauge({
      name: 'vmprocd_log_streams',
      help: 'Open StreamLogs streams.',
      registers,
      collect() {
        this.set(sources()?.logStreams() ?? 0);
      },
    });
    this.#starts = new Counter({
      name: 'vmprocd_starts_total',
      help: 'StartProcess outcomes: ready, or the error code the start failed with (e.g. failed_precondition, deadline_exceeded).',
      labelNames: ['outcome'],
      registers,
    });
    this.#starts.inc({ outcome: 'ready' }, 0);
    this.#startReady = new Histogram({
      name: 'vmprocd_start_ready_seconds',
      help: 'Time from the start of a launch to ready (ping answered, restore done), for starts that became ready.',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.#exits = new Counter({ name: 'vmprocd_exits_total', help: 'Published exits, by reason.', labelNames: ['reason'], registers });
    for (const reason of EXIT_REASONS) this.#exits.inc({ reason }, 0);
    this.#cutOff = new Counter({
      name: 'vmprocd_exit_watchers_cut_off_total',
      help: 'Exit watchers ended with RESOURCE_EXHAUSTED because they fell more than --watch-buffer exits behind.',
      registers,
    });
    this.#storeWrites = new Histogram({
      name: 'vmprocd_store_write_seconds',
      help: 'Latency of state journal writes as the daemon waits for them (written, and fdatasync\'d when --state-sync asks), by record.',
      labelNames: ['operation'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.#storeFailures = new Counter({
      name: 'vmprocd_store_write_failures_total',
      help: 'State journal writes that failed, by record.',
      labelNames: ['operation'],
      registers,
    });
    this.#rotations = new Counter({ name: 'vmprocd_log_rotations_total', help: 'VMM logs rotated for exceeding --log-max-bytes.', registers });
    this.#rotationFailures = new Counter({ name: 'vmprocd_log_rotation_failures_total', help: 'VMM log rotations that failed.', registers });
  }

  /** Where the scrape-time gauges read from; until set they read zero. */
  bind(sources: MetricsSources): void {
    this.#sources = sources;
  }

  startFinished(outcome: StartOutcome, readySeconds?: number): void {
    this.#starts.inc({ outcome: outcome.replaceAll('-', '_') });
    if (outcome === 'ready' && readySeconds !== undefined) this.#startReady.observe(readySeconds);
  }

  exitPublished(event: ProcessExitEvent): void {
    this.#exits.inc({ reason: event.reason.replaceAll('-', '_') });
  }

  watcherCutOff(): void {
    this.#cutOff.inc();
  }

  storeWrite(operation: StoreOperation, seconds: number, ok: boolean): void {
    if (ok) this.#storeWrites.observe({ operation }, seconds);
    else this.#storeFailures.inc({ operation });
  }

  logRotated(): void {
    this.#rotations.inc();
  }

  logRotationFailed(): void {
    this.#rotationFailures.inc();
  }
}
