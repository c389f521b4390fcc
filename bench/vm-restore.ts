import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AfterSnapshot, LaunchMode, MemoryRestoreMode } from '../gen/vmprocess/v1/vmprocess_pb.js';
import { killBare, pingUntilReady, spawnBare } from './lib/bare-launch.js';
import type { Row } from './lib/report.js';
import { rawCall } from './lib/raw-ch.js';
import { infoRow, latencyRows, notMeasuredRow } from './lib/rows.js';
import { monotonicMs, summarize } from './lib/stats.js';
import { bareSetup, bootRequest, type VmBench } from './lib/vm-setup.js';

const MIB = 1024 * 1024;
const MODES = [
  { mode: MemoryRestoreMode.ON_DEMAND, name: 'OnDemand' },
  { mode: MemoryRestoreMode.COPY, name: 'Copy' },
] as const;

let counter = 0;

/** Bytes of the files in a snapshot directory (allocated blocks: a sparse memory file counts what it holds). */
async function snapshotBytes(dir: string): Promise<{ apparent: number; allocated: number; files: string[] }> {
  const files = await readdir(dir);
  let apparent = 0;
  let allocated = 0;
  for (const file of files) {
    const st = await stat(join(dir, file));
    apparent += st.size;
    allocated += st.blocks * 512;
  }
  return { apparent, allocated, files };
}

/**
 * Restore until ready, for a guest of `memoryMib`: a VM booted by the daemon is hibernated
 * (SnapshotVm STOP) once; then StartProcess in restore mode (resume) until it returns, beside the
 * same launch and PUT vm.restore with the same body straight on the VMM's socket, OnDemand and
 * Copy, samples alternating. A snapshot without the guest's memory in it is said loudly: its
 * restores load no memory, and their figures are only the control path.
 */
export async function restoreUntilReady(bench: VmBench, memoryMib: number, samples: number): Promise<Row[]> {
  const client = bench.env.client();
  const label = `${memoryMib} MiB guest`;
  const source = join(bench.snapsDir, `restore-${memoryMib}`);
  const sourceUrl = `file://${source}`;
  const origin = `rs${memoryMib}`;
  const rows: Row[] = [];
  await client.startProcess(bootRequest(bench, origin, memoryMib));
  let t = monotonicMs();
  try {
    await client.snapshotVm({ sandboxId: origin, destinationUrl: sourceUrl, afterSnapshot: AfterSnapshot.STOP });
  } catch (error) {
    await client.stopProcess({ sandboxId: origin, gracePeriod: {} }).catch(() => undefined);
    await rm(source, { recursive: true, force: true });
    return [notMeasuredRow(`restore, ${label}`, `the snapshot to restore from failed: ${error instanceof Error ? error.message : String(error)}`)];
  }
  const hibernateMs = monotonicMs() - t;
  try {
    const size = await snapshotBytes(source);
    rows.push(infoRow(`restore, ${label}`, 'the snapshot (SnapshotVm STOP, once)', `${hibernateMs.toFixed(0)} ms; ${size.files.length > 0 ? size.files.sort().join(', ') : 'no files'}: ${(size.apparent / MIB).toFixed(1)} MiB (${(size.allocated / MIB).toFixed(1)} MiB allocated)`));
    if (size.apparent < (memoryMib * MIB) / 2) {
      rows.push(notMeasuredRow(`restore, ${label}`, `a memory restore: this VMM's snapshot holds ${size.apparent} bytes for a ${memoryMib} MiB guest, so the restores below load no guest memory; they time only the control path`));
    }
    for (const { mode, name } of MODES) {
      const daemon: number[] = [];
      const raw: number[] = [];
      for (let i = 0; i < samples + 1; i++) {
        const id = `rr${memoryMib}-${++counter}`;
        t = monotonicMs();
        await client.startProcess({
          sandboxId: id,
          mode: LaunchMode.RESTORE,
          rootfsPath: bench.rootfsPath,
          networkNamespace: bench.env.netns,
          readyTimeout: { seconds: 600n },
          restore: { sourceUrl, memoryRestoreMode: mode, resume: true },
        });
        const d = monotonicMs() - t;
        await client.stopProcess({ sandboxId: id, gracePeriod: {} });

        t = monotonicMs();
        const vmm = spawnBare(bareSetup(bench), id);
        let r: number;
        try {
          await pingUntilReady(vmm.socketPath, 30_000);
          await rawCall(vmm.socketPath, 'PUT', 'vm.restore', { source_url: sourceUrl, memory_restore_mode: name, resume: true, prefault: false });
          r = monotonicMs() - t;
        } finally {
          await killBare(vmm);
        }
        if (i > 0) raw.push(r);
        if (i > 0) daemon.push(d);
      }
      rows.push(...latencyRows(`restore until ready, ${name}, ${label}`, summarize(daemon), summarize(raw), undefined));
    }
  } finally {
    await rm(source, { recursive: true, force: true });
  }
  return rows;
}
