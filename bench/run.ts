/**
 * `npm run bench`: every figure beside a baseline measured in the same run, as a ratio, because
 * this machine is noisy. Prints a table and writes BENCHMARKS.md. Needs root (namespaces).
 *   node dist/bench/run.js [--quick]
 */
import { readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/package-paths.js';
import { adoptedExitDelivery, burst, exitDelivery, type Row, scale, startToReady, stop, streamFloor } from './benchmarks.js';
import { createBenchEnv } from './lib/bench-env.js';
import { soakSection } from './lib/soak-section.js';

const quick = process.argv.includes('--quick');
const command = `npm run bench${quick ? ' -- --quick' : ''}`;
const env = await createBenchEnv();
const rows: Row[] = [];
const log = (text: string) => process.stderr.write(`${text}\n`);
try {
  // The reference launch first: the same script as the baseline, so the ratio is the daemon's own cost.
  await env.startDaemon(['--launcher', 'script']);
  log('start to ready, script launcher...');
  rows.push(...(await startToReady(env, quick ? 30 : 150, 'script launcher')).rows);
  await env.stopDaemon();
  await env.startDaemon([], { fresh: true });
  log('start to ready, native launcher...');
  rows.push(...(await startToReady(env, quick ? 30 : 150, 'native launcher (default)')).rows);
  for (const count of [100, 500]) {
    log(`burst of ${count}...`);
    rows.push(...(await burst(env, count)));
  }
  for (const watchers of [1, 100]) {
    log(`exit delivery, ${watchers} watchers...`);
    rows.push(...(await exitDelivery(env, watchers, quick ? 30 : 150)).rows);
  }
  log('transport floor...');
  rows.push(...(await streamFloor(quick ? 100 : 500)));
  log('exit delivery, re-adopted VMMs...');
  rows.push(...(await adoptedExitDelivery(env, quick ? 20 : 100)));
  log('stop...');
  rows.push(...(await stop(env, quick ? 20 : 100)));
  log('scale...');
  rows.push(...(await scale(env, [500, 1000], quick ? 3 : 10)));
} finally {
  await env.dispose();
}

const header = ['benchmark', 'measure', 'vmprocd', 'baseline', 'ratio', 'target', 'met'];
const table = [
  `| ${header.join(' | ')} |`,
  `| ${header.map(() => '---').join(' | ')} |`,
  ...rows.map((r) => `| ${[r.benchmark, r.measure, r.value, r.baseline, r.ratio, r.target, r.met === undefined ? '' : r.met ? 'yes' : 'NO'].join(' | ')} |`),
].join('\n');
process.stdout.write(`${table}\n`);

// The soak's section (npm run soak -- --record) is not this run's: kept as it is.
const soak = await soakSection(join(packageRoot, 'BENCHMARKS.md'));
const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
await writeFile(
  join(packageRoot, 'BENCHMARKS.md'),
  `# Benchmarks

Command: \`${command}\` (as root), run on ${new Date().toISOString().slice(0, 10)} on ${machine}.

Baselines, measured in the same run, interleaved with the daemon's samples where possible:
- **start to ready, burst**: the same launch script (\`unshare -m -- bash -c ...\`) spawned directly from the benchmark
  process, readiness by a 1 ms ping loop; no gRPC, no validation, no reaper, no journal. The daemon is measured
  with both launchers: \`--launcher script\` runs that very script (the ratio is the daemon's own overhead);
  the default \`--launcher native\` sets the same sandbox up in the VMM's own process (see README).
- **exit delivery**: the same SIGKILL of a bare-launched VMM, noticed by its own parent (the exit event).
- **stop**: SIGTERM to a bare launch's process group until its exit event.
- **scale**: the same daemon with no VMMs.

The daemon runs as its own process with its defaults (native launcher, journal fdatasync of launch
records, log level info) unless a row says otherwise; the client calls it over its unix socket. Exit
watchers run in separate processes. Scale is measured on a daemon with a fresh state directory.

${table}

${await readFile(join(packageRoot, 'bench', 'analysis.md'), 'utf8')}${soak ? `\n${soak}\n` : ''}`,
);
