import { type ChildProcess, spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { nativeBin, packageRoot } from '../../src/package-paths.js';

/** A scratch host for one benchmark run: a netns, dirs, a kernel and rootfs, and the daemon as its own process. */
export interface BenchEnv {
  readonly root: string;
  readonly netns: string;
  readonly runDir: string;
  readonly bareRunDir: string;
  readonly sandboxDir: string;
  readonly kernelPath: string;
  readonly rootfsPath: string;
  readonly vmmBin: string;
  readonly address: string;
  daemonPid(): number;
  client(): VmProcessClient;
  /** Starts the daemon; `fresh` gives it an empty state directory (no history of earlier runs). */
  startDaemon(extraArgs?: readonly string[], options?: { fresh?: boolean }): Promise<void>;
  /** SIGTERM by default; SIGKILL to crash it (VMMs keep running either way). */
  stopDaemon(signal?: NodeJS.Signals): Promise<void>;
  dispose(): Promise<void>;
}

export interface BenchEnvOptions {
  /** The VMM the daemon and the baselines run; default the stand-in. */
  readonly vmmBin?: string;
}

export async function createBenchEnv(options: BenchEnvOptions = {}): Promise<BenchEnv> {
  // Short paths: unix socket paths must fit in 107 bytes.
  const root = await mkdtemp('/tmp/vmpb-');
  const netns = `vmpb-${process.pid}`;
  await execa('ip', ['netns', 'add', netns]);
  const runDir = join(root, 'run');
  const bareRunDir = join(root, 'bare');
  await mkdir(runDir);
  await mkdir(bareRunDir);
  const kernelPath = join(root, 'vmlinux');
  const rootfsPath = join(root, 'rootfs');
  await writeFile(kernelPath, 'not a kernel\n');
  await writeFile(rootfsPath, '# stand-in VMM, no knobs\n');
  const socket = join(root, 'd.sock');
  let daemon: ChildProcess | undefined;
  let stateGeneration = 0;
  const clients: VmProcessClient[] = [];

  const env: BenchEnv = {
    root,
    netns,
    runDir,
    bareRunDir,
    sandboxDir: join(root, 'sbx'),
    kernelPath,
    rootfsPath,
    vmmBin: options.vmmBin ?? nativeBin('standin-vmm'),
    address: `unix://${socket}`,
    daemonPid: () => daemon!.pid!,
    client() {
      const client = new VmProcessClient(env.address, { channelOptions: { 'grpc.max_receive_message_length': 64 << 20 } });
      clients.push(client);
      return client;
    },
    async startDaemon(extraArgs = [], options = {}) {
      if (options.fresh) stateGeneration++;
      const log = openSync(join(root, 'daemon.log'), 'a');
      daemon = spawn(process.execPath, [
        join(packageRoot, 'dist/src/bin/vmprocd.js'),
        '--vmm-bin', env.vmmBin,
        '--listen', env.address,
        '--run-dir', runDir,
        '--state-dir', join(root, `state-${stateGeneration}`),
        '--sandbox-dir', env.sandboxDir,
        '--image-root', root,
        ...extraArgs,
      ], { stdio: ['ignore', log, log] });
      closeSync(log);
      const probe = new VmProcessClient(env.address);
      try {
        await probe.waitForReady(15_000);
      } finally {
        probe.close();
      }
    },
    async stopDaemon(signal: NodeJS.Signals = 'SIGTERM') {
      for (const client of clients.splice(0)) client.close();
      if (!daemon || daemon.exitCode !== null) return;
      const exited = new Promise((resolve) => daemon!.once('exit', resolve));
      daemon.kill(signal);
      await exited;
    },
    async dispose() {
      await env.stopDaemon();
      // Whatever a benchmark left running goes: every process of this run mentions its root dir.
      await killEverythingUnder(root);
      await execa('ip', ['netns', 'del', netns], { reject: false });
      await rm(root, { recursive: true, force: true });
    },
  };
  return env;
}

async function killEverythingUnder(root: string): Promise<void> {
  const { readdir } = await import('node:fs/promises');
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(root)) {
      try {
        process.kill(Number(entry), 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}

/** RSS (KiB) and CPU time (ms, user+system) of a process, from /proc. */
export async function processUsage(pid: number): Promise<{ rssKiB: number; cpuMs: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]);
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { rssKiB, cpuMs: (ticks * 1000) / 100 };
}
