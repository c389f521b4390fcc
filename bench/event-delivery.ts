/**
 * `npm run bench:events`: how long a change inside a VMM takes to reach WatchEvents watchers (1 and
 * 100), beside a bare grpc-js stream between two processes measured in the same run, with where the
 * time goes. The change is made out of band, as a guest or an operator would: `PUT vm.pause` and
 * `vm.resume` straight on the VMM's socket, so what is measured is the event monitor path (the VMM
 * writes its event file, the daemon sees it by inotify, parses it, journals the event, fans it out).
 *   node dist/bench/event-delivery.js [--quick]
 */
import { fork } from 'node:child_process';
import { watch } from 'node:fs';
import { copyFile, open, readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LaunchMode } from '../gen/vmprocess/v1/vmprocess_pb.js';
import { nativeBin, packageRoot } from '../src/package-paths.js';
import { type Row, streamFloor } from './benchmarks.js';
import { type BenchEnv, createBenchEnv } from './lib/bench-env.js';
import { fmt, monotonicMs, summarize, type Summary } from './lib/stats.js';
import { loadAverage, machineDescription, renderTable, updateSection } from './lib/report.js';

const quick = process.argv.includes('--quick');
const samples = quick ? 40 : 200;
const METRICS_PORT = 9477;

/** PUT /api/v1/<action> on the VMM's socket; resolves with the status once the answer is in. */
function put(socketPath: string, action: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method: 'PUT', path: `/api/v1/${action}`, headers: { 'Content-Length': 0 } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The VMM's event monitor file: `<run>/exits/<id>.<launch>.status.events`. */
async function eventFileOf(env: BenchEnv, sandboxId: string): Promise<string> {
  const dir = join(env.runDir, 'exits');
  const name = (await readdir(dir)).find((entry) => entry.startsWith(`${sandboxId}.`) && entry.endsWith('.status.events'));
  if (!name) throw new Error(`no event monitor file of ${sandboxId} in ${dir}`);
  return join(dir, name);
}

/** The mean of a Prometheus histogram series, from the daemon's metrics endpoint. */
async function histogramMean(name: string, labels: string): Promise<{ mean: number; count: number }> {
  const text = await (await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`)).text();
  const value = (suffix: string) => Number(new RegExp(`^${name}_${suffix}\\{${labels}\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { mean: value('sum') / value('count'), count: value('count') };
}

interface Delivery {
  readonly delivery: Summary;
  readonly rest: Summary;
  readonly monitorSeen: Summary;
  /** Per event: its arrival minus when its write to the event file was seen (the daemon's part and the transport). */
  readonly afterSeen: Summary;
}

/** N watchers of one VM's PAUSED/RESUMED; `samples` out-of-band changes, alternately pause and resume. */
async function deliver(env: BenchEnv, sandboxId: string, socketPath: string, watchers: number): Promise<Delivery> {
  const processes = Math.min(4, watchers);
  const perProcess = Math.ceil(watchers / processes);
  const workers = Array.from({ length: processes }, (_, i) =>
    fork(join(import.meta.dirname, 'event-watchers.js'), [env.address, String(Math.min(perProcess, watchers - i * perProcess)), sandboxId], { stdio: 'inherit' }),
  );
  let complete = 0;
  let wake: (() => void) | undefined;
  await Promise.all(workers.map((worker) => new Promise<void>((resolve) => {
    worker.on('message', (message: { type: string }) => {
      if (message.type === 'ready') resolve();
      if (message.type === 'all') {
        complete++;
        wake?.();
      }
    });
  })));

  // Beside the daemon, in this process: when the VMM's write to its event file is visible (inotify).
  const eventFile = await eventFileOf(env, sandboxId);
  const file = await open(eventFile, 'r');
  let size = (await file.stat()).size;
  let seenAt: number | undefined;
  const watcher = watch(eventFile, () => {
    const at = monotonicMs();
    void file.stat().then((stat) => {
      if (stat.size > size && seenAt === undefined) seenAt = at;
      size = stat.size;
    });
  });

  const changedAt: number[] = [];
  const seenAtOf: number[] = [];
  const rest: number[] = [];
  const monitorSeen: number[] = [];
  for (let i = 0; i < samples; i++) {
    await sleep(5);
    seenAt = undefined;
    const before = complete;
    const t0 = monotonicMs();
    changedAt.push(t0);
    const status = await put(socketPath, i % 2 === 0 ? 'vm.pause' : 'vm.resume');
    rest.push(monotonicMs() - t0);
    if (status !== 204) throw new Error(`the VMM answered ${status} to a ${i % 2 === 0 ? 'pause' : 'resume'}`);
    const deadline = Date.now() + 10_000;
    while (complete < before + workers.length || seenAt === undefined) {
      if (Date.now() > deadline) throw new Error(`event ${i} did not reach every watcher`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 20);
      });
    }
    monitorSeen.push(seenAt - t0);
    seenAtOf.push(seenAt);
  }
  watcher.close();
  await file.close();

  const latencies: number[] = [];
  const afterSeen: number[] = [];
  for (const worker of workers) {
    const report = await new Promise<Record<string, number[]>>((resolve) => {
      worker.on('message', (message: { type: string; arrivals?: Record<string, number[]> }) => {
        if (message.type === 'report') resolve(message.arrivals!);
      });
      worker.send({ type: 'report' });
    });
    // Sequences in arrival order are the changes in the order they were made.
    const sequences = Object.keys(report).map(Number).sort((a, b) => a - b);
    sequences.forEach((sequence, i) => {
      for (const at of report[String(sequence)]!) {
        latencies.push(at - changedAt[i]!);
        afterSeen.push(at - seenAtOf[i]!);
      }
    });
  }
  return { delivery: summarize(latencies), rest: summarize(rest), monitorSeen: summarize(monitorSeen), afterSeen: summarize(afterSeen) };
}

const loadAtStart = loadAverage();
const env = await createBenchEnv();
const rows: Row[] = [];
const notes: string[] = [];
const log = (text: string) => process.stderr.write(`${text}\n`);
try {
  await env.startDaemon(['--metrics-listen', `127.0.0.1:${METRICS_PORT}`], { fresh: true });
  const kernelPath = join(env.root, 'tiny-guest.elf');
  await copyFile(nativeBin('tiny-guest.elf'), kernelPath);
  const client = env.client();
  const sandboxId = 'ev1';
  const started = await client.startProcess({
    sandboxId,
    mode: LaunchMode.BOOT,
    kernelPath,
    rootfsPath: env.rootfsPath,
    networkNamespace: env.netns,
    vm: { vcpus: 1, memoryMib: 64n, cmdline: 'console=ttyS0 tick_ms=1000' },
  });
  const socketPath = started.process!.socketPath;
  const results = new Map<number, Delivery>();
  for (const watchers of [1, 100]) {
    log(`event delivery, ${watchers} watcher(s)...`);
    results.set(watchers, await deliver(env, sandboxId, socketPath, watchers));
  }
  const store = await histogramMean('vmprocd_store_write_seconds', 'operation="event"');
  log('transport floor...');
  const floor = await streamFloor(samples);
  rows.push(...floor);
  const floorText = String(floor[0]!.value);
  for (const [watchers, result] of results) {
    const goal = watchers === 1 ? 5 : 20;
    const name = `event delivery, ${watchers} watcher${watchers > 1 ? 's' : ''}`;
    rows.push(
      { benchmark: name, measure: `p50 (n=${result.delivery.n})`, value: fmt(result.delivery.p50), baseline: `${floorText.split(' / ')[0]!} (transport floor)`, ratio: '', target: '', met: undefined },
      { benchmark: name, measure: 'p99', value: fmt(result.delivery.p99), baseline: `${floorText.split(' / ')[1]!} (transport floor)`, ratio: '', target: `< ${goal} ms`, met: result.delivery.p99 < goal },
      { benchmark: `${name}: the VMM's REST answer`, measure: 'p50 / p99', value: `${fmt(result.rest.p50)} / ${fmt(result.rest.p99)}`, baseline: '', ratio: '', target: '', met: undefined },
      { benchmark: `${name}: event file written, seen by inotify`, measure: 'p50 / p99', value: `${fmt(result.monitorSeen.p50)} / ${fmt(result.monitorSeen.p99)}`, baseline: '', ratio: '', target: '', met: undefined },
      { benchmark: `${name}: from the write seen to the watcher (daemon + transport)`, measure: 'p50 / p99', value: `${fmt(result.afterSeen.p50)} / ${fmt(result.afterSeen.p99)}`, baseline: floorText, ratio: '', target: '', met: undefined },
    );
  }
  rows.push({ benchmark: 'journal write of an event (daemon metrics, mean)', measure: `mean (n=${store.count})`, value: fmt(store.mean * 1000, 3), baseline: '', ratio: '', target: '', met: undefined });
  notes.push(
    'All times in ms, from just before the out-of-band `PUT vm.pause`/`vm.resume` on the VMM socket to the event on a WatchEvents stream in another process.',
    'Breakdown: "REST answer" is the VMM call itself; "seen by inotify" is when the VMM\'s write to its event file wakes an fs.watch in the benchmark process (the daemon is woken the same way); the journal write is the daemon\'s own metric; the transport floor is a bare grpc-js server writing pre-encoded messages to a stream read by another process.',
  );
  const [floorP50, floorP99] = floorText.split(' / ').map((v) => Number.parseFloat(v)) as [number, number];
  for (const [watchers, result] of results) {
    notes.push(
      `Where the time goes, ${watchers} watcher${watchers > 1 ? 's' : ''} (p50): the VMM's write reaches its event file and wakes inotify ${fmt(result.monitorSeen.p50)} ms after the call ` +
        `(before the REST answer, ${fmt(result.rest.p50)} ms); from there the daemon (read, parse, journal, fan-out) and the transport take ${fmt(result.afterSeen.p50)} ms, ` +
        `of which the bare transport is ${fmt(floorP50)} ms: the daemon's own part is about ${fmt(result.afterSeen.p50 - floorP50)} ms` +
        `${watchers > 1 ? ` for ${watchers} streams, about ${fmt(((result.afterSeen.p50 - floorP50) / watchers) * 1000, 0)} us a stream` : ''}. At p99: ${fmt(result.afterSeen.p99)} ms against the floor's ${fmt(floorP99)} ms.`,
    );
  }
  await client.stopProcess({ sandboxId, gracePeriod: { seconds: 5n } });
} finally {
  await env.dispose();
}

const table = renderTable(rows);
process.stdout.write(`${table}\n\n${notes.join('\n')}\n`);
if (!process.argv.includes('--no-write')) {
  await updateSection(
    join(packageRoot, 'BENCHMARKS.md'),
    'events',
    `## Event delivery (WatchEvents)

Command: \`npm run bench:events${quick ? ' -- --quick' : ''}\` (as root), run on ${new Date().toISOString().slice(0, 10)} on ${machineDescription()}, stand-in VMM,
${samples} out-of-band changes per row; load average ${loadAtStart} at the start, ${loadAverage()} at the end.

${table}

${notes.join('\n')}
`,
  );
}
