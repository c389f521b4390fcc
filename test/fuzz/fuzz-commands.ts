/**
 * The fuzz test's commands: every RPC of VmProcessService with random and boundary values, as
 * fast-check commands over a World (fuzz-world.ts). Each awaits its call (or, for some starts and
 * stops, leaves it in flight, so calls overlap), checks the status against what the RPC
 * documents and what the model knows, and updates the model.
 */
import fc from 'fast-check';
import { status } from '@grpc/grpc-js';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { AfterSnapshot, LaunchMode, type ProcessExit, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import type { StandinKnobs } from '../helpers/sandbox-fixture.js';
import type { World } from './fuzz-world.js';

type Command = fc.AsyncCommand<World, World>;

/**
 * Nothing a command sends may take this long: the longest legitimate wait is a 10 s grace period
 * and its SIGKILL. A command still running then is a hang, and fails the run.
 */
const COMMAND_LIMIT_MS = 45_000;

/** A command from a description and a body; always applicable (the World copes with any order). */
function command(describe: string, run: (w: World) => Promise<void>): Command {
  return {
    check: () => true,
    run: async (_model, world) => {
      let timer: NodeJS.Timeout | undefined;
      const hung = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${describe} did not finish within ${COMMAND_LIMIT_MS / 1000}s`)), COMMAND_LIMIT_MS);
      });
      try {
        await Promise.race([run(world), hung]);
      } catch (error) {
        if ((error as Error).message?.endsWith('did not finish within 45s')) world.fail((error as Error).message);
        throw error;
      } finally {
        clearTimeout(timer);
      }
    },
    toString: () => describe,
  };
}

const MAX_SECONDS = 9_223_372_036_854_775_807n;
const UINT32_MAX = 4_294_967_295;
const UINT64_MAX = 18_446_744_073_709_551_615n;

// ------------------------------------------------------------------------------------------------
// Values
// ------------------------------------------------------------------------------------------------

/** Index into the run's pool (mostly), or a hostile sandbox ID. */
const target = fc.oneof(
  { weight: 12, arbitrary: fc.nat({ max: 3 }).map((i) => ({ pool: i })) },
  { weight: 1, arbitrary: fc.constantFrom('', 'x'.repeat(64), '../etc', 'vmprocd', 'ünïcode', 'a b', '-lead', 'a'.repeat(63)).map((raw) => ({ raw })) },
);
type Target = { pool: number } | { raw: string };
const idOf = (w: World, t: Target) => ('pool' in t ? w.pool[t.pool]! : t.raw);
const show = (t: Target) => ('pool' in t ? `#${t.pool}` : JSON.stringify(t.raw));

const duration = fc.constantFrom(
  undefined,
  { seconds: 0n },
  { seconds: 0n, nanos: 1 },
  { seconds: 0n, nanos: 20_000_000 },
  { seconds: 0n, nanos: 300_000_000 },
  { seconds: 2n },
  { seconds: 600n },
  { seconds: 600n, nanos: 1 },
  { seconds: 3600n, nanos: 1 },
  { seconds: -1n },
  { seconds: 0n, nanos: -1 },
  { seconds: MAX_SECONDS },
);

/**
 * A grace period: boundary and invalid values, and valid ones short enough that a VMM ignoring
 * SIGTERM does not hold the run for long (the default, 10 s, rarely).
 */
const grace = fc.oneof(
  { weight: 1, arbitrary: fc.constant(undefined) },
  {
    weight: 12,
    arbitrary: fc.constantFrom(
      { seconds: 0n },
      { seconds: 0n, nanos: 1 },
      { seconds: 0n, nanos: 20_000_000 },
      { seconds: 0n, nanos: 300_000_000 },
      { seconds: 3600n, nanos: 1 },
      { seconds: -1n },
      { seconds: 0n, nanos: -1 },
      { seconds: 0n, nanos: 1_000_000_000 },
      { seconds: MAX_SECONDS },
    ),
  },
);

const knobs: fc.Arbitrary<StandinKnobs> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({}) },
  { weight: 1, arbitrary: fc.record({ crash_after_ms: fc.integer({ min: 0, max: 400 }) }) },
  { weight: 1, arbitrary: fc.record({ exit_before_socket: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 1, arbitrary: fc.record({ socket_delay_ms: fc.integer({ min: 0, max: 400 }) }) },
  { weight: 1, arbitrary: fc.record({ ignore_sigterm: fc.constant(1 as const) }) },
  { weight: 1, arbitrary: fc.record({ stderr_lines: fc.integer({ min: 0, max: 60 }) }) },
  { weight: 1, arbitrary: fc.record({ restore_error: fc.constant('no such snapshot'), restore_delay_ms: fc.integer({ min: 0, max: 200 }) }) },
  { weight: 1, arbitrary: fc.record({ ping_delay_ms: fc.integer({ min: 0, max: 200 }), crash_signal: fc.constantFrom('SEGV', 'KILL', 'ABRT') }) },
);

const labels = fc.oneof(
  { weight: 6, arbitrary: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9]{0,6}$/), fc.string({ maxLength: 20 }), { maxKeys: 3 }) },
  { weight: 1, arbitrary: fc.constant(Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']))) },
  { weight: 1, arbitrary: fc.constant({ 'bad key': 'v' }) },
  { weight: 1, arbitrary: fc.constant({ big: 'x'.repeat(1025) }) },
  { weight: 1, arbitrary: fc.constant({ ok: '\u001b[31mred\u0000' }) },
);

const vm = fc.option(
  fc.record({
    vcpus: fc.constantFrom(0, 1, 2, 254, 255),
    maxVcpus: fc.constantFrom(0, 1, 4, 255),
    memoryMib: fc.constantFrom(0n, 1n, 64n, UINT64_MAX),
    maxMemoryMib: fc.constantFrom(0n, 128n),
  }),
  { freq: 3 },
);

const socketChoice = fc.constantFrom('default', 'default', 'default', 'shared', 'pool-neighbour', '/etc/fuzz.sock', 'relative.sock', 'long');

function socketPath(w: World, choice: string, sandboxId: string): string | undefined {
  const runDir = w.host.fixture.runDir;
  switch (choice) {
    case 'shared': return `${runDir}/${w.tag}-shared.sock`;
    case 'pool-neighbour': return `${runDir}/${w.pool[(w.pool.indexOf(sandboxId) + 1) % w.pool.length]}.sock`;
    case 'long': return `${runDir}/${'s'.repeat(120)}.sock`;
    case 'default': return undefined;
    default: return choice;
  }
}

// ------------------------------------------------------------------------------------------------
// Process RPCs
// ------------------------------------------------------------------------------------------------

/** A start: mostly well-formed (so the pool fills up), else with every field drawn from its hostile range. */
const startParams = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      wellFormed: fc.constant(true),
      t: fc.nat({ max: 3 }).map((i): Target => ({ pool: i })),
      mode: fc.constantFrom(LaunchMode.BOOT, LaunchMode.BOOT, LaunchMode.BOOT, LaunchMode.RESTORE),
      knobs,
      readyTimeout: fc.constantFrom(undefined, { seconds: 2n }),
      labels: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9]{0,6}$/), fc.string({ maxLength: 20 }), { maxKeys: 3 }),
      vm: fc.oneof({ weight: 1, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.record({ vcpus: fc.constantFrom(1, 2), maxVcpus: fc.constantFrom(2, 4), memoryMib: fc.constantFrom(32n, 64n), maxMemoryMib: fc.constantFrom(64n, 128n) }) }),
      socket: fc.constant('default'),
      restore: fc.constantFrom('none', 'snapshot'),
      inFlight: fc.boolean(),
      cancelAfterMs: fc.oneof({ weight: 9, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 60 }) }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      wellFormed: fc.constant(false),
      t: target,
      mode: fc.constantFrom(LaunchMode.BOOT, LaunchMode.BOOT, LaunchMode.RESTORE, LaunchMode.UNSPECIFIED, 7 as LaunchMode),
      knobs,
      readyTimeout: duration,
      labels,
      vm,
      socket: socketChoice,
      restore: fc.constantFrom('none', 'none', 'snapshot', 'missing', 'etc'),
      inFlight: fc.boolean(),
      cancelAfterMs: fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 60 }) }),
    }),
  },
);

const start = startParams
  .map((p) => command(`StartProcess(${show(p.t)} mode=${p.mode} knobs=${JSON.stringify(p.knobs)} ready=${JSON.stringify(p.readyTimeout, big)} vm=${JSON.stringify(p.vm, big)} socket=${p.socket} restore=${p.restore}${p.inFlight ? ' in flight' : ''}${p.cancelAfterMs !== null ? ` cancel@${p.cancelAfterMs}ms` : ''})`, async (w) => {
    const sandboxId = idOf(w, p.t);
    const restoreUrl = p.wellFormed && p.mode !== LaunchMode.RESTORE ? undefined : p.restore === 'snapshot' ? w.snapshots.at(-1) ?? 'file:///nonexistent' : p.restore === 'missing' ? `file://${w.host.snapsDir}/none` : p.restore === 'etc' ? 'file:///etc' : undefined;
    const request = {
      sandboxId,
      mode: p.mode,
      ...(p.mode !== LaunchMode.RESTORE ? { kernelPath: w.host.fixture.kernelPath } : {}),
      rootfsPath: await w.host.fixture.rootfs(w.unique('rootfs'), p.knobs),
      networkNamespace: w.host.netns,
      labels: p.labels,
      ...(socketPath(w, p.socket, sandboxId) !== undefined ? { socketPath: socketPath(w, p.socket, sandboxId) } : {}),
      ...(p.readyTimeout ? { readyTimeout: p.readyTimeout } : {}),
      ...(p.vm ? { vm: p.vm } : {}),
      ...(restoreUrl ? { restore: { sourceUrl: restoreUrl } } : {}),
    };
    const abort = new AbortController();
    const timer = p.cancelAfterMs !== null ? setTimeout(() => abort.abort(), p.cancelAfterMs) : undefined;
    w.attempted.add(sandboxId);
    w.attempts.set(sandboxId, (w.attempts.get(sandboxId) ?? 0) + 1);
    const done = w.call('startProcess', `${sandboxId}`, w.client.startProcess(request, { signal: abort.signal })).then((outcome) => {
      clearTimeout(timer);
      if (outcome.ok) {
        const info = outcome.value.process!;
        if (info.state !== ProcessState.RUNNING && info.state !== ProcessState.EXITED) w.fail(`StartProcess ${sandboxId} returned OK in state ${ProcessState[info.state]}`);
        w.everStarted.add(sandboxId);
        w.host.started.push({ sandboxId, pid: info.pid, startedAtMs: timestampMs(info.startedAt!) });
      } else if (outcome.code === status.ALREADY_EXISTS && w.pool.includes(sandboxId) && w.attempts.get(sandboxId) === 1) {
        // (Another start of the ID, even one issued later, may have reserved it first.)
        w.fail(`StartProcess ${sandboxId}: ALREADY_EXISTS, and no other start of it was ever made`);
      }
    });
    if (p.inFlight) w.pending.push(done);
    else await done;
  }));

/** For the run's own IDs: found once a start returned OK; never found before any start. */
function expectFound(w: World, rpc: string, sandboxId: string, outcome: { ok: boolean; code?: status }): void {
  if (!w.pool.includes(sandboxId)) return;
  if (!outcome.ok && outcome.code === status.NOT_FOUND && w.everStarted.has(sandboxId)) w.fail(`${rpc} ${sandboxId}: NOT_FOUND after a start of it returned OK`);
  if (outcome.ok && !w.attempted.has(sandboxId)) w.fail(`${rpc} ${sandboxId}: OK for an ID this run never started`);
}

const stop = fc
  .record({ t: target, grace, inFlight: fc.boolean() })
  .map((p) => command(`StopProcess(${show(p.t)} grace=${JSON.stringify(p.grace, big)}${p.inFlight ? ' in flight' : ''})`, async (w) => {
    const sandboxId = idOf(w, p.t);
    const done = w.call('stopProcess', sandboxId, w.client.stopProcess({ sandboxId, ...(p.grace ? { gracePeriod: p.grace } : {}) })).then((outcome) => {
      // An in-flight start may not have reserved its ID yet.
      if (!p.inFlight && w.pending.length === 0) expectFound(w, 'StopProcess', sandboxId, outcome);
      if (outcome.ok && outcome.value.process!.state !== ProcessState.EXITED) w.fail(`StopProcess ${sandboxId} returned ${ProcessState[outcome.value.process!.state]}`);
    });
    if (p.inFlight) w.pending.push(done);
    else await done;
  }));

const signal = fc
  .record({ t: target, signal: fc.constantFrom('USR1', 'SIGUSR2', 'term', 'SIGKILL', 'HUP', 'bogus', '', 'SIGCONT', '9', 'sigterm') })
  .map((p) => command(`SignalProcess(${show(p.t)} ${JSON.stringify(p.signal)})`, async (w) => {
    await w.call('signalProcess', idOf(w, p.t), w.client.signalProcess({ sandboxId: idOf(w, p.t), signal: p.signal }));
  }));

const get = target.map((t) => command(`GetProcess(${show(t)})`, async (w) => {
  const sandboxId = idOf(w, t);
  const outcome = await w.call('getProcess', sandboxId, w.client.getProcess({ sandboxId }));
  if (w.pending.length === 0) expectFound(w, 'GetProcess', sandboxId, outcome);
}));

const list = fc
  .record({
    states: fc.subarray([ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING, ProcessState.EXITED, ProcessState.UNSPECIFIED, 9 as ProcessState], { maxLength: 2 }),
    pageSize: fc.constantFrom(0, 1, 2, 1000, 1001, UINT32_MAX),
    token: fc.constantFrom('follow', 'follow', 'forged', 'other-filters'),
  })
  .map((p) => command(`ListProcesses(states=${p.states} pageSize=${p.pageSize} token=${p.token})`, async (w) => {
    const first = await w.call('listProcesses', 'first page', w.client.listProcessesPage({ states: p.states, pageSize: p.pageSize }));
    if (!first.ok) return;
    let token = first.value.nextPageToken;
    const sequence = first.value.exitSequence;
    for (let pages = 0; token && pages < 5; pages++) {
      const request = p.token === 'forged' ? { pageToken: `${token}x` } : p.token === 'other-filters' ? { pageToken: token, states: [ProcessState.EXITED, ProcessState.RUNNING] } : { pageToken: token, states: p.states, pageSize: p.pageSize };
      const next = await w.call('listProcesses', 'next page', w.client.listProcessesPage(request));
      if (!next.ok) return;
      if (next.value.exitSequence !== sequence) w.fail(`ListProcesses: a later page has exit_sequence ${next.value.exitSequence}, the first ${sequence}`);
      token = next.value.nextPageToken;
    }
  }));

// ------------------------------------------------------------------------------------------------
// Streams
// ------------------------------------------------------------------------------------------------

const openWatch = fc
  .record({ after: fc.constantFrom('none', 'zero', 'latest', 'future', 'huge'), filter: fc.boolean() })
  .map((p) => command(`WatchExits(after=${p.after} filter=${p.filter})`, async (w) => {
    if (w.streams.length >= 8) return;
    const latest = w.host.recorder.lastSequence;
    const after = { none: undefined, zero: 0n, latest, future: latest + 1000n, huge: UINT64_MAX }[p.after];
    const request = { ...(after !== undefined ? { afterSequence: after } : {}), ...(p.filter ? { sandboxIds: [w.pool[0]!, w.pool[1]!] } : {}) };
    const abort = new AbortController();
    const exits: ProcessExit[] = [];
    const label = `WatchExits(${JSON.stringify(request, big)})`;
    const done = (async () => {
      try {
        for await (const exit of w.client.watchExits(request, { signal: abort.signal })) {
          const previous = exits.at(-1);
          if (previous && exit.sequence <= previous.sequence) w.fail(`${label}: sequence ${exit.sequence} after ${previous.sequence}`);
          if (!p.filter && after !== undefined && exit.sequence !== (previous?.sequence ?? after) + 1n) w.fail(`${label}: sequence ${exit.sequence} after ${previous?.sequence ?? after} (a gap)`);
          exits.push(exit);
        }
        // Only the cancel ends a watch: it never ends on its own while the daemon runs.
        if (!abort.signal.aborted) w.fail(`${label} ended on its own`);
        await w.call('watchExits', label, Promise.resolve());
      } catch (error) {
        if (!abort.signal.aborted) await w.call('watchExits', label, Promise.reject(error)).catch(() => undefined);
      }
    })();
    w.streams.push({ kind: 'watch', label, abort, done, exits });
  }));

const streamLogs = fc
  .record({ t: target, tail: fc.constantFrom(0, 1, 5, UINT32_MAX), follow: fc.boolean(), readMs: fc.integer({ min: 0, max: 150 }) })
  .map((p) => command(`StreamLogs(${show(p.t)} tail=${p.tail} follow=${p.follow} for ${p.readMs}ms)`, async (w) => {
    const sandboxId = idOf(w, p.t);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), p.readMs);
    try {
      for await (const chunk of w.client.streamLogs({ sandboxId, tailLines: p.tail, follow: p.follow }, { signal: abort.signal })) {
        if (chunk.data.length === 0 || chunk.data.length > 65_536) w.fail(`StreamLogs ${sandboxId}: a message of ${chunk.data.length} bytes`);
      }
      await w.call('streamLogs', sandboxId, Promise.resolve());
    } catch (error) {
      if (!abort.signal.aborted) await w.call('streamLogs', sandboxId, Promise.reject(error));
    } finally {
      clearTimeout(timer);
    }
  }));

const closeStream = fc.nat({ max: 7 }).map((i) => command(`close stream ${i}`, async (w) => {
  const stream = w.streams.splice(i % Math.max(1, w.streams.length), 1)[0];
  if (!stream) return;
  stream.abort.abort();
  await stream.done;
}));

// ------------------------------------------------------------------------------------------------
// VM RPCs
// ------------------------------------------------------------------------------------------------

const vmCall = fc
  .record({ t: target, rpc: fc.constantFrom('pauseVm', 'resumeVm', 'getVmInfo', 'getVmCounters') })
  .map((p) => command(`${p.rpc}(${show(p.t)})`, async (w) => {
    const sandboxId = idOf(w, p.t);
    const rpc = p.rpc as 'pauseVm' | 'resumeVm' | 'getVmInfo' | 'getVmCounters';
    await w.call(rpc, sandboxId, (w.client[rpc] as (r: { sandboxId: string }) => Promise<unknown>)({ sandboxId }));
  }));

const snapshot = fc
  .record({ t: target, where: fc.constantFrom('new', 'new', 'existing', '/etc', 'relative', 'http', 'sandbox'), after: fc.constantFrom(AfterSnapshot.RESUME, AfterSnapshot.STAY_PAUSED, AfterSnapshot.STOP, AfterSnapshot.UNSPECIFIED, 9 as AfterSnapshot) })
  .map((p) => command(`SnapshotVm(${show(p.t)} to ${p.where} then ${p.after})`, async (w) => {
    const sandboxId = idOf(w, p.t);
    const snaps = w.host.snapsDir;
    const destinationUrl = {
      new: `file://${snaps}/${w.unique('snap')}`,
      existing: `file://${snaps}`,
      '/etc': 'file:///etc/fuzz-snap',
      relative: 'file://snap',
      http: 'http://localhost/snap',
      sandbox: `file://${w.host.fixture.sandboxDir}/snap`,
    }[p.where]!;
    const outcome = await w.call('snapshotVm', sandboxId, w.client.snapshotVm({ sandboxId, destinationUrl, afterSnapshot: p.after }));
    if (outcome.ok) w.snapshots.push(outcome.value.snapshotUrl);
  }));

const resize = fc
  .record({
    t: target,
    vcpus: fc.option(fc.constantFrom(0, 1, 2, 3, 255, UINT32_MAX)),
    memoryMib: fc.option(fc.constantFrom(0n, 1n, 64n, 128n, UINT64_MAX)),
    balloonMib: fc.option(fc.constantFrom(0n, 16n, UINT64_MAX)),
  })
  .map((p) => command(`ResizeVm(${show(p.t)} vcpus=${p.vcpus} memory=${p.memoryMib} balloon=${p.balloonMib})`, async (w) => {
    const sandboxId = idOf(w, p.t);
    await w.call('resizeVm', sandboxId, w.client.resizeVm({
      sandboxId,
      ...(p.vcpus !== null ? { vcpus: p.vcpus } : {}),
      ...(p.memoryMib !== null ? { memoryMib: p.memoryMib } : {}),
      ...(p.balloonMib !== null ? { balloonMib: p.balloonMib } : {}),
    }));
  }));

/** Every command, weighted so that starts keep the pool populated. */
export const COMMANDS: Array<fc.Arbitrary<Command>> = [start, start, start, start, stop, stop, signal, get, list, openWatch, closeStream, streamLogs, vmCall, vmCall, snapshot, resize];

function big(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `${value}` : value;
}
