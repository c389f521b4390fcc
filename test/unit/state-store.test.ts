import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeRecord, readJournal } from '../../src/store/journal.js';
import {
  foldRecords,
  JournalStateStore,
  type JournalStoreOptions,
  type PersistedProcess,
  type PersistedState,
  type SyncMode,
} from '../../src/store/state-store.js';
import type { ProcessExitEvent, ProcessIdentity, StartSpec } from '../../src/core/domain.js';
import { EventFloors } from '../../src/core/event-floors.js';
import type { ProcessEvent } from '../../src/core/events.js';
import { expectVmprocError, rejectionOf } from './support/errors.js';

type Records = Parameters<typeof foldRecords>[0];
type Rec = Records[number];

let root: string;
let stateDir: string;
const stores: JournalStateStore[] = [];

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'vmprocd-state-'));
  stateDir = join(root, 'state', 'nested');
});

afterEach(async () => {
  for (const store of stores.splice(0)) await store.close().catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

const LIMITS = { historyLimit: 100, exitedRecordLimit: 100 };

async function openStore(overrides: Partial<JournalStoreOptions> = {}): Promise<{ store: JournalStateStore; state: PersistedState }> {
  const opened = await JournalStateStore.open({ stateDir, sync: 'launches', ...LIMITS, ...overrides });
  stores.push(opened.store);
  return opened;
}

async function closeStore(store: JournalStateStore): Promise<void> {
  stores.splice(stores.indexOf(store), 1);
  await store.close();
}

/** Closes the store and opens it again: the state as a restarted daemon sees it. */
async function reopen(store: JournalStateStore, overrides: Partial<JournalStoreOptions> = {}): Promise<{ store: JournalStateStore; state: PersistedState }> {
  await closeStore(store);
  return openStore(overrides);
}

const journalPath = () => join(stateDir, 'state.journal');

function spec(sandboxId: string, overrides: Partial<StartSpec> = {}): StartSpec {
  return {
    sandboxId,
    mode: 'boot',
    kernelPath: '/srv/vmlinux',
    rootfsPath: '/srv/rootfs.ext4',
    networkNamespace: `ns-${sandboxId}`,
    socketPath: `/run/vmprocd/sockets/${sandboxId}.sock`,
    sandboxDir: `/run/vmprocd/sandbox/${sandboxId}`,
    readyTimeoutMs: 5000,
    labels: { team: 'a', sandbox: sandboxId },
    ...overrides,
  };
}

const T0 = Date.UTC(2024, 0, 2, 3, 4, 5, 678);

function launch(sandboxId: string, n = 0, overrides: Partial<StartSpec> = {}) {
  return {
    spec: spec(sandboxId, overrides),
    logPath: `/run/vmprocd/logs/${sandboxId}.log`,
    statusPath: `/run/vmprocd/exits/${sandboxId}.${n}.status`,
    startedAt: new Date(T0 + n * 1000),
    bootId: 'boot-1',
  };
}

/** Start times beyond 2^53 must survive as exact bigints. */
const BIG_START = 18446744073709551615n;

function vmm(pid: number, overrides: Partial<ProcessIdentity> = {}) {
  return { identity: { pid, startTime: BIG_START - BigInt(pid), reaperPid: pid - 1, reaperStartTime: 1234567890123456789n, ...overrides }, logOffset: pid * 10 };
}

/** The arguments of StateStore.spawned for a VMM of `pid`. */
function spawnArgs(pid: number, overrides: Partial<ProcessIdentity> = {}): [ProcessIdentity, number] {
  const v = vmm(pid, overrides);
  return [v.identity, v.logOffset];
}

function exit(sequence: number, sandboxId: string, pid: number, overrides: Partial<ProcessExitEvent> = {}): ProcessExitEvent {
  return {
    sequence,
    sandboxId,
    pid,
    exitCode: 0,
    reason: 'exited',
    exitedAt: new Date(T0 + 60_000 + sequence),
    startedAt: new Date(T0),
    labels: { team: 'a' },
    stderrTail: `line 1\nline 2 of ${sandboxId}`,
    message: `exit code 0`,
    signalSentByDaemon: false,
    ...overrides,
  };
}

/** Journal records as JournalStateStore writes them (dates as ms, bigints as strings). */
const rec = {
  launch: (id: string, n = 0): Rec => {
    const l = launch(id, n);
    return { k: 'launch', id, spec: l.spec, logPath: l.logPath, statusPath: l.statusPath, startedAt: l.startedAt.getTime(), bootId: l.bootId };
  },
  spawn: (id: string, pid: number): Rec => {
    const v = vmm(pid);
    return { k: 'spawn', id, pid, startTime: String(v.identity.startTime), reaperPid: v.identity.reaperPid, reaperStartTime: String(v.identity.reaperStartTime), logOffset: v.logOffset };
  },
  ready: (id: string, at = T0 + 500, vmmVersion = 'cloud-hypervisor v41.0'): Rec => ({ k: 'ready', id, readyAt: at, vmmVersion }),
  stop: (id: string, killAt = T0 + 10_000): Rec => ({ k: 'stop', id, killAt }),
  signal: (id: string, signal: string): Rec => ({ k: 'signal', id, signal }),
  startFailure: (id: string, message = 'vmm exited before ready'): Rec => ({ k: 'startFailure', id, reason: 'start-failed', message }),
  exit: (event: ProcessExitEvent): Rec => ({ k: 'exit', event: { ...event, exitedAt: event.exitedAt.getTime(), startedAt: event.startedAt.getTime() } }),
  abandon: (id: string): Rec => ({ k: 'abandon', id }),
  boot: (bootId: string): Rec => ({ k: 'boot', bootId }),
};

/** A launched process as folded from its launch record alone. */
function launched(id: string, n = 0): PersistedProcess {
  const l = launch(id, n);
  return { spec: l.spec, logPath: l.logPath, statusPath: l.statusPath, startedAt: l.startedAt, bootId: l.bootId, signalsSent: [] };
}

function spawnedFields(pid: number, overrides: Partial<ProcessIdentity> = {}) {
  return vmm(pid, overrides);
}

/** Polls `condition` every 5 ms, failing after 2 s. */
async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met within 2 s');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const fold = (records: Rec[], limits = LIMITS) => foldRecords(records, limits);

describe('foldRecords: one process through its life', () => {
  it('starts empty', () => {
    expect(fold([])).toEqual({ processes: new Map(), exits: [], lastSequence: 0, events: [], eventFloors: EMPTY_FLOORS, lastEventSequence: 0, droppedTailBytes: 0 });
    expect('lastBootId' in fold([])).toBe(false);
  });

  it('builds a launched process from its launch record', () => {
    const state = fold([rec.launch('a')]);
    expect([...state.processes.keys()]).toEqual(['a']);
    expect(state.processes.get('a')).toStrictEqual(launched('a'));
    expect(state.processes.get('a')!.startedAt).toBeInstanceOf(Date);
  });

  it('adds the PIDs and exact bigint start times of spawn', () => {
    const p = fold([rec.launch('a'), rec.spawn('a', 100)]).processes.get('a')!;
    expect(p).toEqual({ ...launched('a'), ...spawnedFields(100) });
    expect(p.identity?.startTime).toBe(BIG_START - 100n);
    expect(typeof p.identity?.reaperStartTime).toBe('bigint');
  });

  it('adds readiness, the stop deadline, signals in order and a start failure', () => {
    const p = fold([
      rec.launch('a'),
      rec.spawn('a', 100),
      rec.ready('a', T0 + 750, 'v42'),
      rec.signal('a', 'SIGUSR1'),
      rec.signal('a', 'SIGCONT'),
      rec.signal('a', 'SIGUSR1'),
      rec.startFailure('a', 'restore refused'),
      rec.stop('a', T0 + 9999),
    ]).processes.get('a')!;
    expect(p).toEqual({
      ...launched('a'),
      ...spawnedFields(100),
      readyAt: new Date(T0 + 750),
      vmmVersion: 'v42',
      signalsSent: ['SIGUSR1', 'SIGCONT', 'SIGUSR1'],
      startFailure: { reason: 'start-failed', message: 'restore refused' },
      stopKillAt: new Date(T0 + 9999),
    });
  });

  it('attaches the exit to the process and to the history', () => {
    const event = exit(7, 'a', 100, { exitCode: undefined, signal: 'SIGKILL', reason: 'stopped', signalSentByDaemon: true });
    const state = fold([rec.launch('a'), rec.spawn('a', 100), rec.exit(event)]);
    expect(state.processes.get('a')).toEqual({ ...launched('a'), ...spawnedFields(100), exit: event });
    expect(state.exits).toEqual([event]);
    expect(state.exits[0]!.exitedAt).toBeInstanceOf(Date);
    expect(state.lastSequence).toBe(7);
  });

  it('ignores records for a sandbox it never saw launched', () => {
    const state = fold([rec.spawn('x', 1), rec.ready('x'), rec.stop('x'), rec.signal('x', 'SIGTERM'), rec.startFailure('x'), rec.abandon('x')]);
    expect(state.processes.size).toBe(0);
  });

  it('keeps an exit of an unknown sandbox in the history only', () => {
    const event = exit(3, 'ghost', 9);
    const state = fold([rec.launch('a'), rec.exit(event)]);
    expect(state.exits).toEqual([event]);
    expect(state.processes.get('a')!.exit).toBeUndefined();
    expect(state.lastSequence).toBe(3);
  });
});

describe('foldRecords: boot records', () => {
  it('takes the last boot ID', () => {
    expect(fold([rec.boot('b1'), rec.launch('a'), rec.boot('b2')]).lastBootId).toBe('b2');
  });

  it('passes droppedTailBytes through', () => {
    expect(foldRecords([], LIMITS, 17).droppedTailBytes).toBe(17);
  });
});

describe('foldRecords: exits', () => {
  it('keeps the history oldest first and lastSequence at the newest', () => {
    const events = [exit(1, 'a', 10), exit(2, 'b', 20), exit(5, 'c', 30)];
    const state = fold([rec.launch('a'), rec.launch('b'), rec.launch('c'), ...events.map(rec.exit)]);
    expect(state.exits.map((e) => e.sequence)).toEqual([1, 2, 5]);
    expect(state.lastSequence).toBe(5);
  });

  it('ignores an exit whose sequence is not after the last one (a replay)', () => {
    const state = fold([rec.exit(exit(4, 'a', 1)), rec.exit(exit(4, 'a', 1)), rec.exit(exit(2, 'b', 2)), rec.exit(exit(6, 'c', 3))]);
    expect(state.exits.map((e) => e.sequence)).toEqual([4, 6]);
  });

  it('attaches the exit of a launch whose PID was never recorded, taking the PID from the exit', () => {
    const event = exit(1, 'a', 4242, { reason: 'lost', exitCode: undefined });
    const p = fold([rec.launch('a'), rec.exit(event)]).processes.get('a')!;
    expect(p.exit?.pid).toBe(4242);
    expect(p.exit).toEqual(event);
    expect(p.identity).toBeUndefined();
  });

  it('does not attach an exit for another PID than the recorded one', () => {
    const state = fold([rec.launch('a'), rec.spawn('a', 100), rec.exit(exit(1, 'a', 999))]);
    expect(state.processes.get('a')!.exit).toBeUndefined();
    expect(state.processes.get('a')!.identity?.pid).toBe(100);
    expect(state.exits).toHaveLength(1);
  });

  it('keeps the first exit of a process', () => {
    const first = exit(1, 'a', 100);
    const state = fold([rec.launch('a'), rec.spawn('a', 100), rec.exit(first), rec.exit(exit(2, 'a', 100, { exitCode: 3 }))]);
    expect(state.processes.get('a')!.exit).toEqual(first);
    expect(state.exits.map((e) => e.sequence)).toEqual([1, 2]);
  });
});

describe('foldRecords: compacted process records', () => {
  it('reads the four flat identity fields journals before the core restructure wrote', () => {
    const l = launch('a', 0);
    const v = vmm(100);
    const old = {
      spec: l.spec, logPath: l.logPath, statusPath: l.statusPath, startedAt: l.startedAt.getTime(), bootId: l.bootId, signalsSent: [],
      pid: 100, startTime: String(v.identity.startTime), reaperPid: v.identity.reaperPid, reaperStartTime: String(v.identity.reaperStartTime), logOffset: v.logOffset,
    };
    expect(fold([{ k: 'process', process: old } as Rec]).processes.get('a')).toEqual({ ...launched('a', 0), ...spawnedFields(100) });
  });
});

describe('foldRecords: relaunch and abandon', () => {
  const firstExit = exit(1, 'a', 100, { exitCode: 1 });
  const firstRun = [rec.launch('a', 0), rec.spawn('a', 100), rec.ready('a'), rec.exit(firstExit)];
  const firstProcess = (): PersistedProcess => ({ ...launched('a', 0), ...spawnedFields(100), readyAt: new Date(T0 + 500), vmmVersion: 'cloud-hypervisor v41.0', exit: firstExit });

  it('replaces the exited record by the new launch, keeping the old one aside', () => {
    const p = fold([...firstRun, rec.launch('a', 1)]).processes.get('a')!;
    expect(p).toEqual({ ...launched('a', 1), replaced: firstProcess() });
    expect(p.exit).toBeUndefined();
    expect(p.identity).toBeUndefined();
  });

  it('forgets the old record once the new launch spawns', () => {
    const p = fold([...firstRun, rec.launch('a', 1), rec.spawn('a', 200)]).processes.get('a')!;
    expect(p.replaced).toBeUndefined();
    expect(p).toEqual({ ...launched('a', 1), ...spawnedFields(200) });
  });

  it('brings the previous exited record back when a launch that never spawned is abandoned', () => {
    const state = fold([...firstRun, rec.launch('a', 1), rec.abandon('a')]);
    expect(state.processes.get('a')).toEqual(firstProcess());
    expect(state.exits).toEqual([firstExit]);
  });

  it('forgets a first launch that never spawned when it is abandoned', () => {
    expect(fold([rec.launch('a'), rec.abandon('a')]).processes.size).toBe(0);
  });

  it('ignores abandon once the launch has a PID', () => {
    const state = fold([rec.launch('a'), rec.spawn('a', 100), rec.abandon('a')]);
    expect(state.processes.get('a')!.identity?.pid).toBe(100);
  });

  it('ignores abandon of an exited process', () => {
    const state = fold([...firstRun, rec.abandon('a')]);
    expect(state.processes.get('a')).toEqual(firstProcess());
  });

  it('does not keep a live launch aside (only exited records are replaced)', () => {
    const p = fold([rec.launch('a', 0), rec.launch('a', 1)]).processes.get('a')!;
    expect(p).toStrictEqual(launched('a', 1));
  });

  it('moves a relaunched sandbox to the end of the map (launch order)', () => {
    const state = fold([rec.launch('a'), rec.launch('b'), rec.launch('c'), rec.launch('a', 1)]);
    expect([...state.processes.keys()]).toEqual(['b', 'c', 'a']);
  });

  it('a new launch gets the exit of its own run, not the replaced one', () => {
    const second = exit(2, 'a', 200, { exitCode: 2 });
    const p = fold([...firstRun, rec.launch('a', 1), rec.spawn('a', 200), rec.exit(second)]).processes.get('a')!;
    expect(p.exit).toEqual(second);
  });
});

describe('foldRecords: pruning', () => {
  it('keeps the newest historyLimit exits, and lastSequence', () => {
    const events = Array.from({ length: 10 }, (_, i) => exit(i + 1, `s${i}`, 100 + i));
    const state = fold(events.map(rec.exit), { historyLimit: 3, exitedRecordLimit: 100 });
    expect(state.exits.map((e) => e.sequence)).toEqual([8, 9, 10]);
    expect(state.lastSequence).toBe(10);
  });

  it('keeps the newest exitedRecordLimit exited processes by exit sequence, and every live one', () => {
    // Launch order differs from exit order: pruning goes by exit sequence.
    const ids = ['p0', 'p1', 'p2', 'p3', 'p4'];
    const exitOrder = ['p3', 'p0', 'p4', 'p1', 'p2'];
    const records: Rec[] = [
      ...ids.flatMap((id, i) => [rec.launch(id), rec.spawn(id, 100 + i)]),
      rec.launch('live1'),
      rec.launch('live2'),
      rec.spawn('live2', 500),
      ...exitOrder.map((id, seq) => rec.exit(exit(seq + 1, id, 100 + ids.indexOf(id)))),
      rec.launch('live3'),
    ];
    const state = fold(records, { historyLimit: 100, exitedRecordLimit: 2 });
    expect(new Set(state.processes.keys())).toEqual(new Set(['p1', 'p2', 'live1', 'live2', 'live3']));
    expect(state.exits).toHaveLength(5);
  });

  it('never prunes live processes even with a limit of one', () => {
    const records: Rec[] = [rec.launch('a'), rec.launch('b'), rec.launch('c'), rec.launch('d'), rec.spawn('d', 1), rec.exit(exit(1, 'd', 1))];
    const state = fold(records, { historyLimit: 1, exitedRecordLimit: 1 });
    expect([...state.processes.keys()].sort()).toEqual(['a', 'b', 'c', 'd']);
  });

  it('keeps a launch that replaced a pruned exited record live', () => {
    const records: Rec[] = [rec.launch('a'), rec.spawn('a', 1), rec.exit(exit(1, 'a', 1)), rec.launch('b'), rec.spawn('b', 2), rec.exit(exit(2, 'b', 2)), rec.launch('a', 1)];
    const state = fold(records, { historyLimit: 1, exitedRecordLimit: 1 });
    expect([...state.processes.keys()].sort()).toEqual(['a', 'b']);
    expect(state.processes.get('a')!.replaced?.exit?.sequence).toBe(1);
  });
});

/** Writes one of everything through the store: the scenario the round-trip tests replay. */
async function everyRecord(store: JournalStateStore): Promise<void> {
  await store.booted('boot-1');
  // a: launched, spawned, ready, signalled, stopping, exited by signal.
  await store.launching('a', launch('a')).durable;
  await store.spawned('a', ...spawnArgs(100));
  await store.ready('a', new Date(T0 + 500), 'cloud-hypervisor v41.0');
  await store.signalled('a', 'SIGUSR1');
  await store.stopping('a', new Date(T0 + 10_000));
  await store.exited(exit(1, 'a', 100, { exitCode: undefined, signal: 'SIGTERM', reason: 'stopped', signalSentByDaemon: true, labels: { team: 'a', 'x/y': 'ünïcode €' } }));
  // b: running, restore mode.
  await store.launching('b', launch('b', 0, { mode: 'restore', kernelPath: undefined, restore: { sourceUrl: 'file:///snap', memoryRestoreMode: 'OnDemand', resume: true, prefault: false } })).written;
  await store.spawned('b', ...spawnArgs(200));
  await store.ready('b', new Date(T0 + 800), 'v42');
  // c: start failed and exited, no PID recorded before the exit.
  await store.launching('c', launch('c')).durable;
  await store.startFailed('c', { reason: 'start-timeout', message: 'not ready within 5s' });
  await store.exited(exit(2, 'c', 300, { reason: 'start-timeout', exitCode: undefined, signal: 'SIGKILL', signalSentByDaemon: true }));
  // d: abandoned first launch, gone.
  await store.launching('d', launch('d')).durable;
  await store.abandoned('d');
  // a again: relaunched, then abandoned: the first exited record is back.
  await store.launching('a', launch('a', 1)).durable;
  await store.abandoned('a');
  // e: launched, not spawned yet.
  await store.launching('e', launch('e')).durable;
  await store.booted('boot-2');
}

const EMPTY_FLOORS = { all: 0, kinds: {}, sandboxes: [], forgotten: 0, otherKinds: 0 };

function expectedEveryRecord(): PersistedState {
  const aExit = exit(1, 'a', 100, { exitCode: undefined, signal: 'SIGTERM', reason: 'stopped', signalSentByDaemon: true, labels: { team: 'a', 'x/y': 'ünïcode €' } });
  const cExit = exit(2, 'c', 300, { reason: 'start-timeout', exitCode: undefined, signal: 'SIGKILL', signalSentByDaemon: true });
  const b = launch('b', 0, { mode: 'restore', kernelPath: undefined, restore: { sourceUrl: 'file:///snap', memoryRestoreMode: 'OnDemand', resume: true, prefault: false } });
  return {
    processes: new Map<string, PersistedProcess>([
      ['b', { ...b, signalsSent: [], ...spawnedFields(200), readyAt: new Date(T0 + 800), vmmVersion: 'v42' }],
      ['c', { ...launched('c'), startFailure: { reason: 'start-timeout', message: 'not ready within 5s' }, exit: cExit }],
      [
        'a',
        {
          ...launched('a'),
          ...spawnedFields(100),
          readyAt: new Date(T0 + 500),
          vmmVersion: 'cloud-hypervisor v41.0',
          signalsSent: ['SIGUSR1'],
          stopKillAt: new Date(T0 + 10_000),
          exit: aExit,
        },
      ],
      ['e', launched('e')],
    ]),
    exits: [aExit, cExit],
    lastSequence: 2,
    events: [],
    eventFloors: EMPTY_FLOORS,
    lastEventSequence: 0,
    droppedTailBytes: 0,
    lastBootId: 'boot-2',
  };
}

describe('JournalStateStore: open', () => {
  it('creates the state dir (mode 0700) and an empty journal', async () => {
    const { state } = await openStore();
    expect(state).toEqual({ processes: new Map(), exits: [], lastSequence: 0, events: [], eventFloors: EMPTY_FLOORS, lastEventSequence: 0, droppedTailBytes: 0 });
    expect((await stat(stateDir)).mode & 0o777).toBe(0o700);
    expect(existsSync(journalPath())).toBe(true);
  });

  it('reports a torn tail and drops it', async () => {
    const { store } = await openStore();
    await store.booted('b1');
    await closeStore(store);
    const torn = '0011aabb {"k":"exit","event":{"seq';
    await writeFile(journalPath(), `${await readFile(journalPath(), 'utf8')}${torn}`);
    const { state } = await openStore();
    expect(state.droppedTailBytes).toBe(torn.length);
    expect(state.lastBootId).toBe('b1');
  });

  it('refuses a corrupt journal with failed-precondition', async () => {
    await rm(stateDir, { recursive: true, force: true });
    const { store } = await openStore();
    await closeStore(store);
    await writeFile(journalPath(), `${encodeRecord({ k: 'boot', bootId: 'b' }).replace('"b"', '"c"')}`);
    expectVmprocError(await rejectionOf(JournalStateStore.open({ stateDir, sync: 'none', ...LIMITS })), 'failed-precondition', journalPath(), 'line 1');
  });
});

describe('JournalStateStore: round trip through the file', () => {
  it('reopens to the state it wrote: every record kind, bigints and dates exact', async () => {
    const { store } = await openStore();
    await everyRecord(store);
    const { state } = await reopen(store);
    expect(state).toEqual(expectedEveryRecord());
    expect(state.processes.get('a')!.identity?.startTime).toBe(BIG_START - 100n);
    expect(state.processes.get('a')!.readyAt).toBeInstanceOf(Date);
    expect(state.exits[0]!.exitedAt).toBeInstanceOf(Date);
    expect(Object.isFrozen(state.exits[0])).toBe(true);
  });

  it('writes exactly the records foldRecords replays', async () => {
    const { store } = await openStore();
    await everyRecord(store);
    await closeStore(store);
    const { records } = await readJournal(journalPath());
    expect(records.map((r) => (r as { k: string }).k)).toEqual([
      'boot', 'launch', 'spawn', 'ready', 'signal', 'stop', 'exit', 'launch', 'spawn', 'ready',
      'launch', 'startFailure', 'exit', 'launch', 'abandon', 'launch', 'abandon', 'launch', 'boot',
    ]);
    expect(foldRecords(records as Records, LIMITS)).toEqual(expectedEveryRecord());
  });

  it('goes on from a reopened state: appends after a reopen fold on top', async () => {
    const first = await openStore();
    await everyRecord(first.store);
    const { store } = await reopen(first.store);
    await store.spawned('e', ...spawnArgs(500));
    await store.exited(exit(3, 'b', 200, { exitCode: 9 }));
    const { state } = await reopen(store);
    expect(state.processes.get('e')!.identity?.pid).toBe(500);
    expect(state.processes.get('b')!.exit?.exitCode).toBe(9);
    expect(state.lastSequence).toBe(3);
  });

  it('prunes at load with the limits it is opened with', async () => {
    const { store } = await openStore();
    for (let i = 0; i < 6; i++) {
      await store.launching(`s${i}`, launch(`s${i}`)).written;
      await store.spawned(`s${i}`, ...spawnArgs(100 + i));
      await store.exited(exit(i + 1, `s${i}`, 100 + i));
    }
    await store.launching('live', launch('live')).written;
    const { state } = await reopen(store, { historyLimit: 2, exitedRecordLimit: 3 });
    expect(state.exits.map((e) => e.sequence)).toEqual([5, 6]);
    expect([...state.processes.keys()]).toEqual(['s3', 's4', 's5', 'live']);
    expect(state.lastSequence).toBe(6);
  });

  it('rejects writes after close with unavailable', async () => {
    const { store } = await openStore();
    await closeStore(store);
    expectVmprocError(await rejectionOf(store.ready('a', new Date(), 'v')), 'unavailable');
    expectVmprocError(await rejectionOf(store.launching('a', launch('a')).written), 'unavailable');
  });
});

describe('JournalStateStore: launching()', () => {
  it('returns written and durable; durable is the same as written only with sync none', async () => {
    for (const sync of ['always', 'launches', 'none'] as const) {
      const { store } = await openStore({ sync });
      const appended = store.launching(`x-${sync}`, launch(`x-${sync}`));
      expect(appended).toEqual({ written: expect.any(Promise), durable: expect.any(Promise) });
      if (sync === 'none') expect(appended.durable).toBe(appended.written);
      else expect(appended.durable).not.toBe(appended.written);
      const order: string[] = [];
      await Promise.all([appended.written.then(() => order.push('written')), appended.durable.then(() => order.push('durable'))]);
      expect(order).toEqual(['written', 'durable']);
      await closeStore(store);
    }
  });
});

describe('JournalStateStore: sync modes', () => {
  async function fileHandlePrototype() {
    const handle = await open(join(root, 'probe'), 'w');
    const proto = Object.getPrototypeOf(handle) as { datasync: () => Promise<void> };
    await handle.close();
    return proto;
  }

  it.each<[SyncMode, number]>([
    // everyRecord writes 19 records, awaited one at a time: 6 launches, 2 boots.
    ['always', 19],
    ['launches', 8],
    ['none', 0],
  ])('sync %s: fdatasyncs %i of the records, and the file and state are the same as in every mode', async (sync, syncs) => {
    const datasync = jest.spyOn(await fileHandlePrototype(), 'datasync');
    try {
      const { store } = await openStore({ sync });
      await everyRecord(store);
      expect(datasync).toHaveBeenCalledTimes(syncs);
      const { state } = await reopen(store, { sync });
      expect(state).toEqual(expectedEveryRecord());
    } finally {
      datasync.mockRestore();
    }
    const { records } = await readJournal(journalPath());
    expect(foldRecords(records as Records, LIMITS)).toEqual(expectedEveryRecord());
  });

  it('writes byte-identical journals in every mode', async () => {
    const files: Buffer[] = [];
    for (const sync of ['always', 'launches', 'none'] as const) {
      stateDir = join(root, `state-${sync}`);
      const { store } = await openStore({ sync });
      await everyRecord(store);
      await closeStore(store);
      files.push(await readFile(journalPath()));
    }
    expect(files[1]).toEqual(files[0]);
    expect(files[2]).toEqual(files[0]);
  });
});

describe('JournalStateStore: compaction', () => {
  const lineCount = async () => (await readJournal(journalPath())).records.length;

  /** Appends `n` boot records with the same ID: they leave the folded state as it is. */
  async function filler(store: JournalStateStore, n: number, bootId = 'boot-2'): Promise<void> {
    await Promise.all(Array.from({ length: n }, () => store.booted(bootId)));
  }

  it('does not compact below 1000 records', async () => {
    const { store } = await openStore({ sync: 'none' });
    await filler(store, 999);
    await closeStore(store);
    expect(await lineCount()).toBe(999);
  });

  it('compacts at 1000 records, preserving the folded state exactly', async () => {
    const first = await openStore({ sync: 'none' });
    await everyRecord(first.store);
    const before = await reopen(first.store, { sync: 'none' });
    expect(before.state).toEqual(expectedEveryRecord());
    await filler(before.store, 1000 - 19);
    const after = await reopen(before.store, { sync: 'none' });
    // boot + 4 processes + 2 exits
    expect(await lineCount()).toBe(7);
    expect(after.state).toEqual(before.state);
    expect(existsSync(`${journalPath()}.compact`)).toBe(false);
  });

  it('writes the snapshot as the last boot, one record per process and one per retained exit', async () => {
    const { store } = await openStore({ sync: 'none' });
    await everyRecord(store);
    await filler(store, 1000);
    await closeStore(store);
    const { records } = await readJournal(journalPath());
    // (The order of processes and exits is left free.)
    expect(records.map((r) => (r as { k: string }).k).sort()).toEqual(['boot', 'history', 'history', 'process', 'process', 'process', 'process']);
    expect(records.filter((r) => (r as { k: string }).k === 'boot')).toEqual([{ k: 'boot', bootId: 'boot-2' }]);
  });

  it('keeps appends made after the compaction, after the snapshot', async () => {
    const { store } = await openStore({ sync: 'none' });
    await everyRecord(store);
    await filler(store, 1000);
    await store.spawned('e', ...spawnArgs(600));
    await store.exited(exit(3, 'e', 600, { exitCode: 4 }));
    await closeStore(store);
    const { records } = await readJournal(journalPath());
    expect(records.slice(-2).map((r) => (r as { k: string }).k)).toEqual(['spawn', 'exit']);
    const { state } = await openStore();
    expect(state.processes.get('e')).toEqual({ ...launched('e'), ...spawnedFields(600), exit: exit(3, 'e', 600, { exitCode: 4 }) });
    expect(state.lastSequence).toBe(3);
  });

  it('prunes history and exited records in the compacted file', async () => {
    const { store } = await openStore({ sync: 'none', historyLimit: 3, exitedRecordLimit: 2 });
    for (let i = 0; i < 8; i++) {
      await store.launching(`s${i}`, launch(`s${i}`)).written;
      await store.spawned(`s${i}`, ...spawnArgs(100 + i));
      await store.exited(exit(i + 1, `s${i}`, 100 + i));
    }
    await store.launching('live', launch('live')).written;
    await filler(store, 1000);
    await closeStore(store);
    const { records } = await readJournal(journalPath());
    const exits = records.filter((r) => (r as { k: string }).k === 'history') as Array<{ event: { sequence: number } }>;
    const processes = records.filter((r) => (r as { k: string }).k === 'process') as Array<{ process: { spec: StartSpec } }>;
    expect(exits.map((r) => r.event.sequence)).toEqual([6, 7, 8]);
    expect(processes.map((r) => r.process.spec.sandboxId)).toEqual(['s6', 's7', 'live']);
    const { state } = await openStore({ historyLimit: 3, exitedRecordLimit: 2 });
    expect(state.lastSequence).toBe(8);
    expect([...state.processes.keys()]).toEqual(['s6', 's7', 'live']);
  });

  it('compacts only at 4 times the live state when that is above 1000', async () => {
    // 300 live processes: the threshold is max(1000, 4 * 300) = 1200 records.
    const first = await openStore({ sync: 'none' });
    await Promise.all(Array.from({ length: 300 }, (_, i) => first.store.launching(`p${i}`, launch(`p${i}`)).written));
    await filler(first.store, 899);
    const { store } = await reopen(first.store, { sync: 'none' });
    expect(await lineCount()).toBe(1199);
    await filler(store, 1);
    const again = await reopen(store, { sync: 'none' });
    expect(await lineCount()).toBe(301);
    expect(again.state.processes.size).toBe(300);
  });

  it('compacts again later, and close waits for a compaction in flight', async () => {
    const { store } = await openStore({ sync: 'none' });
    await everyRecord(store);
    await filler(store, 1000);
    await filler(store, 1000);
    await closeStore(store);
    expect(await lineCount()).toBeLessThan(1000);
    const { state } = await openStore();
    expect(state).toEqual(expectedEveryRecord());
  });

  it('keeps signals recorded before the compaction started exactly once', async () => {
    const first = await openStore({ sync: 'none' });
    await first.store.launching('a', launch('a')).written;
    await first.store.spawned('a', ...spawnArgs(100));
    await first.store.signalled('a', 'SIGUSR1');
    await filler(first.store, 1000);
    const { state } = await reopen(first.store);
    expect(state.processes.get('a')!.signalsSent).toEqual(['SIGUSR1']);
  });

  // The snapshot is the store's in-memory state, which applies a record before it is written. A
  // record appended while the compaction waits for earlier writes (journal paused) is in the
  // snapshot AND written after it: replayed twice on reopen. A signal then shows up twice.
  it('records a signal sent while a compaction is starting once', async () => {
    const first = await openStore({ sync: 'launches' });
    await first.store.launching('a', launch('a')).written;
    await first.store.spawned('a', ...spawnArgs(100));
    await filler(first.store, 997);
    // The 1000th record: its `written` starts the compaction (before this test's continuation), and
    // its fdatasync keeps the compaction waiting while the signal is recorded.
    const thousandth = first.store.launching('b', launch('b'));
    await thousandth.written;
    const signalled = first.store.signalled('a', 'SIGUSR1');
    await Promise.all([signalled, thousandth.durable]);
    const { state } = await reopen(first.store);
    expect(await lineCount()).toBeLessThan(10); // compacted
    expect(state.processes.get('a')!.signalsSent).toEqual(['SIGUSR1']);
  });

  /** Sandbox `a` ran (pid 100) and exited with sequence 1, and is being relaunched (not spawned yet). */
  async function relaunchPending(): Promise<{ store: JournalStateStore; state: PersistedState }> {
    const first = await openStore({ sync: 'none' });
    await first.store.launching('a', launch('a')).written;
    await first.store.spawned('a', ...spawnArgs(100));
    await first.store.exited(exit(1, 'a', 100));
    await first.store.launching('a', launch('a', 1)).written;
    return reopen(first.store, { sync: 'none' });
  }

  const firstRunOfA = (): PersistedProcess => ({ ...launched('a', 0), ...spawnedFields(100), exit: exit(1, 'a', 100) });

  it('without compaction, a relaunch spawned after a restart is live with its own PID', async () => {
    const { store } = await relaunchPending();
    await store.spawned('a', ...spawnArgs(200));
    const { state } = await reopen(store, { sync: 'none' });
    expect(state.processes.get('a')).toEqual({ ...launched('a', 1), ...spawnedFields(200) });
  });

  // The snapshot writes process records, then exit records. Replaying it, the old run's exit
  // (sequence 1, pid 100) meets the relaunch's process record, which has no PID yet, and
  // applyRecord's "a launch whose PID was never recorded still gets its exit" attaches it. The
  // relaunch then reads as exited (pid 100, the old exit) even once it spawns: after a restart the
  // supervisor restores it as exited and never re-adopts the running VMM.
  it("a relaunch pending at compaction is still pending after a restart, without the previous run's exit", async () => {
    const { store } = await relaunchPending();
    await filler(store, 1000);
    const { state } = await reopen(store, { sync: 'none' });
    expect(await lineCount()).toBeLessThan(10); // compacted
    expect(state.processes.get('a')!.exit).toBeUndefined();
    expect(state.processes.get('a')!.identity).toBeUndefined();
  });

  it("a relaunch pending at compaction and spawned after it is live after a restart", async () => {
    const { store } = await relaunchPending();
    await filler(store, 1000);
    await waitFor(async () => (await lineCount()) < 10); // the compaction is done: the file was replaced
    await store.spawned('a', ...spawnArgs(200));
    const { state } = await reopen(store, { sync: 'none' });
    expect(state.processes.get('a')!.exit).toBeUndefined();
    expect(state.processes.get('a')).toEqual({ ...launched('a', 1), ...spawnedFields(200) });
  });

  // Same cause: a relaunch already spawned at compaction time whose VMM got the old run's PID again
  // (PIDs are reused) matches the old exit by PID when the snapshot is replayed.
  it('a running relaunch that reuses the previous run\'s PID is live after compaction and a restart', async () => {
    const { store } = await relaunchPending();
    await store.spawned('a', ...spawnArgs(100, { startTime: 777n }));
    await filler(store, 1000);
    const { state } = await reopen(store, { sync: 'none' });
    expect(await lineCount()).toBeLessThan(10); // compacted
    expect(state.processes.get('a')).toEqual({ ...launched('a', 1), ...spawnedFields(100, { startTime: 777n }) });
  });

  it('without compaction, a running relaunch that reuses the previous run\'s PID is live after a restart', async () => {
    const { store } = await relaunchPending();
    await store.spawned('a', ...spawnArgs(100, { startTime: 777n }));
    const { state } = await reopen(store, { sync: 'none' });
    expect(state.processes.get('a')).toEqual({ ...launched('a', 1), ...spawnedFields(100, { startTime: 777n }) });
  });

  // processToJson also writes `replaced: undefined`: the exited record a pending relaunch replaced is
  // not in the snapshot, so abandoning the launch after a restart cannot bring it back (it does
  // without compaction, see the test after next).
  it('keeps the exited record a pending relaunch replaced across compaction', async () => {
    const before = await relaunchPending();
    expect(before.state.processes.get('a')!.replaced).toEqual(firstRunOfA());
    await filler(before.store, 1000);
    const after = await reopen(before.store, { sync: 'none' });
    expect(await lineCount()).toBeLessThan(10); // compacted
    expect(after.state.processes).toEqual(before.state.processes);
  });

  it('without compaction, abandoning a pending relaunch after a restart brings the old exited record back', async () => {
    const { store } = await relaunchPending();
    await store.abandoned('a');
    const { state } = await reopen(store, { sync: 'none' });
    expect(state.processes.get('a')).toEqual(firstRunOfA());
  });

  it('after compaction, abandoning a pending relaunch brings the old exited record back', async () => {
    const { store } = await relaunchPending();
    await filler(store, 1000);
    const restarted = await reopen(store, { sync: 'none' });
    await restarted.store.abandoned('a');
    const { state } = await reopen(restarted.store, { sync: 'none' });
    expect(state.processes.get('a')).toEqual(firstRunOfA());
  });
});

describe('JournalStateStore: exits the journal cannot record (the sequence floor)', () => {
  const floorPath = () => join(root, 'run', 'exit-sequence-floor');
  const withFloor = () => ({ sequenceFloorPath: floorPath() });
  const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

  /** Makes every journal write fail with ENOSPC (FileHandle.write: the floor is written otherwise). */
  async function fillDisk() {
    const probe = await open(join(root, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => unknown };
    await probe.close();
    return jest.spyOn(proto, 'write').mockImplementation(() => Promise.reject(enospc()));
  }

  beforeEach(async () => {
    await mkdir(join(root, 'run'));
  });

  it('keeps the sequence of an exit it cannot journal before rejecting, and a reopened store numbers after it', async () => {
    const { store } = await openStore(withFloor());
    await store.launching('a', launch('a')).durable;
    await store.spawned('a', ...spawnArgs(100));
    await store.launching('b', launch('b', 1)).durable;
    await store.spawned('b', ...spawnArgs(200));
    await store.exited(exit(1, 'b', 200));
    const full = await fillDisk();
    let failure: unknown;
    try {
      failure = await rejectionOf(store.exited(exit(2, 'a', 100)));
    } finally {
      full.mockRestore();
    }
    expectVmprocError(failure, 'resource-exhausted', 'the state disk is full', journalPath());
    expect(await readFile(floorPath(), 'utf8')).toBe('2\n');
    expect(((await stat(floorPath())).mode & 0o777).toString(8)).toBe('600');

    const { state } = await reopen(store, withFloor());
    // The journal knows exit 1 only, and a live `a`, whose reaper will tell its exit again.
    expect({ lastSequence: state.lastSequence, sequenceFloor: state.sequenceFloor, exits: state.exits.map((e) => e.sequence) }).toEqual({ lastSequence: 2, sequenceFloor: 2, exits: [1] });
    expect(state.processes.get('a')?.exit).toBeUndefined();
  });

  it('removes the floor once a later exit is journalled: the journal is the record again', async () => {
    const { store } = await openStore(withFloor());
    const full = await fillDisk();
    try {
      await rejectionOf(store.exited(exit(4, 'a', 100)));
      await rejectionOf(store.exited(exit(5, 'b', 200)));
    } finally {
      full.mockRestore();
    }
    expect(await readFile(floorPath(), 'utf8')).toBe('5\n');
    await store.exited(exit(6, 'c', 300));
    const { state } = await reopen(store, withFloor());
    expect(existsSync(floorPath())).toBe(false);
    expect({ lastSequence: state.lastSequence, sequenceFloor: state.sequenceFloor }).toEqual({ lastSequence: 6, sequenceFloor: undefined });
  });

  it('ignores a floor the journal has passed, and leaves it until the next journalled exit', async () => {
    const { store } = await openStore(withFloor());
    await store.exited(exit(7, 'a', 100));
    await closeStore(store);
    await writeFile(floorPath(), '3\n');
    const reopened = await openStore(withFloor());
    expect({ lastSequence: reopened.state.lastSequence, sequenceFloor: reopened.state.sequenceFloor }).toEqual({ lastSequence: 7, sequenceFloor: undefined });
    await reopened.store.exited(exit(8, 'b', 200));
    await closeStore(reopened.store);
    expect(existsSync(floorPath())).toBe(false);
  });

  it('refuses a damaged floor file with failed-precondition naming it', async () => {
    await writeFile(floorPath(), 'twelve\n');
    expectVmprocError(await rejectionOf(openStore(withFloor())), 'failed-precondition', floorPath(), 'remove it to start anyway');
  });

  it('says so, keeping the journal\'s code, when the floor cannot be written either', async () => {
    const { store } = await openStore({ sequenceFloorPath: join(root, 'no-such-dir', 'floor') });
    const full = await fillDisk();
    let failure: unknown;
    try {
      failure = await rejectionOf(store.exited(exit(1, 'a', 100)));
    } finally {
      full.mockRestore();
    }
    expectVmprocError(failure, 'resource-exhausted', 'the state disk is full', 'nor could exit sequence 1 be kept in', 'new exits may reuse sequences');
  });

  it('keeps no floor without a path', async () => {
    const { store } = await openStore();
    const full = await fillDisk();
    try {
      expectVmprocError(await rejectionOf(store.exited(exit(1, 'a', 100))), 'resource-exhausted');
    } finally {
      full.mockRestore();
    }
    expect(existsSync(floorPath())).toBe(false);
  });
});

describe('JournalStateStore: events', () => {
  const event = (sequence: number, sandboxId: string, kind: ProcessEvent['kind'] = 'paused', extra: Partial<ProcessEvent> = {}): ProcessEvent => ({
    sequence,
    sandboxId,
    kind,
    time: new Date(T0 + sequence),
    labels: { team: 'a' },
    origin: 'vmm',
    pid: 100,
    ...extra,
  });

  it('keeps events across a reopen, EXITED with its exit, and the monitor offset on its process', async () => {
    const { store } = await openStore();
    await store.launching('a', launch('a')).written;
    await store.spawned('a', spawnedFields(100).identity, 0);
    await store.event(event(1, 'a', 'started', { origin: 'daemon' }));
    await store.event(event(2, 'a', 'snapshotted', { detail: { kind: 'snapshot', snapshotUrl: 'file:///s' } }), 640);
    const aExit = exit(1, 'a', 100);
    await store.exited(aExit);
    await store.event(event(3, 'a', 'exited', { origin: 'daemon', detail: { kind: 'exit', exit: aExit } }));
    const { state } = await reopen(store);
    expect(state.events).toEqual([
      event(1, 'a', 'started', { origin: 'daemon' }),
      event(2, 'a', 'snapshotted', { detail: { kind: 'snapshot', snapshotUrl: 'file:///s' } }),
      event(3, 'a', 'exited', { origin: 'daemon', detail: { kind: 'exit', exit: aExit } }),
    ]);
    expect(state.lastEventSequence).toBe(3);
    expect(state.processes.get('a')!.monitorOffset).toBe(640);
  });

  it('prunes to the event history at compaction, keeping the floors of what it dropped', async () => {
    const { store } = await openStore({ sync: 'none', eventHistoryLimit: 3 });
    for (let i = 1; i <= 10; i++) await store.event(event(i, i === 2 ? 'x' : 'y', i === 2 ? 'exited' : 'paused'));
    await Promise.all(Array.from({ length: 1000 }, () => store.booted('boot-2')));
    const { state } = await reopen(store, { sync: 'none', eventHistoryLimit: 3 });
    expect(state.events.map((e) => e.sequence)).toEqual([8, 9, 10]);
    expect(state.lastEventSequence).toBe(10);
    const floors = EventFloors.fromJson(state.eventFloors);
    expect(floors.floorFor({ sandboxIds: ['x'] })).toBe(2);
    expect(floors.floorFor({ kinds: ['exited'] })).toBe(2);
    expect(floors.floorFor({ sandboxIds: ['y'] })).toBe(7);
    expect(floors.floorFor({})).toBe(7);
  });
});
