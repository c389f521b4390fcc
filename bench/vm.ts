/**
 * `npm run bench:vm`: the VM over gRPC (boot, pause, resume, snapshot, restore), each figure beside the
 * same work done straight on the VMM's API socket in the same run. Needs root (namespaces, TAPs).
 *   npm run bench:vm -- [--vmm PATH] [--quick] [--label TEXT] [--note TEXT] [--only boot,ops,restore] [--no-write]
 * --vmm (or VMPROCD_BENCH_VMM): the VMM binary; default the stand-in, so any machine can compare.
 * Prints the table and writes BENCHMARKS.md's section for this VMM (its label), keeping the others.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { nativeBin, packageRoot } from '../src/package-paths.js';
import { startToReady } from './benchmarks.js';
import { createBenchEnv } from './lib/bench-env.js';
import { loadAverage, machineDescription, renderTable, type Row, updateSection } from './lib/report.js';
import { notMeasuredRow } from './lib/rows.js';
import { createVmBench } from './lib/vm-setup.js';
import { bootToConsole } from './vm-boot.js';
import { vmOperations } from './vm-operations.js';
import { restoreUntilReady } from './vm-restore.js';

const { values } = parseArgs({
  options: {
    vmm: { type: 'string' },
    quick: { type: 'boolean', default: false },
    label: { type: 'string' },
    note: { type: 'string' },
    only: { type: 'string' },
    cmdline: { type: 'string', default: 'console=ttyS0 tick_ms=100 halt_after=1' },
    'console-timeout-ms': { type: 'string', default: '10000' },
    'no-write': { type: 'boolean', default: false },
  },
});
const standIn = nativeBin('standin-vmm');
const vmmBin = resolve(values.vmm ?? process.env.VMPROCD_BENCH_VMM ?? standIn);
if (!existsSync(vmmBin)) throw new Error(`--vmm ${vmmBin} does not exist`);
const version = (await execa(vmmBin, ['--version'])).stdout.trim().split('\n')[0]!;
/** The VMM as the section names it: relative to the checkout when it is in it. */
const shownVmm = vmmBin.startsWith(`${packageRoot}/`) ? relative(packageRoot, vmmBin) : vmmBin;
const label = values.label ?? (vmmBin === standIn ? 'the stand-in VMM' : version);
const note = (values.note ?? process.env.VMPROCD_BENCH_NOTE ?? '').trim().replace(/\.$/, '');
const BENCHMARKS = ['boot', 'ops', 'restore'];
const only = new Set((values.only ?? BENCHMARKS.join(',')).split(','));
for (const name of only) if (!BENCHMARKS.includes(name)) throw new Error(`--only ${name}: the benchmarks are ${BENCHMARKS.join(', ')}`);
const quick = values.quick;
const quote = (arg: string) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`);
/** The command as run, less the note (written out beside it) and --no-write. */
const args: string[] = [];
for (let i = 2; i < process.argv.length; i++) {
  const arg = process.argv[i]!;
  if (arg === '--note') i++;
  else if (arg !== '--no-write' && !arg.startsWith('--note=')) args.push(arg);
}
const command = `npm run bench:vm${args.length > 0 ? ` -- ${args.map(quote).join(' ')}` : ''}`;
const kvm = existsSync('/dev/kvm') ? `/dev/kvm with modules ${readdirSync('/sys/module').filter((m) => m.startsWith('kvm')).join(', ')}` : 'no /dev/kvm';
const log = (text: string) => process.stderr.write(`${text}\n`);
const loadAtStart = loadAverage();

log(`bench:vm on ${vmmBin} (${version})`);
const env = await createBenchEnv({ vmmBin });
const rows: Row[] = [];
let failed = false;
/** One benchmark; a failure is a row that says so, and the run goes on to the next. */
async function section(name: string, work: () => Promise<Row[]>): Promise<void> {
  log(`${name}...`);
  try {
    rows.push(...(await work()));
  } catch (error) {
    failed = true;
    log(`*** ${name} FAILED: ${error instanceof Error ? error.stack : String(error)}`);
    rows.push(notMeasuredRow(name, `FAILED: ${error instanceof Error ? error.message : String(error)}`));
  }
}
try {
  const bench = await createVmBench(env, values.cmdline, Number(values['console-timeout-ms']));
  if (only.has('boot')) {
    // The baseline's own launch script first, so the ratio is the daemon's own cost; then the default.
    await env.startDaemon(['--launcher', 'script']);
    await section('boot, script launcher', () => bootToConsole(bench, quick ? 5 : 60, 'script launcher'));
    // The same without a VM (npm run bench's figure, on this VMM): what the VM's own steps add to it.
    await section('start to ready, no VM, script launcher', async () =>
      (await startToReady(env, quick ? 5 : 60, 'no VM (a bare VMM), script launcher')).rows.filter((row) => !row.measure.startsWith('p90')));
    await env.stopDaemon();
  }
  await env.startDaemon([], { fresh: true });
  if (only.has('boot')) await section('boot, native launcher (default)', () => bootToConsole(bench, quick ? 5 : 60, 'native launcher (default)'));
  if (only.has('ops')) await section('pause, resume, snapshot', () => vmOperations(bench, quick ? 20 : 200, quick ? 3 : 30));
  if (only.has('restore')) {
    for (const mib of [256, 1024]) await section(`restore, ${mib} MiB guest`, () => restoreUntilReady(bench, mib, quick ? 2 : mib > 256 ? 10 : 20));
  }
} finally {
  await env.dispose();
}

const table = renderTable(rows);
process.stdout.write(`${table}\n`);
for (const row of rows.filter((r) => r.measure === '**NOT MEASURED**')) log(`*** NOT MEASURED: ${row.benchmark}: ${row.value}`);

if (!values['no-write']) {
  await updateSection(
    join(packageRoot, 'BENCHMARKS.md'),
    `npm run bench:vm: ${label}`,
    `## The VM, on ${label} (\`npm run bench:vm\`)

VMM: \`${shownVmm}\` (\`--version\`: \`${version}\`). Command: \`${command}\` (as root), run on ${new Date().toISOString().slice(0, 10)}
on ${machineDescription()}, ${kvm}; load average ${loadAtStart} at the start, ${loadAverage()} at the end
(1, 5, 15 min)${note ? `. ${note}` : ''}.

The guest is the tiny guest (\`build/native/tiny-guest.elf\`), 1 vCPU, a NIC on a TAP in the sandbox's network
namespace. Baselines, measured in the same run, samples alternating with the daemon's:
- **boot**: the same launch script spawned from the benchmark, then \`PUT vm.create\` with the very body the daemon
  sends and \`PUT vm.boot\`, straight on the VMM's socket, until the guest's first line on the VMM's stdout. The
  daemon's figure is StartProcess with the VmConfig, then StreamLogs (follow) until that line; with
  \`--launcher script\` the daemon runs that very script (the ratio is its own cost), with its default native
  launcher it sets the same sandbox up in the VMM's own process (leaner than the script: see \`npm run bench\`).
- **pause, resume, snapshot**: the same REST calls (one HTTP/1.1 request on a fresh connection each; for a snapshot,
  \`mkdir\` of its directory too) on the socket of a second VM booted bare with the same config, alive at the same
  time. Each snapshot is deleted before the next.
- **restore**: the same launch, then \`PUT vm.restore\` with the same body (resume); the daemon's is StartProcess in
  restore mode until it returns. One snapshot per guest size, made by SnapshotVm (STOP) of a VM the daemon booted.

"ratio" is the daemon's figure over the baseline's, then their difference. A row **NOT MEASURED** says what this VMM
could not do, rather than leaving it out.

${table}`,
  );
}
if (failed) process.exitCode = 1;
