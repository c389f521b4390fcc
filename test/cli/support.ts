/** Runs the built vmprocctl binary (dist/, from `npm run build`) as its own process. */
import { execa } from 'execa';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { packageRoot } from '../../src/package-paths.js';

export const CTL_BIN = join(packageRoot, 'dist', 'src', 'bin', 'vmprocctl.js');

export interface CtlResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The environment vmprocctl runs with: no jest flags, no VMPROCD_ADDRESS unless a test sets one. */
export function ctlEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env, NODE_OPTIONS: undefined, VMPROCD_ADDRESS: undefined, ...extra };
  return env;
}

/** `vmprocctl ARGS`, to completion (bounded), whatever its exit code. */
export async function ctl(args: readonly string[], options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): Promise<CtlResult> {
  if (!existsSync(CTL_BIN)) throw new Error(`${CTL_BIN} is missing: run npm run build first`);
  const result = await execa(process.execPath, [CTL_BIN, ...args], {
    reject: false,
    env: ctlEnv(options.env),
    extendEnv: false,
    timeout: options.timeoutMs ?? 20_000,
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  if (result.timedOut) throw new Error(`vmprocctl ${args.join(' ')} timed out:\n${result.stdout}\n${result.stderr}`);
  return { exitCode: result.exitCode ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** `vmprocctl ARGS` left running (watch, logs --follow): its stdout lines as they come. */
export class RunningCtl {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #waiters = new Set<() => void>();

  constructor(args: readonly string[], env: Record<string, string> = {}) {
    this.child = spawn(process.execPath, [CTL_BIN, ...args], { env: ctlEnv(env) as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.lines.push(line);
      for (const waiter of [...this.#waiters]) waiter();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
      for (const waiter of [...this.#waiters]) waiter();
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    void this.exited.then(() => {
      for (const waiter of [...this.#waiters]) waiter();
    });
  }

  /** Resolves once `check` holds, re-checked at every line; rejects after `timeoutMs`. */
  waitFor(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (!check()) return;
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`vmprocctl: no ${what} within ${timeoutMs}ms; stdout:\n${this.lines.join('\n')}\nstderr:\n${this.stderr}`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  waitForLines(count: number, timeoutMs?: number): Promise<void> {
    return this.waitFor(() => this.lines.length >= count, `${count} lines`, timeoutMs);
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    await this.exited;
  }
}
