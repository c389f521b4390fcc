/**
 * `npm run soak`: N start/stop cycles at concurrency C against the real daemon and the stand-in
 * VMM, the daemon SIGKILLed and restarted every K cycles (it re-adopts the VMMs it had; calls in
 * flight fail with UNAVAILABLE and are retried against the next daemon). One exit watcher follows
 * the whole soak across restarts with its cursor (after_sequence = the last sequence it saw).
 *
 * At the end it prints what was left behind (VMMs, reapers, mounts, sockets, exit records), gaps
 * and duplicates in the exit sequence, exits missing or repeated per VMM, and the daemon's RSS and
 * fd drift (first vs last sample taken at the same number of live VMMs). Exits non-zero if
 * anything leaked or any exit was lost or repeated. Needs root.
 *
 *   node dist/bench/soak.js [--cycles 10000] [--concurrency 16] [--kill-every 500 (0: never)] [--record]
 *
 * --record writes the command and its report into BENCHMARKS.md's "Soak" section.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { cpus, totalmem } from 'node:os';
import { type ServiceError, status } from '@grpc/grpc-js';
import { LaunchMode, ProcessState } from '../gen/vmprocess/v1/vmprocess_pb.js';
import { VmProcessClient } from '../src/client/vm-process-client.js';
import { createBenchEnv } from './lib/bench-env.js';
import { join } from 'node:path';
import { packageRoot } from '../src/package-paths.js';
import { leftoversUnder, residentAndFds } from './lib/soak-scan.js';
import { writeSoakSection } from './lib/soak-section.js';

const { values } = parseArgs({
  options: {
    cycles: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '16' },
    'kill-every': { type: 'string', default: '500' },
    record: { type: 'boolean', default: false },
  },
});
const cycles = Number(values.cycles);
const concurrency = Number(values.concurrency);
const killEvery = Number(values['kill-every']);
if (![cycles, concurrency, killEvery].every((n) => Number.isInteger(n) && n >= 0) || cycles < 1 || concurrency < 1) {
  throw new Error('--cycles and --concurrency must be positive integers, --kill-every a non-negative one');
}

const log = (text: string) => process.stderr.write(`${text}\n`);
const env = await createBenchEnv();
const code = (error: unknown) => (error as ServiceError).code;
// One client for the whole soak: its channel reconnects to each new daemon on the same socket.
const client = new VmProcessClient(env.address);
const call = { waitForReady: true, timeoutMs: 120_000 };

interface Sample { readonly atCycle: number; readonly generation: number; readonly live: number; readonly rssKiB: number; readonly fds: number }
const samples: Sample[] = [];
const exits = new Map<bigint, { sandboxId: string; pid: number }>();
let duplicates = 0;
let lastSequence = 0n;
let generation = 0;
let done = 0;
let nextCycle = 0;
let restarting: Promise<void> | undefined;
let retriedCalls = 0;
const restartMs: number[] = [];
const stopped: Array<{ sandboxId: string; pid: number }> = [];
const errors: string[] = [];
let finished = false;

/** Follows every exit across daemon restarts: after each break it resumes after the last sequence. */
const watching = (async () => {
  while (!finished) {
    const abort = new AbortController();
    const stopWhenFinished = setInterval(() => finished && abort.abort(), 200);
    try {
      for await (const exit of client.watchExits({ afterSequence: lastSequence }, { signal: abort.signal, waitForReady: true })) {
        if (exits.has(exit.sequence) || exit.sequence <= lastSequence) duplicates++;
        exits.set(exit.sequence, { sandboxId: exit.sandboxId, pid: exit.pid });
        if (exit.sequence > lastSequence) lastSequence = exit.sequence;
      }
    } catch (error) {
      if (code(error) !== status.UNAVAILABLE && code(error) !== status.CANCELLED) errors.push(`watch: ${String(error)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    } finally {
      clearInterval(stopWhenFinished);
    }
  }
})();

async function sample(): Promise<void> {
  try {
    const live = (await client.listProcesses({ states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] }, { timeoutMs: 10_000 })).processes.length;
    samples.push({ atCycle: done, generation, live, ...(await residentAndFds(env.daemonPid())) });
  } catch {
    // the daemon is being restarted: the next sample
  }
}

/** SIGKILL, then a new daemon on the same state; resolves once it serves. */
function restart(): Promise<void> {
  restarting ??= (async () => {
    await env.stopDaemon('SIGKILL');
    const t = performance.now();
    await env.startDaemon();
    restartMs.push(performance.now() - t);
    generation++;
  })().finally(() => {
    restarting = undefined;
  });
  return restarting;
}

/** Retries a call that failed because the daemon was killed under it, against the next one. */
async function retrying<T>(work: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await work();
    } catch (error) {
      if (code(error) !== status.UNAVAILABLE) throw error;
      retriedCalls++;
      await restarting;
    }
  }
}

async function cycle(i: number): Promise<void> {
  const sandboxId = `k${i}`;
  try {
    await retrying(() => client.startProcess({ sandboxId, mode: LaunchMode.BOOT, kernelPath: env.kernelPath, rootfsPath: env.rootfsPath, networkNamespace: env.netns, readyTimeout: { seconds: 30n } }, call));
  } catch (error) {
    // A start the kill interrupted lives on in the next daemon (re-adopted): stopping it is the cycle's end.
    if (code(error) !== status.ALREADY_EXISTS) errors.push(`start ${sandboxId}: ${status[code(error)] ?? ''} ${(error as ServiceError).details ?? String(error)}`);
  }
  try {
    const { process: info } = await retrying(() => client.stopProcess({ sandboxId, gracePeriod: { seconds: 5n } }, call));
    stopped.push({ sandboxId, pid: info!.pid });
  } catch (error) {
    errors.push(`stop ${sandboxId}: ${status[code(error)] ?? ''} ${(error as ServiceError).details ?? String(error)}`);
  }
}

async function worker(): Promise<void> {
  while (nextCycle < cycles) {
    const i = nextCycle++;
    await cycle(i);
    const count = ++done;
    if (killEvery > 0 && count % killEvery === 0 && count < cycles) void restart();
    if (count % 1000 === 0) log(`  ${count}/${cycles} cycles, ${generation} restarts, ${exits.size} exits`);
    if (count % 100 === 0) await sample();
  }
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
const command = `npm run soak -- --cycles ${cycles} --concurrency ${concurrency} --kill-every ${killEvery}${values.record ? " --record" : ""}`;
let failed = false;
try {
  await env.startDaemon([], { fresh: true });
  log(`soak: ${command}`);
  const t = performance.now();
  await sample();
  await Promise.all(Array.from({ length: concurrency }, worker));
  await restarting;
  const wallS = (performance.now() - t) / 1000;
  await sample();
  // Every exit is in: wait for the watcher to have the last one, then stop it.
  const expected = (await client.listProcesses({}, { timeoutMs: 30_000 })).exitSequence;
  for (let waited = 0; lastSequence < expected && waited < 200; waited++) await new Promise((resolve) => setTimeout(resolve, 50));
  finished = true;
  await watching;

  const liveAtEnd = (await client.listProcesses({ states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] })).processes.length;
  const beforeStop = await leftoversUnder(env.root, env.runDir);
  await env.stopDaemon('SIGTERM');
  const afterStop = await leftoversUnder(env.root, env.runDir);

  const sequences = [...exits.keys()].sort((a, b) => (a < b ? -1 : 1));
  const gaps: string[] = [];
  for (let i = 1; i < sequences.length; i++) if (sequences[i]! !== sequences[i - 1]! + 1n) gaps.push(`${sequences[i - 1]}..${sequences[i]}`);
  if (sequences[0] !== undefined && sequences[0] !== 1n) gaps.unshift(`0..${sequences[0]}`);
  const perVmm = new Map<string, number>();
  for (const { sandboxId, pid } of exits.values()) perVmm.set(`${sandboxId}/${pid}`, (perVmm.get(`${sandboxId}/${pid}`) ?? 0) + 1);
  const repeatedPerVmm = [...perVmm].filter(([, n]) => n > 1).map(([key]) => key);
  const missing = stopped.filter(({ sandboxId, pid }) => !perVmm.has(`${sandboxId}/${pid}`)).map(({ sandboxId, pid }) => `${sandboxId}/${pid}`);

  // Drift: the last sample against the first with the same number of live VMMs.
  // Of the live counts sampled both early and late, the one whose first and last samples lie
  // furthest apart. (The sample before the first cycle is of an idle daemon: not a baseline.)
  const working = samples.filter((s) => s.atCycle > 0);
  let first = samples.at(-1)!;
  let last = first;
  for (const candidate of working) {
    const later = working.findLast((s) => s.live === candidate.live)!;
    if (later.atCycle - candidate.atCycle > last.atCycle - first.atCycle) [first, last] = [candidate, later];
  }
  const drift = `RSS ${(first.rssKiB / 1024).toFixed(1)} -> ${(last.rssKiB / 1024).toFixed(1)} MiB, fds ${first.fds} -> ${last.fds} ` +
    `(at ${last.live} live VMMs: cycle ${first.atCycle}, daemon #${first.generation} vs cycle ${last.atCycle}, daemon #${last.generation})`;
  const lastLife = samples.filter((s) => s.generation === samples.at(-1)!.generation);
  const within = lastLife.length > 1 ? `${(lastLife[0]!.rssKiB / 1024).toFixed(1)} -> ${(lastLife.at(-1)!.rssKiB / 1024).toFixed(1)} MiB, fds ${lastLife[0]!.fds} -> ${lastLife.at(-1)!.fds} over ${lastLife.length} samples` : 'one sample';
  const peak = samples.reduce((a, b) => (b.rssKiB > a.rssKiB ? b : a));
  const list = (items: readonly string[]) => (items.length === 0 ? '0' : `${items.length}: ${items.slice(0, 5).join('; ')}${items.length > 5 ? ' ...' : ''}`);
  const report = [
    `machine: ${machine}; ${new Date().toISOString().slice(0, 10)}`,
    `cycles: ${done} in ${wallS.toFixed(1)} s (${(done / wallS).toFixed(0)}/s), concurrency ${concurrency}; daemon SIGKILLed and restarted ${generation} times (every ${killEvery || 'never'} cycles), restart to serving p50 ${median(restartMs).toFixed(0)} ms, max ${Math.max(0, ...restartMs).toFixed(0)} ms`,
    `calls retried after a kill (UNAVAILABLE): ${retriedCalls}; other call errors: ${list(errors)}`,
    `exits seen by one watcher across restarts: ${exits.size} (sequences ${sequences[0] ?? '-'}..${sequences.at(-1) ?? '-'}); gaps: ${list(gaps)}; duplicates: ${duplicates}`,
    `VMMs stopped: ${stopped.length}; without an exit: ${list(missing)}; with more than one: ${list(repeatedPerVmm)}`,
    `live at the end: ${liveAtEnd}; with the daemon still up: leaked VMMs ${list(beforeStop.vmms)}, reapers ${list(beforeStop.reapers)}, mounts ${list(beforeStop.mounts)}, sockets ${list(beforeStop.sockets)}, status files ${list(beforeStop.statusFiles)}`,
    `after SIGTERM of the daemon: VMMs ${list(afterStop.vmms)}, reapers ${list(afterStop.reapers)}, mounts ${list(afterStop.mounts)}, sockets ${list(afterStop.sockets)}, status files ${list(afterStop.statusFiles)}`,
    `daemon drift: ${drift}; within the last daemon's life: ${within}; peak RSS ${(peak.rssKiB / 1024).toFixed(1)} MiB at cycle ${peak.atCycle}`,
  ];
  process.stdout.write(`${report.join('\n')}\n`);
  // For each leaked socket or lock file, what the daemons logged about its sandbox.
  const daemonLog = await readFile(join(env.root, 'daemon.log'), 'utf8').catch(() => '');
  for (const name of afterStop.sockets.slice(0, 3)) {
    const sandboxId = name.replace(/\.sock(\.lock)?$/, '');
    const lines = daemonLog.split('\n').filter((line) => line.includes(`"sandboxId":"${sandboxId}"`));
    log(`daemon log about ${sandboxId} (left ${name}):\n  ${lines.slice(0, 12).join('\n  ')}`);
  }
  if (values.record) {
    await writeSoakSection(join(packageRoot, 'BENCHMARKS.md'), [
      '## Soak',
      '',
      `Command: \`${command}\` (as root): start/stop cycles of the stand-in VMM through the real daemon, which is`,
      'SIGKILLed and restarted every `--kill-every` cycles and re-adopts its VMMs; one exit watcher follows every',
      'restart with its cursor. Drift compares the first and last samples (one each 100 cycles) taken at the same',
      'number of live VMMs. A restarted daemon reloads the exits it retains (`--exit-history`, 10,000 by default)',
      'from its journal, so its RSS grows with that history until the history is full. Its output:',
      '',
      '```',
      ...report,
      '```',
    ].join('\n'));
  }
  const leaked = [beforeStop, afterStop].some((l) => Object.values(l).some((items: string[]) => items.length > 0));
  failed = leaked || gaps.length > 0 || duplicates > 0 || missing.length > 0 || repeatedPerVmm.length > 0 || errors.length > 0 || liveAtEnd > 0;
} finally {
  finished = true;
  client.close();
  await env.dispose();
}
process.exitCode = failed ? 1 : 0;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? 0 : sorted[Math.floor(sorted.length / 2)]!;
}
