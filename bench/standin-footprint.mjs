// Measures the stand-in VMM: (1) readiness of single instances started one after another (spawn until the
// first GET vmm.ping is answered, on an otherwise idle event loop); (2) N instances started at once (default
// 500): time until every one answers ping, summed VmRSS and Pss, and the drop in MemAvailable. Then stops them
// all with SIGTERM (checking they exit 0) and removes the temp dir.
// Not a jest test: a measurement to rerun after changes to native/standin-vmm.c.
//   node bench/standin-footprint.mjs [count]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL("../build/native/standin-vmm", import.meta.url));
const COUNT = Number(process.argv[2] ?? 500);
const PING = 'GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n';

/** Resolves when one ping gets a 200, retrying while the socket is missing or refuses. */
function pingUntilReady(sock, deadline, retryMs = 2) {
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = connect(sock);
      let data = '';
      s.on('connect', () => s.write(PING));
      s.on('data', (d) => {
        data += d;
        if (data.startsWith('HTTP/1.1 200 ') && data.includes('"features"')) {
          s.destroy();
          resolve();
        }
      });
      s.on('error', () => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`${sock} not ready`));
        else setTimeout(attempt, retryMs);
      });
    };
    attempt();
  });
}

function kib(pid, file, field) {
  const m = readFileSync(`/proc/${pid}/${file}`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) : 0;
}

function memAvailableKiB() {
  return Number(readFileSync('/proc/meminfo', 'utf8').match(/^MemAvailable:\s+(\d+) kB/m)[1]);
}

/** One instance at a time: spawn, ping until answered (retrying every 0.5 ms), SIGTERM, wait for exit. */
async function sequentialReadiness(dir, runs) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const sock = join(dir, `seq-${i}.sock`);
    const start = performance.now();
    const child = spawn(BIN, ['--api-socket', `path=${sock}`], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      await pingUntilReady(sock, Date.now() + 5_000, 0.5);
      times.push(performance.now() - start);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  }
  return times.sort((a, b) => a - b);
}

const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

const dir = mkdtempSync(join(tmpdir(), 'standin-many-'));
const children = [];
try {
  const seq = await sequentialReadiness(dir, 50);
  console.log(
    `single instance, spawn->ping answered (50 runs): p50 ${pct(seq, 50).toFixed(2)} ms, p99 ${pct(seq, 99).toFixed(2)} ms`,
  );
  const availBefore = memAvailableKiB();
  const t0 = performance.now();
  const ready = [];
  for (let i = 0; i < COUNT; i++) {
    const sock = join(dir, `${i}.sock`);
    const start = performance.now();
    const child = spawn(BIN, ['--api-socket', `path=${sock}`], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    children.push({ child, exited });
    ready.push(pingUntilReady(sock, Date.now() + 30_000).then(() => performance.now() - start));
  }
  const spawnedMs = performance.now() - t0;
  const times = (await Promise.all(ready)).sort((a, b) => a - b);
  const allReadyMs = performance.now() - t0;

  const availDrop = availBefore - memAvailableKiB();
  let rss = 0;
  let pss = 0;
  for (const { child } of children) {
    rss += kib(child.pid, 'status', 'VmRSS');
    pss += kib(child.pid, 'smaps_rollup', 'Pss');
  }
  const mib = (k) => (k / 1024).toFixed(1);
  console.log(`instances:            ${COUNT}`);
  console.log(`spawn loop:           ${spawnedMs.toFixed(0)} ms`);
  console.log(`all answering ping:   ${allReadyMs.toFixed(0)} ms after the first spawn`);
  console.log(
    `spawn->ping answered: p50 ${pct(times, 50).toFixed(0)} ms, max ${times.at(-1).toFixed(0)} ms (includes waiting for Node's own spawn loop)`,
  );
  console.log(`sum VmRSS:            ${mib(rss)} MiB (${(rss / COUNT).toFixed(0)} KiB each; counts shared libc pages once per process)`);
  console.log(`sum Pss:              ${mib(pss)} MiB (${(pss / COUNT).toFixed(0)} KiB each; shared pages divided among sharers)`);
  console.log(`MemAvailable drop:    ${mib(availDrop)} MiB (whole system, includes kernel per-process memory; noisy)`);
} finally {
  for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  const results = await Promise.all(children.map((c) => c.exited));
  const clean = results.filter((code) => code === 0).length;
  console.log(`stopped:              ${clean}/${children.length} exited 0 on SIGTERM`);
  rmSync(dir, { recursive: true, force: true });
}
