import { access, constants } from 'node:fs/promises';
import { VmprocError } from '../errors.js';
import type { ExitStatus } from './exit-status.js';
import { ExitWatch, type WatchedProcess } from './exit-watch.js';
import type { LaunchProgram } from './launch-command.js';
import { Spawner } from './spawner.js';
import type { VmmProcess } from './vmm-process.js';

export interface LaunchRequest {
  readonly sandboxId: string;
  readonly program: LaunchProgram;
  readonly env: Readonly<Record<string, string>>;
  /** The VMM's stdout and stderr are appended here. */
  readonly logPath: string;
  /** Where its reaper records the exit status. */
  readonly statusPath: string;
}

/** Starts VMMs under reapers and tells how each ended; the supervisor's only door to processes. */
export interface VmmLauncher {
  launch(request: LaunchRequest): Promise<VmmProcess>;
  /** Supervises a VMM a previous daemon launched (its reaper is not our child). */
  adopt(process: WatchedProcess): Promise<ExitStatus | undefined>;
  /** Stops launching; resolves once the launcher's own helpers have ended (VMMs keep running). */
  close(): Promise<void>;
}

/**
 * Launches through the spawner helper (restarted if it dies) and watches exits through the
 * reapers' status files.
 */
export class ReaperLauncher implements VmmLauncher {
  readonly #reaperBin: string;
  readonly #exits = new ExitWatch();
  #spawner: Promise<Spawner> | undefined;
  readonly #resolved = new Map<string, string>();

  constructor(reaperBin: string) {
    this.#reaperBin = reaperBin;
  }

  async launch(request: LaunchRequest): Promise<VmmProcess> {
    const spawner = await this.#currentSpawner();
    const { program } = request;
    const file = await this.#resolve(program.file, request.env.PATH ?? '');
    const spawned = await spawner.spawn({
      id: request.statusPath,
      statusPath: request.statusPath,
      logPath: request.logPath,
      ...(program.kind === 'sandbox' ? { sandbox: program.sandbox } : {}),
      argv: [file, ...program.args],
      env: request.env,
    });
    // Start times come from the VMM's process itself, read before it exec'd: an identity the
    // daemon can check before every signal. One it could not read never matches, so nothing is
    // signalled then.
    const identity: WatchedProcess = {
      pid: spawned.vmmPid,
      startTime: spawned.vmmStartTime,
      reaperPid: spawned.reaperPid,
      reaperStartTime: spawned.reaperStartTime,
      statusPath: request.statusPath,
    };
    return { ...identity, logOffset: spawned.logOffset, exited: this.#exits.wait(identity, { orphan: !spawner.alive }) };
  }

  adopt(process: WatchedProcess): Promise<ExitStatus | undefined> {
    return this.#exits.wait(process, { orphan: true });
  }

  async close(): Promise<void> {
    this.#exits.close();
    await this.#spawner?.then((spawner) => spawner.close(), () => undefined);
  }

  /** The running spawner, started on first use and again after it died. */
  #currentSpawner(): Promise<Spawner> {
    const current = this.#spawner;
    if (current) {
      return current.then((spawner) => (spawner.alive ? spawner : this.#startSpawner()));
    }
    return this.#startSpawner();
  }

  #startSpawner(): Promise<Spawner> {
    const starting = Spawner.start(this.#reaperBin).then((spawner) => {
      spawner.onReaped((reaperPid) => this.#exits.reaped(reaperPid));
      // The request ID is the launch's status path: unique per launch, so a late report from a
      // previous run of the same sandbox can never be taken for the current one's.
      spawner.onExited((statusPath, statusFile) => this.#exits.reported(statusPath, statusFile));
      spawner.onExit(() => this.#exits.orphanAll());
      return spawner;
    });
    this.#spawner = starting;
    starting.catch(() => {
      if (this.#spawner === starting) this.#spawner = undefined;
    });
    return starting;
  }

  /** The spawner execs argv[0] as given: resolve bare names on the launch's PATH once. */
  async #resolve(file: string, path: string): Promise<string> {
    if (file.startsWith('/')) return file;
    const cached = this.#resolved.get(file);
    if (cached) return cached;
    for (const dir of path.split(':').filter(Boolean)) {
      const candidate = `${dir}/${file}`;
      try {
        await access(candidate, constants.X_OK);
        this.#resolved.set(file, candidate);
        return candidate;
      } catch {
        // next
      }
    }
    throw new VmprocError('failed-precondition', `${file} is not installed (looked in ${path}); install util-linux`);
  }
}
