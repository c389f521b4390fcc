import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { VmprocError } from '../errors.js';
import { posix } from 'node:path';
import type { SandboxLink, SandboxSetup } from './launch-command.js';
import { UNKNOWN_START_TIME } from '../core/domain.js';

export interface SpawnRequest {
  /** Matches the answer to the request; one launch per ID at a time. */
  readonly id: string;
  readonly statusPath: string;
  readonly logPath: string;
  /** Set up this sandbox in the VMM's process before exec (the native launch). */
  readonly sandbox?: SandboxSetup;
  /** Files the VMM's process opens beneath their roots, as descriptors 3, 4, ... kept across exec. */
  readonly links?: readonly SandboxLink[];
  /** argv[0] must be an absolute path. */
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
}

export interface Spawned {
  readonly reaperPid: number;
  readonly vmmPid: number;
  /** Where this run's output starts in the log. */
  readonly logOffset: number;
  /** /proc/PID/stat start times, read by the VMM's process itself (UNKNOWN_START_TIME if unreadable). */
  readonly reaperStartTime: bigint;
  readonly vmmStartTime: bigint;
}

/**
 * The daemon's side of `vmprocd-reaper --spawner` (see native/vmprocd-reaper.c): one small helper
 * process that forks a reaper per launch, so the daemon never forks itself (forking a large Node
 * process costs milliseconds of blocked event loop; forking the helper costs microseconds).
 *
 * Node's child_process and not execa: this is one long-lived helper spoken to over raw pipes
 * with a binary request framing; execa's buffering and result promise do not fit that.
 */
export class Spawner {
  readonly #child: ChildProcess;
  readonly #pending = new Map<string, { resolve: (spawned: Spawned) => void; reject: (error: unknown) => void }>();
  readonly #reapedListeners = new Set<(reaperPid: number) => void>();
  readonly #exitedListeners = new Set<(id: string, statusFile: string | undefined) => void>();
  readonly #exitListeners = new Set<() => void>();
  #exited = false;
  readonly #ended: Promise<void>;

  private constructor(child: ChildProcess) {
    this.#child = child;
    this.#ended = new Promise((resolve) => child.once('exit', () => resolve()));
    createInterface({ input: child.stdout! }).on('line', (line) => this.#onAnswer(line));
    child.once('exit', (code, signal) => {
      this.#exited = true;
      const error = new VmprocError('unavailable', `the spawner helper ended (${signal ?? `exit code ${code}`}); retry the start`);
      for (const pending of this.#pending.values()) pending.reject(error);
      this.#pending.clear();
      for (const listener of this.#exitListeners) listener();
    });
    // A request written to a dead helper: the exit handler above reports it.
    child.stdin!.on('error', () => {});
  }

  /** Starts the helper and waits until it runs. */
  static async start(reaperBin: string): Promise<Spawner> {
    const child = spawn(reaperBin, ['--spawner'], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve());
      child.once('error', (cause) =>
        reject(new VmprocError('failed-precondition', `cannot run ${reaperBin} --spawner: ${cause.message}`, { cause })));
    });
    return new Spawner(child);
  }

  get alive(): boolean {
    return !this.#exited;
  }

  /** Resolves once the VMM exists (its reaper has forked it). */
  spawn(request: SpawnRequest): Promise<Spawned> {
    if (this.#exited) return Promise.reject(new VmprocError('unavailable', 'the spawner helper is not running; retry the start'));
    if (this.#pending.has(request.id)) return Promise.reject(new VmprocError('internal', `a launch of ${request.id} is already in flight`));
    let encoded: Buffer;
    try {
      encoded = encodeRequest(request);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#pending.set(request.id, { resolve, reject });
      this.#child.stdin!.write(encoded);
    });
  }

  /**
   * Called when a reaper reports its VMM's end, with the status file's content when it fitted in
   * the report (the file is written first and stays the record).
   */
  onExited(listener: (id: string, statusFile: string | undefined) => void): void {
    this.#exitedListeners.add(listener);
  }

  /** Called with the PID of every reaper that ends; its status file is final by then. */
  onReaped(listener: (reaperPid: number) => void): void {
    this.#reapedListeners.add(listener);
  }

  /** Called once if the helper ends; its reapers live on, but no longer report to us. */
  onExit(listener: () => void): void {
    this.#exitListeners.add(listener);
  }

  /**
   * Ends the helper (reapers it forked keep running) and resolves once it has exited, so a stopped
   * daemon leaves no helper of its own behind. It ends by itself when its stdin closes; one that
   * has not within `graceMs` is killed.
   */
  async close(graceMs = CLOSE_GRACE_MS): Promise<void> {
    this.#child.stdin!.end();
    if (this.#exited) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), graceMs);
    });
    try {
      if ((await Promise.race([this.#ended, late])) === 'late') {
        this.#child.kill('SIGKILL');
        await this.#ended;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  #onAnswer(line: string): void {
    const [kind, ...rest] = line.split(' ');
    if (kind === 'reaped') {
      const reaperPid = Number(rest[0]);
      for (const listener of this.#reapedListeners) listener(reaperPid);
      return;
    }
    if (kind === 'exited') {
      const content = rest[1] ? Buffer.from(rest[1], 'base64').toString('utf8') : undefined;
      for (const listener of this.#exitedListeners) listener(rest[0] ?? '', content);
      return;
    }
    const id = rest[0] ?? '';
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    if (kind === 'spawned') {
      pending.resolve({
        reaperPid: Number(rest[1]),
        vmmPid: Number(rest[2]),
        logOffset: Number(rest[3]),
        reaperStartTime: startTime(rest[4]),
        vmmStartTime: startTime(rest[5]),
      });
    } else {
      pending.reject(new VmprocError('internal', `cannot launch: ${rest.slice(1).join(' ')}`));
    }
  }
}

/** How long the helper may take to end once its stdin is closed before it is killed. */
const CLOSE_GRACE_MS = 2_000;

/** 0 means the helper could not read it. */
function startTime(text: string | undefined): bigint {
  return text && /^[1-9]\d*$/.test(text) ? BigInt(text) : UNKNOWN_START_TIME;
}

/**
 * A 4-byte little-endian length, then NUL-terminated fields: id, status, log, kind ("exec", or
 * "sandbox" and its three fields), linkc, links (name, root, path relative to the root, "file" or
 * "file-or-block"), argc, argv, envc, env.
 */
export function encodeRequest(request: SpawnRequest): Buffer {
  const env = Object.entries(request.env).map(([key, value]) => `${key}=${value}`);
  const sb = request.sandbox;
  const kind = sb ? ['sandbox', sb.dir, sb.netnsPath, sb.netnsName] : ['exec'];
  const links = request.links ?? [];
  const linkFields = links.flatMap((link) => {
    const relative = posix.relative(link.root, link.path);
    if (relative === '' || relative.startsWith('..') || posix.isAbsolute(relative)) {
      throw new VmprocError('internal', `link ${link.name}: ${link.path} is not beneath its root ${link.root}`);
    }
    return [link.name, link.root, relative, link.allowBlock ? 'file-or-block' : 'file'];
  });
  const fields = [request.id, request.statusPath, request.logPath, ...kind, String(links.length), ...linkFields, String(request.argv.length), ...request.argv, String(env.length), ...env];
  for (const field of fields) {
    // Validation keeps NUL out of every value; this guards the framing itself.
    if (field.includes('\0')) throw new VmprocError('invalid-argument', 'a launch argument contains a NUL byte');
  }
  const payload = Buffer.from(fields.map((f) => `${f}\0`).join(''));
  const header = Buffer.alloc(4);
  header.writeUInt32LE(payload.length);
  return Buffer.concat([header, payload]);
}
