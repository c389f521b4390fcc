import { FIRST_GUEST_LINE, lineInLogs, NoConsoleLineError } from './lib/console-line.js';
import { killBare } from './lib/bare-launch.js';
import type { Row } from './lib/report.js';
import { infoRow, latencyRows, notMeasuredRow } from './lib/rows.js';
import { monotonicMs, summarize } from './lib/stats.js';
import { bootBare, bootRequest, type VmBench } from './lib/vm-setup.js';

let counter = 0;
const nextId = (prefix: string) => `${prefix}${++counter}`;

/**
 * StartProcess with a VmConfig until the guest's first console line (read through StreamLogs),
 * beside the same launch, vm.create and vm.boot straight on the VMM's socket until that line on the
 * VMM's stdout. Daemon and bare samples alternate. The first pair is a warm-up, and tells whether
 * the VMM prints a guest console at all: if it does not, the console rows say so, and only the
 * time until the VM runs (StartProcess returned; vm.boot answered) is measured.
 */
export async function bootToConsole(bench: VmBench, samples: number, launcher: string, memoryMib = 64): Promise<Row[]> {
  const client = bench.env.client();
  const toLine: number[] = [];
  const toRunning: number[] = [];
  const bareToLine: number[] = [];
  const bareToBooted: number[] = [];
  let noConsole: string | undefined;
  for (let i = 0; i < samples + 1; i++) {
    const warmup = i === 0;
    const id = nextId('vb');
    let t = monotonicMs();
    await client.startProcess(bootRequest(bench, id, memoryMib));
    const running = monotonicMs() - t;
    let line: number | undefined;
    if (noConsole === undefined) {
      try {
        await lineInLogs(client, id, FIRST_GUEST_LINE, bench.consoleTimeoutMs);
        line = monotonicMs() - t;
      } catch (error) {
        if (!(error instanceof NoConsoleLineError) || !warmup) throw error;
        noConsole = error.message;
      }
    }
    await client.stopProcess({ sandboxId: id, gracePeriod: {} });

    t = monotonicMs();
    const bare = await bootBare(bench, id, memoryMib);
    const booted = monotonicMs() - t;
    let bareLine: number | undefined;
    if (noConsole === undefined || warmup) {
      const seen = await bare.firstLine.then(() => monotonicMs() - t, (error: unknown) => error);
      if (typeof seen === 'number') bareLine = seen;
      else if (noConsole === undefined) throw seen;
    }
    await killBare(bare.vmm);
    if (warmup && noConsole !== undefined && bareLine !== undefined) {
      throw new Error(`the bare VMM printed the guest's first line but StreamLogs never showed it: ${noConsole}`);
    }
    if (warmup) continue;
    toRunning.push(running);
    bareToBooted.push(booted);
    if (line !== undefined && bareLine !== undefined) {
      toLine.push(line);
      bareToLine.push(bareLine);
    }
  }
  const rows: Row[] = [];
  if (noConsole === undefined) rows.push(...latencyRows(`boot to the first console line, ${launcher}`, summarize(toLine), summarize(bareToLine), { ratio: 1.05 }));
  else rows.push(notMeasuredRow(`boot to the first console line, ${launcher}`, `this VMM prints no guest console: ${noConsole}`));
  rows.push(...latencyRows(`boot until the VM runs (StartProcess returned; vm.boot answered), ${launcher}`, summarize(toRunning), summarize(bareToBooted), noConsole === undefined ? undefined : { ratio: 1.05 }));
  rows.push(infoRow(`boot, ${launcher}`, 'guest', `${memoryMib} MiB, 1 vCPU, cmdline "${bench.cmdline}"`));
  return rows;
}
