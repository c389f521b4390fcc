import { access, constants, readFile } from 'node:fs/promises';
import type { LaunchFiles, ProcessIdentity, StartSpec } from '../core/domain.js';
import type { FoundLaunch, ProcessHandle, ProcessHost } from '../core/ports.js';
import { VmprocError } from '../errors.js';
import type { StartDefaults } from '../validation/start-request.js';
import { readExitStatus } from './exit-status.js';
import { ExitWatch } from './exit-watch.js';
import { findLaunchByStatusPath } from './find-reaper.js';
import { buildLaunchEnvironment, type LaunchStrategy, planLaunch, sandboxLinks } from './launch-command.js';
import { prepareLaunch } from './launch-preconditions.js';
import type { PathPolicy } from '../host/path-policy.js';
import { eventMonitorPathOf } from '../host/run-layout.js';
import { isSameLiveProcess, readBootId } from './proc-stat.js';
import { signalProcessGroup } from './process-group.js';
import { Spawner } from './spawner.js';

export interface ReaperProcessHostOptions {
  /** `vmprocd-reaper`, run once as the spawner helper. */
  readonly reaperBin: string;
  /** The daemon's configuration: the VMM binary, the netns dir, what a sandbox dir must not hide. */
  readonly defaults: StartDefaults;
  /** Where a request's host paths may lead. */
  readonly paths: PathPolicy;
  /** How a VMM gets into its sandbox (see LaunchStrategy); default `native`. */
  readonly strategy?: LaunchStrategy;
  /** This host boot, if the caller has read it already; read on first use otherwise. */
  readonly bootId?: string;
}

/**
 * The ProcessHost port on this host: VMMs launched through the spawner helper (restarted if it
 * dies), each under a reaper that records its exit; exits watched through the reapers' status
 * files; signals only to a process group whose leader still has the start time read at launch.
 */
export class ReaperProcessHost implements ProcessHost {
  readonly #options: ReaperProcessHostOptions;
  readonly #exits = new ExitWatch();
  #spawner: Promise<Spawner> | undefined;
  readonly #resolved = new Map<string, string>();
  #bootId: Promise<string> | undefined;

  constructor(options: ReaperProcessHostOptions) {
    this.#options = options;
  }

  prepareLaunch(spec: StartSpec): Promise<StartSpec> {
    return prepareLaunch(spec, this.#options.paths, this.#options.defaults);
  }

  async launch(spec: StartSpec, files: LaunchFiles): Promise<ProcessHandle> {
    const { defaults } = this.#options;
    const spawner = await this.#currentSpawner();
    const { paths } = this.#options;
    const rootOf = (path: string) => {
      const root = paths.imageRootOf(path);
      if (!root) throw new VmprocError('internal', `${path} lies under no image root: it was not resolved by prepareLaunch`);
      return root;
    };
    const links = sandboxLinks(spec, rootOf, paths.roots.allowBlockDevices);
    const program = planLaunch({ ...spec, links, vmmBin: defaults.vmmBin, eventMonitorPath: eventMonitorPathOf(files) }, this.#options.strategy ?? 'native', defaults.netnsDir);
    const env = buildLaunchEnvironment(spec.sandboxId, spec.sandboxDir);
    const file = await this.#resolve(program.file, env.PATH ?? '');
    const spawned = await spawner.spawn({
      // The request ID is the launch's status path: unique per launch, so a late report from a
      // previous run of the same sandbox can never be taken for the current one's.
      id: files.statusPath,
      statusPath: files.statusPath,
      logPath: files.logPath,
      ...(program.kind === 'sandbox' ? { sandbox: program.sandbox } : {}),
      links: program.links,
      argv: [file, ...program.args],
      env,
    });
    // Start times come from the VMM's process itself, read before it exec'd: an identity the
    // daemon can check before every signal. One it could not read never matches, so nothing is
    // signalled then.
    const identity: ProcessIdentity = {
      pid: spawned.vmmPid,
      startTime: spawned.vmmStartTime,
      reaperPid: spawned.reaperPid,
      reaperStartTime: spawned.reaperStartTime,
    };
    return processHandle(identity, spawned.logOffset, this.#exits.wait({ identity, statusPath: files.statusPath }, { orphan: !spawner.alive }));
  }

  adopt(identity: ProcessIdentity, files: LaunchFiles, logOffset: number): ProcessHandle {
    return processHandle(identity, logOffset, this.#exits.wait({ identity, statusPath: files.statusPath }, { orphan: true }));
  }

  findLaunch(files: LaunchFiles): Promise<FoundLaunch | undefined> {
    return findLaunchByStatusPath(files.statusPath);
  }

  recordedExit(files: LaunchFiles) {
    return readExitStatus(files.statusPath);
  }

  isAlive(pid: number, startTime: bigint): Promise<boolean> {
    return isSameLiveProcess(pid, startTime);
  }

  bootId(): Promise<string> {
    this.#bootId ??= this.#options.bootId !== undefined ? Promise.resolve(this.#options.bootId) : readBootId();
    return this.#bootId;
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
    const starting = Spawner.start(this.#options.reaperBin).then((spawner) => {
      spawner.onReaped((reaperPid) => this.#exits.reaped(reaperPid));
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

function processHandle(identity: ProcessIdentity, logOffset: number, exited: ProcessHandle['exited']): ProcessHandle {
  return {
    identity,
    logOffset,
    exited,
    signal: (signal) => signalProcessGroup(identity.pid, identity.startTime, signal),
    networkInterfaces: () => networkInterfacesOf(identity.pid),
  };
}

/** The interfaces of a process's network namespace: /proc/PID/net/dev, no entering of the namespace. */
async function networkInterfacesOf(pid: number): Promise<string[]> {
  const text = await readFile(`/proc/${pid}/net/dev`, 'utf8');
  // Two header lines, then `  name: counters...` per interface.
  return text.split('\n').slice(2).map((line) => line.split(':')[0]!.trim()).filter((name) => name !== '');
}
