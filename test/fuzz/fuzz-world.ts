/**
 * What the stateful fuzz test drives and checks: one real daemon (a child process) for the whole
 * test, and per fast-check run a World with its own sandbox IDs, what the model knows of them,
 * the calls still in flight and the streams still open.
 *
 * Every RPC goes through `call()`, which fails the run on a status its RPC does not document (and
 * so on UNKNOWN and on INTERNAL, which nothing here should cause).
 */
import { type ServiceError, status } from '@grpc/grpc-js';
import type { ProcessExit } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { VmProcessClient } from '../../src/client/vm-process-client.js';
import type { ExitCollector } from '../helpers/exit-collector.js';
import type { SandboxFixture } from '../helpers/sandbox-fixture.js';

/**
 * The status codes each RPC documents in proto/ (besides OK), for what the fuzz sends it. Left
 * out of StartProcess: RESOURCE_EXHAUSTED (a full state disk) and UNAVAILABLE (a VMM whose API
 * stops answering while it lives), which the fuzz never causes: here UNAVAILABLE would be a VMM
 * that died passed off as a transient failure.
 */
export const DOCUMENTED: Readonly<Record<string, readonly status[]>> = {
  startProcess: [status.INVALID_ARGUMENT, status.PERMISSION_DENIED, status.FAILED_PRECONDITION, status.ALREADY_EXISTS, status.DEADLINE_EXCEEDED, status.CANCELLED, status.ABORTED],
  stopProcess: [status.NOT_FOUND, status.INVALID_ARGUMENT],
  signalProcess: [status.NOT_FOUND, status.INVALID_ARGUMENT, status.FAILED_PRECONDITION],
  getProcess: [status.NOT_FOUND, status.INVALID_ARGUMENT],
  listProcesses: [status.INVALID_ARGUMENT],
  watchExits: [status.OUT_OF_RANGE, status.RESOURCE_EXHAUSTED, status.INVALID_ARGUMENT],
  streamLogs: [status.NOT_FOUND, status.RESOURCE_EXHAUSTED, status.INVALID_ARGUMENT],
  pauseVm: [status.NOT_FOUND, status.FAILED_PRECONDITION, status.UNAVAILABLE, status.INVALID_ARGUMENT],
  resumeVm: [status.NOT_FOUND, status.FAILED_PRECONDITION, status.UNAVAILABLE, status.INVALID_ARGUMENT],
  snapshotVm: [status.NOT_FOUND, status.FAILED_PRECONDITION, status.UNAVAILABLE, status.INVALID_ARGUMENT, status.PERMISSION_DENIED],
  getVmInfo: [status.NOT_FOUND, status.FAILED_PRECONDITION, status.UNAVAILABLE, status.INVALID_ARGUMENT],
  getVmCounters: [status.NOT_FOUND, status.FAILED_PRECONDITION, status.UNAVAILABLE, status.INVALID_ARGUMENT],
  resizeVm: [status.NOT_FOUND, status.FAILED_PRECONDITION, status.UNAVAILABLE, status.INVALID_ARGUMENT],
};

export type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly code: status; readonly details: string };

/** The daemon and the suite-wide records every run adds to. */
export interface FuzzHost {
  readonly client: VmProcessClient;
  readonly fixture: SandboxFixture;
  readonly netns: string;
  readonly snapsDir: string;
  /** Every exit, from one WatchExits{after_sequence: 0} opened before the first run. */
  readonly recorder: ExitCollector;
  /** Every start that returned OK: its VMM's exit must be published exactly once. */
  readonly started: Array<{ sandboxId: string; pid: number; startedAtMs: number }>;
  /** Calls and streams that ended with a status their RPC does not document. */
  readonly violations: string[];
  /** How often each RPC ended with each status (`startProcess OK`), for the summary. */
  readonly outcomes: Map<string, number>;
}

export interface OpenStream {
  readonly kind: 'watch' | 'logs';
  readonly label: string;
  readonly abort: AbortController;
  /** Settles when the stream has ended (by itself, by error or by abort); never rejects. */
  readonly done: Promise<void>;
  readonly exits?: ProcessExit[];
}

/** One fast-check run: its own sandbox IDs, so runs never see each other's processes. */
export class World {
  readonly host: FuzzHost;
  readonly tag: string;
  /** The run's sandbox IDs; commands pick among them (and a few hostile ones). */
  readonly pool: string[];
  /** IDs with a start that returned OK in this run (a record exists: never NOT_FOUND). */
  readonly everStarted = new Set<string>();
  /** IDs with a start in flight or attempted (a record may exist). */
  readonly attempted = new Set<string>();
  /** How many starts of each ID were issued (in flight or done). */
  readonly attempts = new Map<string, number>();
  /** Snapshot URLs made by this run, for restores. */
  readonly snapshots: string[] = [];
  readonly pending: Array<Promise<void>> = [];
  readonly streams: OpenStream[] = [];
  #counter = 0;

  constructor(host: FuzzHost, tag: string, poolSize = 4) {
    this.host = host;
    this.tag = tag;
    this.pool = Array.from({ length: poolSize }, (_, i) => `${tag}-${i}`);
  }

  get client(): VmProcessClient {
    return this.host.client;
  }

  /** A name unique in the suite (rootfs files, snapshot dirs). */
  unique(prefix: string): string {
    return `${this.tag}-${prefix}${++this.#counter}`;
  }

  /**
   * Awaits an RPC; a status outside its documented set (UNKNOWN, INTERNAL, or any other) is a
   * violation, recorded and thrown.
   */
  async call<T>(rpc: keyof typeof DOCUMENTED, what: string, promise: Promise<T>, alsoAllowed: readonly status[] = []): Promise<Outcome<T>> {
    const count = (code: string) => this.host.outcomes.set(`${rpc} ${code}`, (this.host.outcomes.get(`${rpc} ${code}`) ?? 0) + 1);
    try {
      const value = await promise;
      count('OK');
      return { ok: true, value };
    } catch (error) {
      const e = error as ServiceError;
      if (typeof e?.code !== 'number') throw error;
      count(status[e.code] ?? String(e.code));
      if (!DOCUMENTED[rpc]!.includes(e.code) && !alsoAllowed.includes(e.code)) {
        const violation = `${rpc} ${what} -> ${status[e.code] ?? e.code}: ${e.details}`;
        this.host.violations.push(violation);
        throw new Error(violation);
      }
      return { ok: false, code: e.code, details: e.details };
    }
  }

  /** Fails the run with `message` (a model invariant broke). */
  fail(message: string): never {
    this.host.violations.push(message);
    throw new Error(message);
  }
}
