import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { nativeBin } from '../../src/package-paths.js';
import { createHostSupervisor } from '../../src/daemon/host-supervisor.js';
import { ExitExchange } from '../../src/core/exit-exchange.js';
import type { StartRequest } from '../../src/core/domain.js';
import type { Supervisor } from '../../src/core/supervisor.js';
import { createTestNetns, type TestNetns } from '../helpers/netns.js';
import { killProcessesMentioning, processesMentioning } from '../helpers/process-scan.js';
import { eventually } from '../helpers/wait.js';
import { collectLeftovers } from '../helpers/leak-check.js';
import { describeAsRoot } from '../helpers/root.js';
import { createSandboxFixture, fixturePathPolicy, type SandboxFixture } from '../helpers/sandbox-fixture.js';

describeAsRoot('retention: a forgotten sandbox takes its logs with it', () => {
  let netns: TestNetns;
  let fixture: SandboxFixture;
  let supervisor: Supervisor;

  beforeAll(async () => {
    netns = await createTestNetns();
    fixture = await createSandboxFixture();
    ({ supervisor } = createHostSupervisor({
      defaults: { runDir: fixture.runDir, sandboxDir: fixture.sandboxDir, vmmBin: nativeBin('standin-vmm'), netnsDir: '/var/run/netns' },
      reaperBin: nativeBin('vmprocd-reaper'),
      paths: await fixturePathPolicy(fixture),
      exchange: new ExitExchange({ historyLimit: 100, subscriberBufferLimit: 100 }),
      exitedRecordLimit: 1,
    }));
    await supervisor.prepare();
  });

  afterAll(async () => {
    await supervisor.shutdown();
    const leftovers = await collectLeftovers(fixture.root);
    await netns.remove();
    await fixture.remove();
    expect(leftovers).toEqual([]);
  });

  const request = async (sandboxId: string): Promise<StartRequest> => ({
    sandboxId,
    mode: 'boot',
    kernelPath: fixture.kernelPath,
    rootfsPath: await fixture.rootfs(sandboxId, { stderr_lines: 1 }),
    networkNamespace: netns.name,
    labels: {},
  });

  it('removes the log and its rotated copies of a sandbox evicted from retention, and may start it again', async () => {
    const first = await supervisor.start(await request('old'));
    // A rotated copy, as log rotation would leave it.
    await writeFile(`${first.logPath}.1`, 'an older part of the log\n');
    await supervisor.stop('old', 0);
    expect(existsSync(first.logPath)).toBe(true);

    // Retention keeps one exited record: the next exit forgets 'old'.
    await supervisor.start(await request('new'));
    await supervisor.stop('new', 0);
    expect(() => supervisor.get('old')).toThrow(/no process for sandbox/);
    await eventually(() => !existsSync(first.logPath) && !existsSync(`${first.logPath}.1`), 2000);
    expect(existsSync(supervisor.get('new').logPath)).toBe(true);

    // A start of the forgotten ID gets a fresh log with only its own output.
    const again = await supervisor.start(await request('old'));
    await supervisor.stop('old', 0);
    expect(again.logPath).toBe(first.logPath);
    expect(supervisor.get('old').exit!.stderrTail).toBe('standin-vmm: stderr line 1 of 1');
  });
});
