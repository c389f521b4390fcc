import { type ChildProcess, spawn } from 'node:child_process';
import { connect } from 'node:net';
import { closeSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { buildLaunchCommand, buildLaunchEnvironment } from '../../src/launch/launch-command.js';

/**
 * The baseline: the same launch script as the daemon's, spawned straight from this process, with
 * readiness found by a minimal ping loop. No gRPC, no validation, no reaper, no journal.
 */
export interface BareLaunchSetup {
  readonly runDir: string;
  readonly sandboxDir: string;
  readonly kernelPath: string;
  readonly rootfsPath: string;
  readonly netns: string;
  readonly vmmBin: string;
}

export interface BareVmm {
  readonly pid: number;
  readonly child: ChildProcess;
  readonly socketPath: string;
  readonly exited: Promise<void>;
}

export interface BareVmmOptions {
  /** 'pipe': the VMM's stdout (a VM's serial console, in Tty mode) on `child.stdout`. */
  readonly stdout?: 'ignore' | 'pipe';
}

export function spawnBare(setup: BareLaunchSetup, id: string, options: BareVmmOptions = {}): BareVmm {
  const socketPath = join(setup.runDir, `${id}.sock`);
  const links = [
    { name: 'vmlinux', root: dirname(setup.kernelPath), path: setup.kernelPath, allowBlock: false },
    { name: 'rootfs.ext4', root: dirname(setup.rootfsPath), path: setup.rootfsPath, allowBlock: false },
  ];
  // The same VMM command line as the daemon's, event monitor included.
  const eventMonitorPath = join(setup.runDir, `${id}.events`);
  const command = buildLaunchCommand({ sandboxDir: setup.sandboxDir, links, networkNamespace: setup.netns, vmmBin: setup.vmmBin, socketPath, eventMonitorPath });
  // The script links the files the launching process holds open as descriptors 3 and 4; the
  // reaper opens them beneath their roots, here they are simply opened.
  const fds = links.map((link) => openSync(link.path, 'r'));
  const child = spawn(command.file, [...command.args], {
    detached: true,
    stdio: ['ignore', options.stdout ?? 'ignore', 'ignore', ...fds],
    env: buildLaunchEnvironment(id, setup.sandboxDir),
  });
  for (const fd of fds) closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { pid: child.pid!, child, socketPath, exited };
}

const PING = 'GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n';

/** Retries every `retryMs` until GET /api/v1/vmm.ping answers 200. */
export function pingUntilReady(socketPath: string, timeoutMs = 10_000, retryMs = 1): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = connect(socketPath);
      let data = '';
      socket.on('connect', () => socket.write(PING));
      socket.on('data', (chunk) => {
        data += chunk;
        if (data.startsWith('HTTP/1.1 200') && data.includes('\r\n\r\n')) {
          socket.destroy();
          resolve();
        }
      });
      socket.on('error', () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`${socketPath} not ready within ${timeoutMs}ms`));
        else setTimeout(attempt, retryMs);
      });
    };
    attempt();
  });
}

export async function killBare(vmm: BareVmm, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  try {
    process.kill(-vmm.pid, signal);
  } catch {
    // already gone
  }
  await vmm.exited;
}
