import { mkdir, readdir } from 'node:fs/promises';
import { posix } from 'node:path';
import type { LaunchFiles, SocketFiles } from '../core/domain.js';
import type { RunLayout } from '../core/ports.js';
import { removeLogFiles } from '../logs/log-files.js';
import { readLogTail } from '../logs/log-tail.js';
import { removeFile } from './remove-file.js';
import { eventMonitorPathOf, exitsDir, logsDir, newLaunchFiles } from './run-layout.js';
import { claimSocket, releaseSocket, socketFilesOf } from './socket-files.js';

/** The RunLayout port on the host's run dir. */
export class RunDirLayout implements RunLayout {
  readonly runDir: string;

  constructor(runDir: string) {
    this.runDir = runDir;
  }

  async prepare(): Promise<void> {
    await mkdir(logsDir(this.runDir), { recursive: true, mode: 0o750 });
    await mkdir(exitsDir(this.runDir), { recursive: true, mode: 0o750 });
  }

  launchFiles(sandboxId: string): LaunchFiles {
    return newLaunchFiles(this.runDir, sandboxId);
  }

  readLogTail(logPath: string, fromOffset: number): Promise<string> {
    return readLogTail(logPath, fromOffset);
  }

  removeLogs(logPath: string): Promise<void> {
    return removeLogFiles(logPath);
  }

  claimSocket(socketPath: string): Promise<SocketFiles> {
    return claimSocket(socketPath);
  }

  socketFiles(socketPath: string, claimed: SocketFiles): Promise<SocketFiles> {
    return socketFilesOf(socketPath, claimed);
  }

  releaseSocket(socketPath: string, known: SocketFiles): Promise<void> {
    return releaseSocket(socketPath, known);
  }

  async removeLaunchFiles(files: LaunchFiles): Promise<void> {
    await Promise.all([removeFile(files.statusPath), removeFile(`${files.statusPath}.pids`), removeFile(eventMonitorPathOf(files))]);
  }

  async orphanStatusPaths(kept: readonly LaunchFiles[]): Promise<ReadonlySet<string>> {
    const dir = exitsDir(this.runDir);
    const keep = new Set(kept.map((files) => posix.basename(files.statusPath)));
    const names = (await readdir(dir).catch(() => [] as string[])).map((name) => name.replace(/\.status(\..*)?$/, '.status'));
    return new Set(names.filter((name) => !keep.has(name)).map((name) => posix.join(dir, name)));
  }

  async removeOrphanLaunchFiles(kept: readonly LaunchFiles[]): Promise<void> {
    const dir = exitsDir(this.runDir);
    const keep = new Set(kept.map((files) => posix.basename(files.statusPath)));
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      // <id>.status, <id>.status.pids, <id>.status.tmp all belong to <id>.status.
      if (!keep.has(name.replace(/\.status(\..*)?$/, '.status'))) await removeFile(posix.join(dir, name));
    }
  }
}
