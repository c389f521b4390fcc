/**
 * The stand-in VMM (build/native/standin-vmm) started directly, as a bare VMM on a unix socket in a
 * scratch dir, for tests that drive its API themselves (no daemon, no namespaces).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { nativeBin } from '../../src/package-paths.js';
import { rawRequest, type RawResponse } from '../standin/raw-http.js';

export interface StandinProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly dir: string;
  readonly sock: string;
  /** Settles once the process has exited and its output is read. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout(): string;
  stderr(): string;
  /** One request; `body` objects are sent as JSON. */
  api(method: string, endpoint: string, body?: unknown): Promise<RawResponse>;
  /** SIGKILL (if still running) and wait for the exit. */
  kill(): Promise<void>;
}

export interface StandinOptions {
  /** Scratch dir for the socket (made under the OS temp dir when absent; the caller removes it). */
  dir?: string;
  /** $VMPROCD_SANDBOX_DIR, whose rootfs.ext4 may carry `standin.*` knobs. */
  sandboxDir?: string;
}

/** Starts a bare stand-in VMM and waits until it answers vmm.ping. */
export async function startStandin(options: StandinOptions = {}): Promise<StandinProcess> {
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'standin-'));
  const sock = path.join(dir, `api-${process.pid}-${Math.random().toString(36).slice(2, 8)}.sock`);
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  if (options.sandboxDir !== undefined) env.VMPROCD_SANDBOX_DIR = options.sandboxDir;
  const child = spawn(nativeBin('standin-vmm'), ['--api-socket', `path=${sock}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let done = false;
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => {
      done = true;
      resolve({ code, signal });
    }),
  );
  if (child.pid === undefined) throw new Error('could not spawn the stand-in VMM');
  const vmm: StandinProcess = {
    child,
    pid: child.pid,
    dir,
    sock,
    exited,
    stdout: () => stdout,
    stderr: () => stderr,
    api: (method, endpoint, body) =>
      rawRequest(sock, method, endpoint, body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)),
    async kill() {
      if (!done) child.kill('SIGKILL');
      await exited;
    },
  };
  const deadline = Date.now() + 5000;
  for (;;) {
    if (done) throw new Error(`stand-in exited before it was ready; stderr: ${stderr}`);
    try {
      if ((await vmm.api('GET', 'vmm.ping')).status === 200) return vmm;
    } catch {
      // not bound yet
    }
    if (Date.now() > deadline) {
      await vmm.kill();
      throw new Error(`stand-in not ready after 5 s; stderr: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
