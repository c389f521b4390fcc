import { join } from 'node:path';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import type { DaemonConfig } from '../../src/daemon/config.js';
import { type RunningDaemon, startDaemon } from '../../src/daemon/daemon.js';
import { silentLogger } from '../../src/logger.js';
import { nativeBin } from '../../src/package-paths.js';
import type { SandboxFixture } from './sandbox-fixture.js';

export interface DaemonHarness {
  readonly daemon: RunningDaemon;
  readonly client: VmProcessClient;
  readonly address: string;
  /** Another client on the same daemon (e.g. a second watcher). */
  newClient(): VmProcessClient;
  stop(): Promise<void>;
}

/** The real daemon (gRPC server, supervisor, stand-in VMM) in this process, on a unix socket in the fixture. */
export async function startDaemonHarness(fixture: SandboxFixture, overrides: Partial<DaemonConfig> = {}): Promise<DaemonHarness> {
  const socket = join(fixture.root, 'd.sock');
  const config: DaemonConfig = {
    listen: [{ kind: 'unix', path: socket }],
    vmmBin: nativeBin('standin-vmm'),
    reaperBin: nativeBin('vmprocd-reaper'),
    launcher: 'native',
    runDir: fixture.runDir,
    stateDir: join(fixture.root, 'state'),
    stateSync: 'launches',
    eventHistory: 10_000,
    sandboxDir: fixture.sandboxDir,
    imageRoots: [fixture.root],
    netnsDir: '/var/run/netns',
    exitHistory: 10_000,
    watchBuffer: 1024,
    logLevel: 'info',
    ...overrides,
  };
  const daemon = await startDaemon(config, silentLogger);
  const address = `unix://${socket}`;
  const clients: VmProcessClient[] = [];
  const newClient = () => {
    const client = new VmProcessClient(address);
    clients.push(client);
    return client;
  };
  const client = newClient();
  return {
    daemon,
    client,
    address,
    newClient,
    async stop() {
      for (const c of clients) c.close();
      await daemon.stop();
    },
  };
}
