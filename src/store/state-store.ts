import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ProcessExitEvent, ProcessIdentity, SocketFiles, StartSpec, VmState } from '../core/domain.js';
import { EventFloors, type EventFloorsJson } from '../core/event-floors.js';
import type { ProcessEvent } from '../core/events.js';
import type { PersistedProcess, PersistedState, Recorded, StateStore } from '../core/ports.js';
import { VmprocError } from '../errors.js';
import { Journal } from './journal.js';
import { SequenceFloor } from './sequence-floor.js';

export type { PersistedProcess, PersistedState, StateStore };

/**
 * What is fdatasync'd before it is acknowledged. Everything is written before it is acknowledged,
 * so a daemon crash loses nothing whatever the mode; the modes differ on a host crash:
 * - `always`: every record.
 * - `launches`: launch and boot records, so that a VMM the host crash killed is never forgotten
 *   (it gets a `lost` exit at the next start). Exits written but not yet on disk when the host
 *   died are covered by a jump in sequence numbers after a reboot (see src/daemon/daemon.ts).
 * - `none`: nothing; the journal reaches the disk at the kernel's pace.
 */
/** Events kept for WatchEvents replay unless configured (--event-history). */
export const DEFAULT_EVENT_HISTORY = 10_000;

export type SyncMode = 'always' | 'launches' | 'none';

/** A store that remembers nothing, for a supervisor that need not survive restarts (tests). */
const done: Recorded = { written: Promise.resolve(), durable: Promise.resolve() };

export const ephemeralStore: StateStore = {
  launching: () => done,
  spawned: async () => {},
  ready: async () => {},
  stopping: async () => {},
  vmState: async () => {},
  signalled: async () => {},
  startFailed: async () => {},
  exited: async () => {},
  event: async () => {},
  abandoned: async () => {},
  booted: async () => {},
  close: async () => {},
};

type Json = Record<string, unknown>;

/** Journal record kinds. Dates are epoch milliseconds, bigints decimal strings. */
type JournalRecord =
  | { k: 'launch'; id: string; spec: StartSpec; logPath: string; statusPath: string; startedAt: number; bootId: string }
  | { k: 'spawn'; id: string; pid: number; startTime: string; reaperPid: number; reaperStartTime: string; logOffset: number }
  | { k: 'ready'; id: string; readyAt: number; vmmVersion: string; sock?: SocketFiles }
  | { k: 'stop'; id: string; killAt: number; snapshotUrl?: string }
  | { k: 'vm'; id: string; state: VmState }
  | { k: 'signal'; id: string; signal: string }
  | { k: 'startFailure'; id: string; reason: 'start-failed' | 'start-timeout'; message: string }
  | { k: 'exit'; event: Json }
  /** An exit in a compacted journal's history: attaches to no process (each process record holds its own). */
  | { k: 'history'; event: Json }
  /** A lifecycle event; `off`: the VMM's event monitor was read up to this byte with it. */
  | { k: 'event'; event: Json; off?: number }
  /** An event in a compacted journal's history. */
  | { k: 'eventHistory'; event: Json }
  | { k: 'eventFloors'; floors: EventFloorsJson }
  | { k: 'abandon'; id: string }
  | { k: 'boot'; bootId: string }
  | { k: 'process'; process: Json };

export interface JournalStoreOptions {
  readonly stateDir: string;
  /** Exits kept for replay; older ones are pruned at compaction. */
  readonly historyLimit: number;
  /** Exited processes kept for Get/Wait; older ones are pruned at compaction. */
  readonly exitedRecordLimit: number;
  /** Events kept for replay (10000 when unset); older ones are pruned at compaction, raising the floors. */
  readonly eventHistoryLimit?: number;
  readonly sync: SyncMode;
  /**
   * Where to keep the sequence of an exit published but not journalled (see SequenceFloor): a file
   * on another file system than the state dir, which may be the one that is full. None: not kept.
   */
  readonly sequenceFloorPath?: string;
}

/**
 * The StateStore on a journal in `<stateDir>/state.journal`. It keeps the folded state in memory
 * too, so compaction can rewrite the file from it without reading anything back.
 */
export class JournalStateStore implements StateStore {
  readonly #journal: Journal;
  readonly #options: JournalStoreOptions;
  readonly #processes: Map<string, PersistedProcess>;
  readonly #exits: ProcessExitEvent[];
  readonly #events: EventLog;
  readonly #floor: SequenceFloor | undefined;
  #lastBootId: string | undefined;
  #compacting: Promise<void> | undefined;

  private constructor(journal: Journal, options: JournalStoreOptions, state: PersistedState, floor: SequenceFloor | undefined) {
    this.#journal = journal;
    this.#options = options;
    this.#floor = floor;
    this.#processes = new Map(state.processes);
    this.#exits = [...state.exits];
    this.#events = { events: [...state.events], floors: EventFloors.fromJson(state.eventFloors) };
    this.#lastBootId = state.lastBootId;
  }

  /**
   * Opens (or creates) the store and returns what it held. Its lastSequence is past any exit a
   * previous daemon published without journalling it (the sequence floor).
   */
  static async open(options: JournalStoreOptions): Promise<{ store: JournalStateStore; state: PersistedState }> {
    await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
    const floor = options.sequenceFloorPath !== undefined ? await SequenceFloor.open(options.sequenceFloorPath) : undefined;
    const { journal, loaded } = await Journal.open(join(options.stateDir, 'state.journal'), { syncAll: options.sync === 'always' });
    const folded = foldRecords(loaded.records as JournalRecord[], options, loaded.droppedTailBytes);
    const above = floor?.value !== undefined && floor.value > folded.lastSequence ? floor.value : undefined;
    const state: PersistedState = above !== undefined ? { ...folded, lastSequence: above, sequenceFloor: above } : folded;
    const store = new JournalStateStore(journal, options, state, floor);
    return { store, state };
  }

  launching(id: string, launch: Pick<PersistedProcess, 'spec' | 'logPath' | 'statusPath' | 'startedAt' | 'bootId'>): Recorded {
    const record: JournalRecord = { k: 'launch', id, spec: launch.spec, logPath: launch.logPath, statusPath: launch.statusPath, startedAt: launch.startedAt.getTime(), bootId: launch.bootId };
    applyRecord(this.#processes, this.#exits, this.#events, record);
    const appended = this.#journal.appendStaged(record, { sync: this.#options.sync !== 'none' });
    appended.written.then(() => this.#maybeCompact(), () => undefined);
    return appended;
  }

  booted(bootId: string): Promise<void> {
    this.#lastBootId = bootId;
    return this.#append({ k: 'boot', bootId }, this.#options.sync !== 'none');
  }

  spawned(id: string, identity: ProcessIdentity, logOffset: number): Promise<void> {
    const { pid, startTime, reaperPid, reaperStartTime } = identity;
    return this.#append({ k: 'spawn', id, pid, startTime: String(startTime), reaperPid, reaperStartTime: String(reaperStartTime), logOffset });
  }

  ready(id: string, readyAt: Date, vmmVersion: string, socketFiles: SocketFiles = {}): Promise<void> {
    const sock = Object.keys(socketFiles).length > 0 ? { sock: socketFiles } : {};
    return this.#append({ k: 'ready', id, readyAt: readyAt.getTime(), vmmVersion, ...sock });
  }

  stopping(id: string, killAt: Date, snapshotUrl?: string): Promise<void> {
    return this.#append({ k: 'stop', id, killAt: killAt.getTime(), ...(snapshotUrl ? { snapshotUrl } : {}) });
  }

  vmState(id: string, state: VmState): Promise<void> {
    return this.#append({ k: 'vm', id, state });
  }

  signalled(id: string, signal: string): Promise<void> {
    return this.#append({ k: 'signal', id, signal });
  }

  startFailed(id: string, failure: NonNullable<PersistedProcess['startFailure']>): Promise<void> {
    return this.#append({ k: 'startFailure', id, reason: failure.reason, message: failure.message });
  }

  /**
   * Journals an exit. When that fails, its sequence is kept as the floor before this rejects (the
   * caller publishes the exit anyway, so a restart must number after it); once one is journalled,
   * the floor goes.
   */
  async exited(event: ProcessExitEvent): Promise<void> {
    try {
      await this.#append({ k: 'exit', event: exitToJson(event) });
    } catch (error) {
      throw await this.#keepFloor(event.sequence, error);
    }
    this.#floor?.journalled(event.sequence).catch(() => undefined); // a stale floor only holds numbering back
  }

  /** The journal's error, once the floor holds `sequence`; telling too when the floor failed as well. */
  async #keepFloor(sequence: number, journalError: unknown): Promise<unknown> {
    if (!this.#floor) return journalError;
    try {
      await this.#floor.raise(sequence);
      return journalError;
    } catch (floorError) {
      const code = journalError instanceof VmprocError ? journalError.code : 'internal';
      return new VmprocError(
        code,
        `${(journalError as Error).message}; nor could exit sequence ${sequence} be kept in ${this.#floor.path} ` +
          `(${(floorError as Error).message}): after a restart, new exits may reuse sequences watchers have seen`,
        { cause: journalError },
      );
    }
  }

  event(event: ProcessEvent, monitorOffset?: number): Promise<void> {
    return this.#append({ k: 'event', event: eventToJson(event), ...(monitorOffset !== undefined ? { off: monitorOffset } : {}) });
  }

  abandoned(id: string): Promise<void> {
    return this.#append({ k: 'abandon', id });
  }

  async close(): Promise<void> {
    await this.#compacting;
    await this.#journal.close();
    await this.#floor?.settled();
  }

  async #append(record: JournalRecord, sync = false): Promise<void> {
    applyRecord(this.#processes, this.#exits, this.#events, record);
    await this.#journal.append(record, { sync });
    this.#maybeCompact();
  }

  /** Rewrites the journal once it holds several times more records than the state it describes. */
  #maybeCompact(): void {
    const live = this.#processes.size + this.#exits.length + this.#events.events.length;
    if (this.#compacting || this.#journal.recordCount < Math.max(1000, 4 * live)) return;
    this.#compacting = this.#journal
      .compact(() => {
        prune(this.#processes, this.#exits, this.#options);
        pruneEvents(this.#events, this.#options.eventHistoryLimit ?? DEFAULT_EVENT_HISTORY);
        return [
          ...(this.#lastBootId ? [{ k: 'boot', bootId: this.#lastBootId } satisfies JournalRecord] : []),
          ...this.#exits.map((e): JournalRecord => ({ k: 'history', event: exitToJson(e) })),
          ...(this.#events.floors.all > 0 ? [{ k: 'eventFloors', floors: this.#events.floors.toJson() } satisfies JournalRecord] : []),
          ...this.#events.events.map((e): JournalRecord => ({ k: 'eventHistory', event: eventToJson(e) })),
          ...[...this.#processes.values()].map((p): JournalRecord => ({ k: 'process', process: processToJson(p) })),
        ];
      })
      .catch(() => {
        // The old journal is intact when compaction fails; appends go on and it is retried later.
      })
      .finally(() => {
        this.#compacting = undefined;
      });
  }
}

/** Replays journal records into the state they describe. */
export function foldRecords(
  records: readonly JournalRecord[],
  limits: Pick<JournalStoreOptions, 'historyLimit' | 'exitedRecordLimit' | 'eventHistoryLimit'>,
  droppedTailBytes = 0,
): PersistedState {
  const processes = new Map<string, PersistedProcess>();
  const exits: ProcessExitEvent[] = [];
  const events: EventLog = { events: [], floors: new EventFloors() };
  let lastBootId: string | undefined;
  for (const record of records) {
    if (record.k === 'boot') lastBootId = record.bootId;
    else applyRecord(processes, exits, events, record);
  }
  prune(processes, exits, limits);
  pruneEvents(events, limits.eventHistoryLimit ?? DEFAULT_EVENT_HISTORY);
  // Pruning keeps the newest exit and event, so the last sequences are always still there.
  return {
    processes,
    exits,
    lastSequence: exits.at(-1)?.sequence ?? 0,
    events: events.events,
    eventFloors: events.floors.toJson(),
    lastEventSequence: Math.max(events.events.at(-1)?.sequence ?? 0, events.floors.all),
    droppedTailBytes,
    ...(lastBootId ? { lastBootId } : {}),
  };
}

/** The retained events and the floors of those pruned. */
interface EventLog {
  readonly events: ProcessEvent[];
  floors: EventFloors;
}

function pruneEvents(log: EventLog, limit: number): void {
  if (log.events.length <= limit) return;
  for (const event of log.events.splice(0, log.events.length - limit)) log.floors.dropped(event);
}

function applyRecord(processes: Map<string, PersistedProcess>, exits: ProcessExitEvent[], events: EventLog, record: JournalRecord): void {
  const update = (id: string, patch: Partial<PersistedProcess>) => {
    const current = processes.get(id);
    if (current) processes.set(id, { ...current, ...patch });
  };
  switch (record.k) {
    case 'launch': {
      // A relaunch replaces the previous (exited) record, which comes back if the launch is
      // abandoned; delete first so Map order follows launches.
      const previous = processes.get(record.id);
      processes.delete(record.id);
      processes.set(record.id, {
        spec: record.spec,
        logPath: record.logPath,
        statusPath: record.statusPath,
        startedAt: new Date(record.startedAt),
        bootId: record.bootId,
        signalsSent: [],
        ...(previous?.exit ? { replaced: previous } : {}),
      });
      break;
    }
    case 'spawn':
      update(record.id, {
        replaced: undefined,
        identity: { pid: record.pid, startTime: BigInt(record.startTime), reaperPid: record.reaperPid, reaperStartTime: BigInt(record.reaperStartTime) },
        logOffset: record.logOffset,
      });
      break;
    case 'ready':
      update(record.id, { readyAt: new Date(record.readyAt), vmmVersion: record.vmmVersion, ...(record.sock ? { socketFiles: record.sock } : {}) });
      break;
    case 'stop':
      update(record.id, { stopKillAt: new Date(record.killAt), ...(record.snapshotUrl ? { stopSnapshotUrl: record.snapshotUrl } : {}) });
      break;
    case 'vm':
      update(record.id, { vmState: record.state });
      break;
    case 'signal': {
      const current = processes.get(record.id);
      if (current) update(record.id, { signalsSent: [...current.signalsSent, record.signal] });
      break;
    }
    case 'startFailure':
      update(record.id, { startFailure: { reason: record.reason, message: record.message } });
      break;
    case 'exit': {
      const event = exitFromJson(record.event);
      if (exits.length === 0 || event.sequence > exits.at(-1)!.sequence) exits.push(event);
      const current = processes.get(event.sandboxId);
      // A launch whose PID was never recorded still gets its exit (the PID comes from the reaper).
      if (current && (current.identity === undefined || current.identity.pid === event.pid) && !current.exit) update(event.sandboxId, { exit: event });
      break;
    }
    case 'history': {
      const event = exitFromJson(record.event);
      if (exits.length === 0 || event.sequence > exits.at(-1)!.sequence) exits.push(event);
      break;
    }
    case 'event':
    case 'eventHistory': {
      const event = eventFromJson(record.event);
      if (events.events.length === 0 || event.sequence > events.events.at(-1)!.sequence) events.events.push(event);
      if (record.k === 'event' && record.off !== undefined) {
        const current = processes.get(event.sandboxId);
        if (current && current.identity?.pid === event.pid) update(event.sandboxId, { monitorOffset: record.off });
      }
      break;
    }
    case 'eventFloors':
      events.floors = EventFloors.fromJson(record.floors);
      break;
    case 'abandon': {
      const current = processes.get(record.id);
      if (current && !current.identity && !current.exit) {
        processes.delete(record.id);
        if (current.replaced) processes.set(record.id, current.replaced);
      }
      break;
    }
    case 'boot':
      break;
    case 'process': {
      const process = processFromJson(record.process);
      processes.set(process.spec.sandboxId, process);
      break;
    }
  }
}

/** Keeps the newest `historyLimit` exits and `exitedRecordLimit` exited processes. */
function prune(processes: Map<string, PersistedProcess>, exits: ProcessExitEvent[], limits: Pick<JournalStoreOptions, 'historyLimit' | 'exitedRecordLimit'>): void {
  if (exits.length > limits.historyLimit) exits.splice(0, exits.length - limits.historyLimit);
  const exited = [...processes.values()].filter((p) => p.exit).sort((a, b) => a.exit!.sequence - b.exit!.sequence);
  for (const process of exited.slice(0, Math.max(0, exited.length - limits.exitedRecordLimit))) {
    processes.delete(process.spec.sandboxId);
  }
}

function processToJson(p: PersistedProcess): Json {
  return {
    ...p,
    replaced: p.replaced ? processToJson(p.replaced) : undefined,
    startedAt: p.startedAt.getTime(),
    identity: p.identity ? { ...p.identity, startTime: p.identity.startTime.toString(), reaperStartTime: p.identity.reaperStartTime.toString() } : undefined,
    readyAt: p.readyAt?.getTime(),
    stopKillAt: p.stopKillAt?.getTime(),
    exit: p.exit ? exitToJson(p.exit) : undefined,
  };
}

function processFromJson(json: Json): PersistedProcess {
  const p = json as Record<string, never>;
  // The identity is rebuilt below, from either spelling.
  const { identity: _identity, pid: _pid, startTime: _startTime, reaperPid: _reaperPid, reaperStartTime: _reaperStartTime, ...rest } = json;
  return {
    ...(rest as unknown as PersistedProcess),
    startedAt: new Date(p.startedAt),
    ...identityFromJson(json),
    ...(p.readyAt !== undefined ? { readyAt: new Date(p.readyAt) } : {}),
    ...(p.stopKillAt !== undefined ? { stopKillAt: new Date(p.stopKillAt) } : {}),
    ...(p.exit !== undefined ? { exit: exitFromJson(p.exit) } : {}),
    ...(p.replaced !== undefined ? { replaced: processFromJson(p.replaced) } : {}),
  };
}

/**
 * The identity of a compacted process record: `identity: {pid, startTime, ...}` since the core's
 * restructure, four flat fields in journals written before it (still read).
 */
function identityFromJson(json: Json): { identity?: ProcessIdentity } {
  const nested = json.identity as Record<string, never> | undefined;
  const source = (nested ?? json) as Record<string, never>;
  const { pid, startTime, reaperPid, reaperStartTime } = source;
  if (pid === undefined || startTime === undefined || reaperPid === undefined || reaperStartTime === undefined) return {};
  return { identity: { pid, startTime: BigInt(startTime), reaperPid, reaperStartTime: BigInt(reaperStartTime) } };
}

function exitToJson(event: ProcessExitEvent): Json {
  return { ...event, exitedAt: event.exitedAt.getTime(), startedAt: event.startedAt.getTime() };
}

function exitFromJson(json: Json): ProcessExitEvent {
  const e = json as Record<string, never>;
  return Object.freeze({ ...(json as unknown as ProcessExitEvent), exitedAt: new Date(e.exitedAt), startedAt: new Date(e.startedAt) });
}

function eventToJson(event: ProcessEvent): Json {
  const detail = event.detail?.kind === 'exit' ? { detail: { kind: 'exit', exit: exitToJson(event.detail.exit) } } : {};
  return { ...event, time: event.time.getTime(), ...detail };
}

function eventFromJson(json: Json): ProcessEvent {
  const e = json as Record<string, never> & { detail?: { kind: string; exit?: Json } };
  const detail = e.detail?.kind === 'exit' ? { detail: Object.freeze({ kind: 'exit' as const, exit: exitFromJson(e.detail.exit!) }) } : {};
  return Object.freeze({ ...(json as unknown as ProcessEvent), time: new Date(e.time), ...detail });
}
