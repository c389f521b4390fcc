import { mkdir, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { VmprocError } from '../errors.js';

/**
 * Exclusive ownership of a state directory, so two daemons never supervise the same VMMs.
 *
 * The lock is an abstract unix socket named after the directory's device and inode: binding it
 * is atomic, and the kernel releases it when the process dies, even by SIGKILL, so there is no
 * stale lock file to clean up or to misjudge. (Abstract sockets are per network namespace; the
 * daemon runs in the host's.) The holder's PID is written beside it for operators.
 */
export interface StateLock {
  release(): Promise<void>;
}

export async function lockStateDir(stateDir: string): Promise<StateLock> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const { dev, ino } = await stat(stateDir);
  const name = `\0vmprocd-state:${dev}:${ino}`;
  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') {
        reject(
          new VmprocError(
            'failed-precondition',
            `another vmprocd is already using the state directory ${stateDir} (see ${join(stateDir, 'vmprocd.pid')}); ` +
              'stop it first, or give this one its own --state-dir',
          ),
        );
      } else {
        reject(error);
      }
    });
    server.listen(name, () => resolve());
  });
  server.unref();
  await writeFile(join(stateDir, 'vmprocd.pid'), `${process.pid}\n`, { mode: 0o644 });
  return {
    release: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
