import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AfterSnapshot } from '../gen/vmprocess/v1/vmprocess_pb.js';
import { killBare } from './lib/bare-launch.js';
import type { Row } from './lib/report.js';
import { rawCall } from './lib/raw-ch.js';
import { infoRow, latencyRows, notMeasuredRow } from './lib/rows.js';
import { monotonicMs, summarize } from './lib/stats.js';
import { type BareVm, bootBare, bootRequest, type VmBench } from './lib/vm-setup.js';

const RAW_PLUS_MS = 1;

/** Times `work` and returns the milliseconds it took. */
async function timed(work: () => Promise<unknown>): Promise<number> {
  const t = monotonicMs();
  await work();
  return monotonicMs() - t;
}

/**
 * PauseVm, ResumeVm and SnapshotVm on a VM the daemon booted, beside the same REST calls on the
 * socket of a VM booted bare (same launch, same config but its TAP), both alive at once and their
 * samples interleaved. Snapshots: of a paused VM (SnapshotVm STAY_PAUSED: the daemon makes the
 * directory; raw: mkdir and vm.snapshot), and a checkpoint of a running one (SnapshotVm RESUME;
 * raw: vm.pause, mkdir, vm.snapshot, vm.resume). Each snapshot is deleted before the next sample.
 */
export async function vmOperations(bench: VmBench, samples: number, snapshotSamples: number, memoryMib = 64): Promise<Row[]> {
  const client = bench.env.client();
  const id = 'ops';
  await client.startProcess(bootRequest(bench, id, memoryMib));
  let bare: BareVm | undefined;
  const rows: Row[] = [];
  try {
    bare = await bootBare(bench, 'ops-bare', memoryMib);
    const socket = bare.vmm.socketPath;
    const pause: number[] = [];
    const rawPause: number[] = [];
    const resume: number[] = [];
    const rawResume: number[] = [];
    const get: number[] = [];
    for (let i = 0; i < samples + 5; i++) {
      const g = await timed(() => client.getProcess({ sandboxId: id }));
      const p = await timed(() => client.pauseVm({ sandboxId: id }));
      const rp = await timed(() => rawCall(socket, 'PUT', 'vm.pause'));
      const r = await timed(() => client.resumeVm({ sandboxId: id }));
      const rr = await timed(() => rawCall(socket, 'PUT', 'vm.resume'));
      if (i < 5) continue;
      get.push(g);
      pause.push(p);
      rawPause.push(rp);
      resume.push(r);
      rawResume.push(rr);
    }
    rows.push(...latencyRows('PauseVm', summarize(pause), summarize(rawPause), { plusMs: RAW_PLUS_MS }));
    rows.push(...latencyRows('ResumeVm', summarize(resume), summarize(rawResume), { plusMs: RAW_PLUS_MS }));
    const floor = summarize(get);
    rows.push(infoRow('GetProcess: the RPC alone (no VMM call, no journal), same daemon, interleaved', `p50 / p99 (n=${floor.n})`, `${floor.p50.toFixed(2)} ms / ${floor.p99.toFixed(2)} ms`));
    rows.push(...(await snapshots(bench, id, socket, snapshotSamples, memoryMib)));
  } finally {
    await client.stopProcess({ sandboxId: id, gracePeriod: {} }).catch(() => undefined);
    if (bare) await killBare(bare.vmm);
  }
  return rows;
}

async function snapshots(bench: VmBench, id: string, socket: string, samples: number, memoryMib: number): Promise<Row[]> {
  const client = bench.env.client();
  const dir = (name: string) => join(bench.snapsDir, name);
  const url = (name: string) => `file://${dir(name)}`;
  const clear = (...names: string[]) => Promise.all(names.map((name) => rm(dir(name), { recursive: true, force: true })));
  const label = `${memoryMib} MiB guest`;
  const rows: Row[] = [];

  const paused: number[] = [];
  const rawPaused: number[] = [];
  await client.pauseVm({ sandboxId: id });
  await rawCall(socket, 'PUT', 'vm.pause');
  try {
    for (let i = 0; i < samples + 1; i++) {
      paused.push(await timed(() => client.snapshotVm({ sandboxId: id, destinationUrl: url('d'), afterSnapshot: AfterSnapshot.STAY_PAUSED })));
      rawPaused.push(await timed(async () => {
        await mkdir(dir('r'));
        await rawCall(socket, 'PUT', 'vm.snapshot', { destination_url: url('r') });
      }));
      await clear('d', 'r');
    }
    rows.push(...latencyRows(`SnapshotVm of a paused VM, ${label}`, summarize(paused.slice(1)), summarize(rawPaused.slice(1)), { plusMs: RAW_PLUS_MS }));
  } catch (error) {
    rows.push(notMeasuredRow(`SnapshotVm of a paused VM, ${label}`, `the snapshot failed: ${error instanceof Error ? error.message : String(error)}`));
    await clear('d', 'r');
    await client.resumeVm({ sandboxId: id }).catch(() => undefined);
    await rawCall(socket, 'PUT', 'vm.resume').catch(() => undefined);
    return rows;
  }
  await client.resumeVm({ sandboxId: id });
  await rawCall(socket, 'PUT', 'vm.resume');

  const checkpoint: number[] = [];
  const rawCheckpoint: number[] = [];
  for (let i = 0; i < samples + 1; i++) {
    checkpoint.push(await timed(() => client.snapshotVm({ sandboxId: id, destinationUrl: url('d'), afterSnapshot: AfterSnapshot.RESUME })));
    rawCheckpoint.push(await timed(async () => {
      await rawCall(socket, 'PUT', 'vm.pause');
      await mkdir(dir('r'));
      await rawCall(socket, 'PUT', 'vm.snapshot', { destination_url: url('r') });
      await rawCall(socket, 'PUT', 'vm.resume');
    }));
    await clear('d', 'r');
  }
  rows.push(...latencyRows(`SnapshotVm checkpoint (pause, snapshot, resume), ${label}`, summarize(checkpoint.slice(1)), summarize(rawCheckpoint.slice(1)), { plusMs: RAW_PLUS_MS }));
  return rows;
}
