/**
 * The real daemon binary (dist/src/bin/vmprocd.js, from `npm run build`) as a child process, for
 * tests that kill it: SIGKILL, restart on the same state, and check what the new one recovered.
 *
 * Unlike daemon-harness.ts (the daemon inside the test process), this one can die by any signal
 * at any moment without taking the test with it. Its JSON log lines are kept, parsed, in `logs`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { nativeBin, packageRoot } from '../../src/package-paths.js';
import type { SandboxFixture } from './sandbox-fixture.js';

export const DAEMON_BIN = join(packageRoot, 'dist', 'src', 'bin', 'vmprocd.js');

/** One line the daemon logged (pino JSON): `msg`, `level` and whatever fields came with it. */
export type DaemonLogLine = Record<string, unknown> & { readonly msg?: string; readonly level?: number };

export interface DaemonProcessOptions {
  /** Default `<fixture.root>/state`. */
  readonly stateDir?: string;
  /** Unix socket to listen on; default `<fixture.root>/d.sock`. At most 107 bytes. */
  readonly socketPath?: string;
  readonly exitHistory?: number;
  /** Default the reaper built with the package. */
  readonly reaperBin?: string;
  /** Default `info`. */
  readonly logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  /** Default the daemon's own (`always`). */
  readonly stateSync?: 'always' | 'none';
  readonly extraArgs?: readonly string[];
}

export interface DaemonExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** The command-line flags for a daemon on `fixture` (see `vmprocd --help`). */
export function daemonArgs(fixture: SandboxFixture, options: DaemonProcessOptions = {}): string[] {
  const socketPath = options.socketPath ?? join(fixture.root, 'd.sock');
  if (Buffer.byteLength(socketPath) > 107) throw new Error(`daemon socket path too long (${socketPath})`);
  return [
    '--vmm-bin', nativeBin('standin-vmm'),
    '--listen', `unix://${socketPath}`,
    '--run-dir', fixture.runDir,
    '--state-dir', options.stateDir ?? join(fixture.root, 'state'),
    '--sandbox-dir', fixture.sandboxDir,
    '--image-root', fixture.root,
    ...(options.stateSync !== undefined ? ['--state-sync', options.stateSync] : []),
    '--log-level', options.logLevel ?? 'info',
    ...(options.exitHistory !== undefined ? ['--exit-history', String(options.exitHistory)] : []),
    ...(options.reaperBin !== undefined ? ['--reaper-bin', options.reaperBin] : []),
    ...(options.extraArgs ?? []),
  ];
}

/**
 * A running (or ended) daemon process. `start()` resolves once it logged "vmprocd serving";
 * `launch()` does not wait, for daemons expected to fail.
 */
export class DaemonProcess {
  readonly child: ChildProcess;
  readonly address: string;
  readonly socketPath: string;
  readonly args: readonly string[];
  readonly logs: DaemonLogLine[] = [];
  /** Raw stdout lines that were not JSON, and all of stderr. */
  readonly rawStdout: string[] = [];
  stderr = '';
  /** When spawn() was called and when "vmprocd serving" was seen (Date.now()). */
  readonly spawnedAt: number;
  servingAt: number | undefined;
  readonly #exited: Promise<DaemonExit>;
  #exit: DaemonExit | undefined;
  readonly #clients: VmProcessClient[] = [];
  readonly #logWaiters = new Set<{ match: (line: DaemonLogLine) => boolean; resolve: (line: DaemonLogLine) => void }>();

  private constructor(fixture: SandboxFixture, options: DaemonProcessOptions) {
    if (!existsSync(DAEMON_BIN)) throw new Error(`${DAEMON_BIN} is missing: run npm run build first`);
    this.socketPath = options.socketPath ?? join(fixture.root, 'd.sock');
    this.address = `unix://${this.socketPath}`;
    this.args = daemonArgs(fixture, options);
    const env = { ...process.env };
    // jest's --experimental-vm-modules is not the daemon's business (it only adds a warning).
    delete env.NODE_OPTIONS;
    this.spawnedAt = Date.now();
    this.child = spawn(process.execPath, [DAEMON_BIN, ...this.args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const closed = new Promise<void>((resolve) => this.child.once('close', () => resolve()));
    this.#exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        // Its last log lines may still be in the pipe: wait for the streams to close, but not
        // for long (a process it started could hold them open).
        const drained = new Promise<void>((done) => setTimeout(done, 500).unref());
        void Promise.race([closed, drained]).then(() => {
          this.#exit = { code, signal };
          resolve(this.#exit);
        });
      });
      this.child.once('error', (error) => {
        this.stderr += `spawn error: ${error.message}\n`;
        this.#exit = { code: null, signal: null };
        resolve(this.#exit);
      });
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    createInterface({ input: this.child.stdout! }).on('line', (text) => this.#onLine(text));
  }

  /** Spawns the daemon and resolves once it serves; rejects with its output if it ends first. */
  static async start(fixture: SandboxFixture, options: DaemonProcessOptions = {}, timeoutMs = 15_000): Promise<DaemonProcess> {
    const daemon = new DaemonProcess(fixture, options);
    try {
      await daemon.waitForServing(timeoutMs);
    } catch (error) {
      if (!daemon.#exit) {
        daemon.child.kill('SIGKILL');
        await daemon.#exited;
      }
      throw error;
    }
    return daemon;
  }

  /** Spawns the daemon without waiting for anything. */
  static launch(fixture: SandboxFixture, options: DaemonProcessOptions = {}): DaemonProcess {
    return new DaemonProcess(fixture, options);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The exit, once it has happened. */
  get exit(): DaemonExit | undefined {
    return this.#exit;
  }

  /** The "vmprocd serving" line (with `readopted` and `exitSequence`), once logged. */
  get servingLine(): DaemonLogLine | undefined {
    return this.logs.find((l) => l.msg === 'vmprocd serving');
  }

  /** Everything it printed, for failure messages. */
  get output(): string {
    return [
      ...this.logs.map((l) => JSON.stringify(l)),
      ...this.rawStdout,
      this.stderr ? `stderr: ${this.stderr}` : '',
    ].filter(Boolean).join('\n');
  }

  async waitForServing(timeoutMs = 15_000): Promise<DaemonLogLine> {
    const exited = this.#exited.then((exit) => {
      throw new Error(`vmprocd exited (code ${exit.code}, signal ${exit.signal}) before serving:\n${this.output}`);
    });
    exited.catch(() => undefined); // only the race below reports it
    const line = await Promise.race([this.waitForLog((l) => l.msg === 'vmprocd serving', timeoutMs), exited]);
    this.servingAt ??= Date.now();
    return line;
  }

  /** The first log line (already seen or still to come) matching `match`. */
  waitForLog(match: (line: DaemonLogLine) => boolean, timeoutMs = 10_000): Promise<DaemonLogLine> {
    const seen = this.logs.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (line: DaemonLogLine) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        this.#logWaiters.delete(waiter);
        reject(new Error(`vmprocd logged no matching line within ${timeoutMs}ms:\n${this.output}`));
      }, timeoutMs);
      timer.unref(); // a wait that lost a race (e.g. to the daemon's exit) must not hold the test process
      this.#logWaiters.add(waiter);
    });
  }

  /** A client on this daemon's socket; closed by kill(), stop() and closeClients(). */
  client(): VmProcessClient {
    const client = new VmProcessClient(this.address);
    this.#clients.push(client);
    return client;
  }

  closeClients(): void {
    for (const client of this.#clients.splice(0)) client.close();
  }

  /** Sends `signal` (SIGKILL by default) and resolves once the process has exited. */
  async kill(signal: NodeJS.Signals = 'SIGKILL', timeoutMs = 10_000): Promise<DaemonExit> {
    if (!this.#exit) this.child.kill(signal);
    const exit = await this.waitExit(timeoutMs);
    this.closeClients();
    return exit;
  }

  /** SIGTERM: the daemon stops serving and exits; its VMMs keep running. */
  stop(timeoutMs = 15_000): Promise<DaemonExit> {
    return this.kill('SIGTERM', timeoutMs);
  }

  /** Resolves with the exit code and signal; rejects if it has not exited within `timeoutMs`. */
  async waitExit(timeoutMs = 10_000): Promise<DaemonExit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`vmprocd (pid ${this.pid}) did not exit within ${timeoutMs}ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.#exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #onLine(text: string): void {
    let line: DaemonLogLine;
    try {
      line = JSON.parse(text) as DaemonLogLine;
    } catch {
      this.rawStdout.push(text);
      return;
    }
    this.logs.push(line);
    for (const waiter of [...this.#logWaiters]) {
      if (waiter.match(line)) {
        this.#logWaiters.delete(waiter);
        waiter.resolve(line);
      }
    }
  }
}
