/**
 * The README's grpcurl session, exactly as README.md writes it (the block after
 * `<!-- ci: grpcurl-session -->`), run with bash against a daemon started as `npm start` starts
 * it: vmprocd-dev.js in the checkout, with its defaults. Both run in a mount and a network
 * namespace of this test's own, where 127.0.0.1:50051, the checkout's .run/ (a tmpfs) and the
 * named network namespaces (/run/netns, a tmpfs) are private: a developer's `npm start` and
 * namespaces are left alone, and what the session makes goes with the namespaces.
 */
import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { packageRoot } from '../../src/package-paths.js';
import { goTool } from '../helpers/go.js';
import { describeDescendants } from '../helpers/process-scan.js';
import { readmeBlock } from '../helpers/readme-block.js';
import { describeAsRoot } from '../helpers/root.js';
import { eventually, WAIT_MS } from '../helpers/wait.js';

/** Building grpcurl on a cold Go cache takes minutes on two cores. */
const BUILD_MS = 10 * 60_000;
const SESSION_MS = 120_000;
const RUN_DIR = join(packageRoot, '.run');

/** Private namespaces, then the daemon: `$1` is the checkout's .run, the rest the command. */
const NAMESPACES = [
  'set -eu',
  'ip link set lo up',
  'mkdir -p /run/netns',
  'mount -t tmpfs -o mode=0755 vmpt-netns /run/netns',
  'mount -t tmpfs -o mode=0755 vmpt-run "$1"',
  'shift',
  'exec "$@"',
].join('\n');

/** The environment of a developer's shell: none of jest's NODE_OPTIONS, none of the daemon's VMPROCD_* settings. */
function shellEnv(): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== 'NODE_OPTIONS' && !key.startsWith('VMPROCD_')));
  return { ...env, npm_config_update_notifier: 'false' };
}

/** The top-level JSON objects grpcurl printed (each starts with `{` and ends with `}` at column 0). */
function printedObjects(stdout: string): Array<Record<string, any>> {
  return [...stdout.matchAll(/^\{\n[\s\S]*?\n\}$/gm)].map((m) => JSON.parse(m[0]) as Record<string, any>);
}

describeAsRoot('README: the grpcurl session, exactly as written, against npm start', () => {
  let script: string;
  let daemon: ChildProcess | undefined;
  let daemonExited: Promise<void>;
  let madeRunDir = false;
  let client: VmProcessClient | undefined;
  const daemonLog: string[] = [];

  beforeAll(async () => {
    script = await readmeBlock('grpcurl-session');
    await goTool('grpcurl');
    if (!existsSync(RUN_DIR)) {
      await mkdir(RUN_DIR);
      madeRunDir = true;
    }
    const child = spawn('unshare', ['--mount', '--net', '--propagation', 'private', '--', 'bash', '-c', NAMESPACES, 'vmpt-namespaces',
      RUN_DIR, process.execPath, join(packageRoot, 'dist', 'src', 'bin', 'vmprocd-dev.js')], {
      cwd: packageRoot, env: shellEnv(), stdio: ['ignore', 'pipe', 'pipe'],
    });
    daemon = child;
    daemonExited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => daemonLog.push(chunk));
    const serving = new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        daemonLog.push(line);
        if (line.includes('"msg":"vmprocd serving"')) resolve();
      });
      void daemonExited.then(() => reject(new Error(`the daemon ended before serving:\n${daemonLog.join('\n')}`)));
      setTimeout(() => reject(new Error(`the daemon did not serve within ${WAIT_MS}ms:\n${daemonLog.join('\n')}`)), WAIT_MS).unref();
    });
    await serving;
    // The daemon's socket as this test (in the host's mount namespace) reaches it.
    const socket = `/proc/${child.pid}/root${RUN_DIR}/vmprocd.sock`;
    if (Buffer.byteLength(socket) > 107) throw new Error(`socket path too long for a unix socket: ${socket}`);
    client = new VmProcessClient(`unix://${socket}`);
  }, BUILD_MS);

  afterAll(async () => {
    const problems: string[] = [];
    let leftovers: string[] = [];
    try {
      if (daemon?.pid !== undefined && daemon.exitCode === null) {
        const { processes } = await client!.listProcesses({ states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] });
        if (processes.length) problems.push(`live after the session: ${processes.map((p) => p.sandboxId).join(', ')}`);
        await Promise.allSettled(processes.map((p) => client!.stopProcess({ sandboxId: p.sandboxId, gracePeriod: { seconds: 0n } })));
        // What the daemon runs besides VMMs: its spawner and its state-dir lock holder. Anything
        // else under it (a reaper, a VMM) outlived the session.
        const isHelper = (cmdline: string) => / --(spawner|lock)\b/.test(cmdline);
        let strays: Array<{ pid: number; cmdline: string }> = [];
        await eventually(async () => (strays = (await describeDescendants(daemon!.pid!)).filter((p) => !isHelper(p.cmdline))).length === 0, WAIT_MS)
          .catch(() => undefined);
        leftovers = strays.map(({ pid, cmdline }) => `${pid}: ${cmdline.slice(0, 300)}`);
        for (const { pid } of strays) process.kill(pid, 'SIGKILL');
      }
    } catch (error) {
      problems.push(`checking what is left: ${String(error)}`);
    } finally {
      client?.close();
      if (daemon && daemon.exitCode === null) {
        const helpers = daemon.pid !== undefined ? await describeDescendants(daemon.pid) : [];
        daemon.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const ended = await Promise.race([daemonExited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), WAIT_MS)))]);
        clearTimeout(timer);
        if (!ended) {
          problems.push('the daemon did not exit on SIGTERM');
          daemon.kill('SIGKILL');
          await daemonExited;
        }
        // Its helpers end with it; then nothing is left in its namespaces, which go too.
        const alive = (pid: number) => existsSync(`/proc/${pid}`);
        await eventually(() => !helpers.some((h) => alive(h.pid)), WAIT_MS).catch(() => problems.push(`helpers outlived the daemon: ${JSON.stringify(helpers)}`));
      }
      if (madeRunDir) await rmdir(RUN_DIR).catch((error: unknown) => problems.push(`removing ${RUN_DIR}: ${String(error)}`));
    }
    expect({ leftovers, problems }).toEqual({ leftovers: [], problems: [] });
  }, 60_000);

  it('lists and describes through reflection, boots a VM, pauses it, watches its exit and stops it', async () => {
    const run = await execa('nsenter', ['--target', String(daemon!.pid), '--mount', '--net', `--wdns=${packageRoot}`,
      'bash', '-c', script, 'readme-grpcurl-session'], { env: shellEnv(), reject: false, timeout: SESSION_MS });
    // Every command worked: the one thing on stderr is the watch's end, after its 10 s. Whichever
    // side's deadline fires first words it: grpcurl's context, or the daemon's grpc-js ("Deadline exceeded").
    const worked = run.exitCode === 0 && /^ERROR:\n {2}Code: DeadlineExceeded\n {2}Message: (context deadline exceeded|Deadline exceeded)$/.test(run.stderr.trim());
    expect(worked ? 'worked' : `exit ${run.exitCode}\n--- stdout:\n${run.stdout}\n--- stderr:\n${run.stderr}`).toBe('worked');

    expect(run.stdout).toMatch(/^vmprocess\.v1\.VmProcessService$/m);
    expect(run.stdout).toMatch(/^grpc\.health\.v1\.Health$/m);
    expect(run.stdout).toContain('vmprocess.v1.VmConfig is a message:');
    expect(run.stdout).toContain('repeated .vmprocess.v1.NetConfig net = 9;');

    const printed = printedObjects(run.stdout);
    const answers = printed.filter((o) => o.process);
    const exits = printed.filter((o) => o.sequence !== undefined);
    const infos = printed.filter((o) => o.vm);
    expect({ answers: answers.length, exits: exits.length, infos: infos.length, all: printed.length }).toEqual({ answers: 3, exits: 1, infos: 1, all: 5 });
    const [started, paused, stopped] = answers.map((a) => a.process);
    expect({ state: started.state, vm: started.vmState, netns: started.networkNamespace }).toEqual({
      state: 'PROCESS_STATE_RUNNING', vm: 'VM_STATE_RUNNING', netns: 'demo-vm',
    });
    expect({ state: paused.state, vm: paused.vmState }).toEqual({ state: 'PROCESS_STATE_RUNNING', vm: 'VM_STATE_PAUSED' });
    expect({ state: infos[0]!.vm.state, vcpus: infos[0]!.vm.vcpus, memory: infos[0]!.vm.memoryBytes }).toEqual({
      state: 'VM_STATE_PAUSED', vcpus: 1, memory: String(64 << 20),
    });
    expect({ state: stopped.state, reason: stopped.exit?.reason }).toEqual({ state: 'PROCESS_STATE_EXITED', reason: 'EXIT_REASON_STOPPED' });
    // The watch saw that very exit.
    expect(exits[0]).toEqual(stopped.exit);
    expect(exits[0]!.sandboxId).toBe('vm-1');

    // It cleaned up its network namespace; the daemon has nothing live.
    const { stdout: namespaces } = await execa('nsenter', ['--target', String(daemon!.pid), '--mount', '--net', 'ip', 'netns', 'list']);
    expect(namespaces).toBe('');
    const { processes } = await client!.listProcesses({});
    expect(processes.map((p) => [p.sandboxId, p.state])).toEqual([['vm-1', ProcessState.EXITED]]);
  }, SESSION_MS);
});
