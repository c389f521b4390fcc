/**
 * A real snapshot to restore from: a bare stand-in VMM boots the tiny guest, pauses it and snapshots it
 * into a directory (config.json, state.json, memory-ranges), as Cloud Hypervisor would. Like CH, the
 * stand-in refuses to restore from a directory that lacks any of them.
 *
 * The VM has no disk and no NIC, so a restore from it takes no disk lock and no TAP and works in any
 * sandbox, next to any other VM; its serial console is off, so a restored VM writes nothing to its log.
 */
import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nativeBin } from '../../src/package-paths.js';
import { startStandin } from './standin-process.js';

export interface StandinSnapshotOptions {
  /** The guest's kernel: the tiny guest by default (the restore reads only the snapshot). */
  kernelPath?: string;
  /** The tiny guest's command line; its tick_ms sets how often a restored guest counts. */
  cmdline?: string;
  memoryMib?: number;
}

/** Snapshots a paused tiny guest into `dir` (created; must not hold a snapshot yet). Returns its file:// URL. */
export async function makeStandinSnapshot(dir: string, options: StandinSnapshotOptions = {}): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  const scratch = await fs.mkdtemp(join(tmpdir(), 'standin-snap-'));
  const vmm = await startStandin({ dir: scratch });
  try {
    const config = {
      cpus: { boot_vcpus: 1, max_vcpus: 1 },
      memory: { size: (options.memoryMib ?? 64) * 1024 * 1024 },
      payload: { kernel: options.kernelPath ?? nativeBin('tiny-guest.elf'), cmdline: options.cmdline ?? 'console=ttyS0 tick_ms=1000' },
      serial: { mode: 'Off' },
      console: { mode: 'Off' },
    };
    const url = `file://${dir}`;
    for (const [endpoint, body] of [['vm.create', config], ['vm.boot'], ['vm.pause'], ['vm.snapshot', { destination_url: url }]] as const) {
      const r = await vmm.api('PUT', endpoint, body);
      if (r.status !== 204) throw new Error(`stand-in ${endpoint} answered ${r.status}: ${r.body}`);
    }
    return url;
  } finally {
    await vmm.kill();
    await fs.rm(scratch, { recursive: true, force: true });
  }
}
