import { fork } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { create } from '@bufbuild/protobuf';
import { credentials, makeGenericClientConstructor, Server, ServerCredentials } from '@grpc/grpc-js';
import { LaunchMode, ListProcessesRequestSchema, ProcessState, VmProcessService } from '../gen/vmprocess/v1/vmprocess_pb.js';
import { grpcServiceDefinition } from '../src/rpc/grpc-service-definition.js';
import { encodedProcessExit } from '../src/rpc/wire-cache.js';
import { killBare, pingUntilReady, spawnBare } from './lib/bare-launch.js';
import { type BenchEnv, processUsage } from './lib/bench-env.js';
import type { Row } from './lib/report.js';
import { monotonicMs, summarize, type Summary } from './lib/stats.js';

export type { Row } from './lib/report.js';

const ms = (value: number) => `${value.toFixed(2)} ms`;
const x = (value: number) => `${value.toFixed(2)}x`;

function startRequest(env: BenchEnv, sandboxId: string) {
  return {
    sandboxId,
    mode: LaunchMode.BOOT,
    kernelPath: env.kernelPath,
    rootfsPath: env.rootfsPath,
    networkNamespace: env.netns,
    readyTimeout: { seconds: 30n },
  };
}

let idCounter = 0;
const nextId = (prefix: string) => `${prefix}${++idCounter}`;

/** Sequential starts, daemon and bare launch interleaved so drift in machine load hits both alike. */
export async function startToReady(env: BenchEnv, samples: number, label: string): Promise<{ rows: Row[]; daemon: Summary; bare: Summary }> {
  const client = env.client();
  const daemonTimes: number[] = [];
  const bareTimes: number[] = [];
  const bareSetup = { ...env, runDir: env.bareRunDir, netns: env.netns };
  for (let i = 0; i < samples + 5; i++) {
    const warmup = i < 5;
    const id = nextId('s');
    let t = monotonicMs();
    await client.startProcess(startRequest(env, id));
    const daemonMs = monotonicMs() - t;
    await client.stopProcess({ sandboxId: id, gracePeriod: {} });

    t = monotonicMs();
    const vmm = spawnBare(bareSetup, id);
    await pingUntilReady(vmm.socketPath);
    const bareMs = monotonicMs() - t;
    await killBare(vmm);
    if (!warmup) {
      daemonTimes.push(daemonMs);
      bareTimes.push(bareMs);
    }
  }
  const daemon = summarize(daemonTimes);
  const bare = summarize(bareTimes);
  const target = 1.1;
  const name = `start to ready, ${label}`;
  return {
    daemon,
    bare,
    rows: [
      { benchmark: name, measure: `p50 (n=${daemon.n})`, value: ms(daemon.p50), baseline: ms(bare.p50), ratio: x(daemon.p50 / bare.p50), target: `<= ${target}x`, met: daemon.p50 / bare.p50 <= target },
      { benchmark: name, measure: 'p90', value: ms(daemon.p90), baseline: ms(bare.p90), ratio: x(daemon.p90 / bare.p90), target: '', met: undefined },
      { benchmark: name, measure: 'p99', value: ms(daemon.p99), baseline: ms(bare.p99), ratio: x(daemon.p99 / bare.p99), target: '', met: undefined },
      { benchmark: name, measure: 'p50 difference', value: ms(daemon.p50 - bare.p50), baseline: '', ratio: '', target: 'mostly < 2 ms', met: daemon.p50 - bare.p50 < 2 },
    ],
  };
}

/** `count` starts at once, daemon then bare; wall time until all are ready. */
export async function burst(env: BenchEnv, count: number): Promise<Row[]> {
  const client = env.client();
  const ids = Array.from({ length: count }, () => nextId('b'));
  let t = monotonicMs();
  const results = await Promise.allSettled(ids.map((id) => client.startProcess(startRequest(env, id))));
  const daemonMs = monotonicMs() - t;
  const failures = results.filter((r) => r.status === 'rejected');
  await Promise.allSettled(ids.map((id) => client.stopProcess({ sandboxId: id, gracePeriod: {} })));

  const bareSetup = { ...env, runDir: env.bareRunDir };
  t = monotonicMs();
  const vmms = ids.map((id) => spawnBare(bareSetup, id));
  const bareResults = await Promise.allSettled(vmms.map((vmm) => pingUntilReady(vmm.socketPath, 60_000)));
  const bareMs = monotonicMs() - t;
  await Promise.all(vmms.map((vmm) => killBare(vmm)));
  const bareFailures = bareResults.filter((r) => r.status === 'rejected').length;
  const target = count <= 100 ? 1.2 : undefined;
  const firstFailure = failures[0] ? ` (first: ${(failures[0] as PromiseRejectedResult).reason?.details ?? failures[0]})` : '';
  return [
    {
      benchmark: `burst of ${count}`,
      measure: 'wall time to all ready',
      value: ms(daemonMs),
      baseline: ms(bareMs),
      ratio: x(daemonMs / bareMs),
      target: target ? `<= ${target}x` : '',
      met: target ? daemonMs / bareMs <= target : undefined,
    },
    {
      benchmark: `burst of ${count}`,
      measure: 'failures',
      value: `${failures.length}${firstFailure}`,
      baseline: `${bareFailures}`,
      ratio: '',
      target: '0',
      met: failures.length === 0,
    },
  ];
}

/**
 * SIGKILL of a VMM, sent from here (outside the daemon), until the ProcessExit reaches every
 * watcher. Watchers live in separate processes (bench/exit-watchers.ts) so their decoding does not
 * share this event loop; times are on the system-wide monotonic clock.
 */
export async function exitDelivery(env: BenchEnv, watchers: number, samples: number): Promise<{ rows: Row[]; summary: Summary }> {
  const client = env.client();
  const processes = Math.min(4, watchers);
  const perProcess = Math.ceil(watchers / processes);
  const workers = Array.from({ length: processes }, (_, i) =>
    fork(join(import.meta.dirname, 'exit-watchers.js'), [env.address, String(Math.min(perProcess, watchers - i * perProcess))], { stdio: 'inherit' }),
  );
  const complete = new Map<string, number>();
  let wake: (() => void) | undefined;
  await Promise.all(workers.map((worker) => new Promise<void>((resolve) => {
    worker.on('message', (message: { type: string; sandboxId?: string }) => {
      if (message.type === 'ready') resolve();
      if (message.type === 'all') {
        complete.set(message.sandboxId!, (complete.get(message.sandboxId!) ?? 0) + 1);
        wake?.();
      }
    });
  })));

  const killedAt = new Map<string, number>();
  const baseline: number[] = [];
  const bareSetup = { ...env, runDir: env.bareRunDir };
  for (let i = 0; i < samples; i++) {
    const id = nextId('e');
    const started = await client.startProcess(startRequest(env, id));
    await sleep(5);
    killedAt.set(id, monotonicMs());
    process.kill(started.process!.pid, 'SIGKILL');
    const deadline = Date.now() + 10_000;
    while ((complete.get(id) ?? 0) < workers.length) {
      if (Date.now() > deadline) throw new Error(`exit of ${id} did not reach every watcher`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }

    // Baseline: the same kill, noticed by the VMM's own parent (the floor any supervisor pays).
    const vmm = spawnBare(bareSetup, id);
    await pingUntilReady(vmm.socketPath);
    await sleep(5);
    const t = monotonicMs();
    process.kill(vmm.pid, 'SIGKILL');
    await vmm.exited;
    baseline.push(monotonicMs() - t);
  }
  const latencies: number[] = [];
  for (const worker of workers) {
    const report = await new Promise<Record<string, number[]>>((resolve) => {
      worker.on('message', (message: { type: string; arrivals?: Record<string, number[]> }) => {
        if (message.type === 'report') resolve(message.arrivals!);
      });
      worker.send({ type: 'report' });
    });
    for (const [id, arrivals] of Object.entries(report)) {
      const killed = killedAt.get(id);
      if (killed !== undefined) for (const at of arrivals) latencies.push(at - killed);
    }
  }
  const summary = summarize(latencies);
  const base = summarize(baseline);
  const target = watchers === 1 ? 5 : 20;
  const name = `exit delivery, ${watchers} watcher${watchers > 1 ? 's' : ''}`;
  return {
    summary,
    rows: [
      { benchmark: name, measure: `p50 (n=${summary.n})`, value: ms(summary.p50), baseline: ms(base.p50), ratio: x(summary.p50 / base.p50), target: '', met: undefined },
      { benchmark: name, measure: 'p99', value: ms(summary.p99), baseline: ms(base.p99), ratio: x(summary.p99 / base.p99), target: `< ${target} ms`, met: summary.p99 < target },
    ],
  };
}

/**
 * The transport's own floor: a minimal grpc-js server (no daemon, no VMM) writes an already
 * encoded ProcessExit to one WatchExits stream read by another process, paced like the exit
 * benchmark. What exit delivery can never go below with grpc-js on this machine.
 */
export async function streamFloor(samples: number): Promise<Row[]> {
  const socket = `/tmp/vmpb-floor-${process.pid}.sock`;
  const server = new Server();
  let call: { write(bytes: Uint8Array): boolean } | undefined;
  server.addService(grpcServiceDefinition(VmProcessService), { watchExits: (c: { write(bytes: Uint8Array): boolean }) => (call = c) });
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${socket}`, ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  const worker = fork(join(import.meta.dirname, 'stream-floor-client.js'), [`unix://${socket}`, String(samples)], { stdio: 'inherit' });
  const got = new Set<number>();
  let wake: (() => void) | undefined;
  const report = new Promise<number[]>((resolve) => {
    worker.on('message', (message: { type: string; sequence?: number; arrivals?: number[] }) => {
      if (message.type === 'got') {
        got.add(message.sequence!);
        wake?.();
      }
      if (message.type === 'report') resolve(message.arrivals!);
    });
  });
  while (!call) await sleep(10);
  const sent: number[] = [];
  const template = { sandboxId: 'floor', pid: 1, reason: 'exited' as const, exitCode: 0, startedAt: new Date(), labels: {}, stderrTail: '', message: '', signalSentByDaemon: false };
  for (let sequence = 1; sequence <= samples; sequence++) {
    await sleep(5);
    const bytes = encodedProcessExit(Object.freeze({ ...template, sequence, exitedAt: new Date() }));
    sent[sequence] = monotonicMs();
    call.write(bytes);
    while (!got.has(sequence)) await new Promise<void>((resolve) => ((wake = resolve), setTimeout(resolve, 100)));
  }
  const arrivals = await report;
  server.forceShutdown();
  const summary = summarize(arrivals.flatMap((at, sequence) => (at === undefined || at === null ? [] : [at - sent[sequence]!])));
  return [
    { benchmark: 'transport floor: a bare grpc-js stream, two processes', measure: `p50 / p99 (n=${summary.n})`, value: `${ms(summary.p50)} / ${ms(summary.p99)}`, baseline: '', ratio: '', target: '', met: undefined },
  ];
}

/**
 * Exit delivery for VMMs the daemon re-adopted after a crash: they are not children of its spawner,
 * so their ends are seen through their reapers' status files (inotify), not the spawner pipe.
 * One watcher, in this process.
 */
export async function adoptedExitDelivery(env: BenchEnv, samples: number): Promise<Row[]> {
  let client = env.client();
  const pids = new Map<string, number>();
  for (let i = 0; i < samples; i++) {
    const id = nextId('a');
    pids.set(id, (await client.startProcess(startRequest(env, id))).process!.pid);
  }
  await env.stopDaemon('SIGKILL');
  await env.startDaemon();
  client = env.client();
  const arrived = new Map<string, number>();
  let wake: (() => void) | undefined;
  const { exitSequence } = await client.listProcesses({});
  const watching = (async () => {
    for await (const exit of client.watchExits({ afterSequence: exitSequence })) {
      arrived.set(exit.sandboxId, monotonicMs());
      wake?.();
      if (arrived.size === pids.size) return;
    }
  })();
  await sleep(300);
  const latencies: number[] = [];
  for (const [id, pid] of pids) {
    const killed = monotonicMs();
    process.kill(pid, 'SIGKILL');
    while (!arrived.has(id)) await new Promise<void>((resolve) => ((wake = resolve), setTimeout(resolve, 100)));
    latencies.push(arrived.get(id)! - killed);
  }
  await watching;
  const summary = summarize(latencies);
  return [
    { benchmark: 'exit delivery, re-adopted VMMs (after kill -9 of the daemon), 1 watcher', measure: `p50 / p99 (n=${summary.n})`, value: `${ms(summary.p50)} / ${ms(summary.p99)}`, baseline: '', ratio: '', target: '', met: undefined },
  ];
}

/** Starts VMMs through the daemon until `count` run, in concurrent waves. */
async function fillTo(env: BenchEnv, count: number): Promise<void> {
  const client = env.client();
  const running = (await client.listProcesses({ states: [ProcessState.RUNNING] })).processes.length;
  const ids = Array.from({ length: count - running }, () => nextId('k'));
  for (let i = 0; i < ids.length; i += 50) {
    await Promise.all(ids.slice(i, i + 50).map((id) => client.startProcess(startRequest(env, id))));
  }
}

async function idleUsage(pid: number, seconds: number): Promise<{ rssMiB: number; cpuPercent: number }> {
  const before = await processUsage(pid);
  const t = monotonicMs();
  await sleep(seconds * 1000);
  const after = await processUsage(pid);
  return { rssMiB: after.rssKiB / 1024, cpuPercent: ((after.cpuMs - before.cpuMs) / (monotonicMs() - t)) * 100 };
}

/**
 * ListProcesses round trips, all of it in one page (page_size 1000: the scale's processes fit one
 * page's 1 MiB). `decode`: through the TS client, which decodes every ProcessInfo with protobuf-es;
 * otherwise the response bytes are taken as they are, which is the daemon's share.
 */
async function listLatency(env: BenchEnv, calls: number, decode: boolean): Promise<Summary> {
  const client = decode ? env.client() : undefined;
  const raw = decode ? undefined : rawListClient(env.address);
  const times: number[] = [];
  try {
    for (let i = 0; i < calls; i++) {
      const t = monotonicMs();
      if (client) await client.listProcesses({ pageSize: 1000 });
      else await raw!.list();
      times.push(monotonicMs() - t);
    }
  } finally {
    raw?.close();
  }
  return summarize(times);
}

/** ListProcesses with a pass-through deserializer: the response bytes, undecoded. */
function rawListClient(address: string): { list(): Promise<Buffer>; close(): void } {
  const definition = grpcServiceDefinition(VmProcessService);
  const listMethod = { ...definition.listProcesses!, responseDeserialize: (bytes: Buffer) => bytes };
  const Client = makeGenericClientConstructor({ listProcesses: listMethod }, 'RawList');
  const client = new Client(address, credentials.createInsecure(), {}) as unknown as {
    listProcesses(request: unknown, callback: (error: Error | null, bytes: Buffer) => void): void;
    close(): void;
  };
  return {
    list: () => new Promise((resolve, reject) => client.listProcesses(create(ListProcessesRequestSchema, { pageSize: 1000 }), (error, bytes) => (error ? reject(error) : resolve(bytes)))),
    close: () => client.close(),
  };
}

/** Idle cost and ListProcesses latency at 0, 500 and 1000 supervised VMMs. */
export async function scale(env: BenchEnv, sizes: readonly number[], idleSeconds: number): Promise<Row[]> {
  // A daemon with no history: earlier benchmarks would otherwise leave thousands of exited records.
  await env.stopDaemon();
  await env.startDaemon([], { fresh: true });
  const pid = env.daemonPid();
  const empty = await idleUsage(pid, idleSeconds);
  const emptyList = await listLatency(env, 50, true);
  const emptyRaw = await listLatency(env, 50, false);
  const rows: Row[] = [];
  for (const size of sizes) {
    await fillTo(env, size);
    await sleep(2000); // let start-up garbage be collected before measuring idle
    const usage = await idleUsage(pid, idleSeconds);
    const list = await listLatency(env, 50, true);
    const raw = await listLatency(env, 50, false);
    const perProcessKiB = ((usage.rssMiB - empty.rssMiB) * 1024) / size;
    const big = size >= 1000;
    rows.push(
      { benchmark: `scale ${size}`, measure: 'daemon RSS, idle', value: `${usage.rssMiB.toFixed(1)} MiB`, baseline: `${empty.rssMiB.toFixed(1)} MiB (0 VMMs)`, ratio: x(usage.rssMiB / empty.rssMiB), target: big ? '< 150 MB' : '', met: big ? usage.rssMiB * 1.048576 < 150 : undefined },
      { benchmark: `scale ${size}`, measure: 'daemon CPU, idle', value: `${usage.cpuPercent.toFixed(2)} %`, baseline: `${empty.cpuPercent.toFixed(2)} % (0 VMMs)`, ratio: '', target: big ? '< 1 %' : '', met: big ? usage.cpuPercent < 1 : undefined },
      { benchmark: `scale ${size}`, measure: 'memory per VMM', value: `${perProcessKiB.toFixed(1)} KiB`, baseline: '', ratio: '', target: '', met: undefined },
      { benchmark: `scale ${size}`, measure: 'ListProcesses p50 / p99, daemon (bytes as sent)', value: `${ms(raw.p50)} / ${ms(raw.p99)}`, baseline: `${ms(emptyRaw.p50)} / ${ms(emptyRaw.p99)} (0 VMMs)`, ratio: x(raw.p50 / emptyRaw.p50), target: big ? 'p50 < 20 ms' : '', met: big ? raw.p50 < 20 : undefined },
      { benchmark: `scale ${size}`, measure: 'ListProcesses p50 / p99, TS client (decoded)', value: `${ms(list.p50)} / ${ms(list.p99)}`, baseline: `${ms(emptyList.p50)} / ${ms(emptyList.p99)} (0 VMMs)`, ratio: x(list.p50 / emptyList.p50), target: '', met: undefined },
    );
  }
  return rows;
}

/** StopProcess of a VMM that exits on SIGTERM, versus SIGTERM to a bare launch's group and its exit. */
export async function stop(env: BenchEnv, samples: number): Promise<Row[]> {
  const client = env.client();
  const bareSetup = { ...env, runDir: env.bareRunDir };
  const daemonTimes: number[] = [];
  const bareTimes: number[] = [];
  for (let i = 0; i < samples; i++) {
    const id = nextId('t');
    await client.startProcess(startRequest(env, id));
    let t = monotonicMs();
    await client.stopProcess({ sandboxId: id });
    daemonTimes.push(monotonicMs() - t);

    const vmm = spawnBare(bareSetup, id);
    await pingUntilReady(vmm.socketPath);
    t = monotonicMs();
    await killBare(vmm, 'SIGTERM');
    bareTimes.push(monotonicMs() - t);
  }
  const daemon = summarize(daemonTimes);
  const bare = summarize(bareTimes);
  return [
    { benchmark: 'stop (SIGTERM honoured)', measure: `p50 (n=${daemon.n})`, value: ms(daemon.p50), baseline: ms(bare.p50), ratio: x(daemon.p50 / bare.p50), target: '', met: undefined },
    { benchmark: 'stop (SIGTERM honoured)', measure: 'p99', value: ms(daemon.p99), baseline: ms(bare.p99), ratio: x(daemon.p99 / bare.p99), target: '', met: undefined },
  ];
}
