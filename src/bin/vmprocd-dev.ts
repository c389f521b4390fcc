#!/usr/bin/env node
/**
 * `npm start`: the daemon in the foreground with the stand-in VMM, for trying vmprocd on a
 * machine without KVM or Cloud Hypervisor. Everything lives under .run/ in the checkout (images a
 * request may name under .run/images); it listens on .run/vmprocd.sock and 127.0.0.1:50051 unless
 * VMPROCD_LISTEN says otherwise.
 * Flags given to `npm start -- ...` still win.
 */
import './threadpool.js';
import { join } from 'node:path';
import { main } from '../daemon/main.js';
import { nativeBin, packageRoot } from '../package-paths.js';

const runRoot = join(packageRoot, '.run');
const env = {
  ...process.env,
  VMPROCD_VMM_BIN: process.env.VMPROCD_VMM_BIN ?? nativeBin('standin-vmm'),
  VMPROCD_LISTEN: process.env.VMPROCD_LISTEN ?? `unix://${join(runRoot, 'vmprocd.sock')},127.0.0.1:50051`,
  VMPROCD_RUN_DIR: process.env.VMPROCD_RUN_DIR ?? join(runRoot, 'run'),
  VMPROCD_STATE_DIR: process.env.VMPROCD_STATE_DIR ?? join(runRoot, 'state'),
  VMPROCD_SANDBOX_DIR: process.env.VMPROCD_SANDBOX_DIR ?? join(runRoot, 'sandbox'),
  // Kernels, root file systems and snapshots a request may name (the daemon creates it).
  VMPROCD_IMAGE_ROOT: process.env.VMPROCD_IMAGE_ROOT ?? join(runRoot, 'images'),
};
const standIn = env.VMPROCD_VMM_BIN === nativeBin('standin-vmm');
await main(
  process.argv.slice(2),
  env,
  standIn
    ? 'using the stand-in VMM (npm start): it speaks Cloud Hypervisor\'s API but runs no VM; set VMPROCD_VMM_BIN for a real cloud-hypervisor'
    : undefined,
);
