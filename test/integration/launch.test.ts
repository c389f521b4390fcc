import { afterAll, afterEach, beforeAll, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isVmprocError } from '../../src/errors.js';
import { nativeBin } from '../../src/package-paths.js';
import { createHostSupervisor } from '../../src/daemon/host-supervisor.js';
import { ExitExchange } from '../../src/core/exit-exchange.js';
import type { ProcessExitEvent, StartRequest } from '../../src/core/domain.js';
import type { Supervisor } from '../../src/core/supervisor.js';
import { ChClient } from '../../src/vmm/index.js';
import { createTestNetns, type TestNetns } from '../helpers/netns.js';
import { hostMountsUnder, killProcessesMentioning, processesMentioning } from '../helpers/process-scan.js';
import { eventually } from '../helpers/wait.js';
import { collectLeftovers } from '../helpers/leak-check.js';
import { describeAsRoot } from '../helpers/root.js';
import { inspectStandin } from '../helpers/standin-inspect.js';
import { createSandboxFixture, fixturePathPolicy, type SandboxFixture, type StandinKnobs } from '../helpers/sandbox-fixture.js';

/**
 * Both launch strategies must give the same isolation: the same tests run against each.
 * `script` is `unshare -m -- bash -c <script> ... ip netns exec`; `native` does the same steps in
 * the VMM's own process (native/vmprocd-reaper.c).
 */
for (const strategy of ['script', 'native'] as const) describeAsRoot(`launch (${strategy}): a private tmpfs, the netns, the VMM as the tracked PID (supervisor, no gRPC)`, () => {
  let netns: TestNetns;
  let fixture: SandboxFixture;
  let supervisor: Supervisor;
  let exits: ProcessExitEvent[];
  let counter = 0;

  beforeAll(async () => {
    netns = await createTestNetns();
    fixture = await createSandboxFixture();
    const exchange = new ExitExchange({ historyLimit: 1000, subscriberBufferLimit: 1000 });
    ({ supervisor } = createHostSupervisor({
      defaults: { runDir: fixture.runDir, sandboxDir: fixture.sandboxDir, vmmBin: nativeBin('standin-vmm'), netnsDir: '/var/run/netns' },
      reaperBin: nativeBin('vmprocd-reaper'),
      paths: await fixturePathPolicy(fixture),
      launchStrategy: strategy,
      exchange,
      exitedRecordLimit: 1000,
    }));
    await supervisor.prepare();
    exits = [];
    const subscription = exchange.subscribe();
    (async () => {
      for await (const exit of subscription) exits.push(exit);
    })();
  });

  afterEach(async () => {
    // Every test ends its VMMs; anything left is a leak this suite must report, not hide.
    const { processes } = supervisor.list({ states: ['starting', 'running', 'stopping'] });
    await Promise.all(processes.map((p) => supervisor.stop(p.sandboxId, 0)));
  });

  afterAll(async () => {
    await supervisor.shutdown();
    const leftovers = await collectLeftovers(fixture.root);
    await netns.remove();
    await fixture.remove();
    expect(leftovers).toEqual([]);
  });

  const nextId = () => `${strategy[0]}${++counter}`;

  async function request(knobs: StandinKnobs = {}, overrides: Partial<StartRequest> = {}): Promise<StartRequest> {
    const sandboxId = overrides.sandboxId ?? nextId();
    return {
      sandboxId,
      mode: 'boot',
      kernelPath: fixture.kernelPath,
      rootfsPath: await fixture.rootfs(sandboxId, knobs),
      networkNamespace: netns.name,
      labels: { suite: 'launch' },
      ...overrides,
    };
  }

  const inspect = (socketPath: string) => inspectStandin(socketPath, 2000);

  const exitOf = async (sandboxId: string): Promise<ProcessExitEvent> => {
    await eventually(() => exits.some((e) => e.sandboxId === sandboxId));
    const found = exits.filter((e) => e.sandboxId === sandboxId);
    expect(found).toHaveLength(1);
    return found[0]!;
  };

  async function expectNothingLeft(sandboxId: string, socketPath: string): Promise<void> {
    // The VMM is dead once its exit is published; its reaper reports the exit and then ends, so it
    // may still be on its way out: wait a moment, and name whatever stays.
    await eventually(async () => (await processesMentioning(socketPath)).length === 0, 2000).catch(() => undefined);
    expect(await processesMentioning(socketPath)).toEqual([]);
    expect(existsSync(socketPath)).toBe(false);
    expect(existsSync(`${socketPath}.lock`)).toBe(false);
    // The reaper's files (<id>.<launch>.status, .pids) go just after the exit is published.
    const reaperFiles = async () => (await readdir(join(fixture.runDir, 'exits'))).filter((name) => name.startsWith(`${sandboxId}.`));
    await eventually(async () => (await reaperFiles()).length === 0, 2000);
  }

  it('boots a VMM in its own session, private tmpfs and the requested network namespace', async () => {
    const req = await request();
    const started = await supervisor.start(req);
    expect(started.state).toBe('running');
    expect(started.vmmVersion).toBe('53.0.0');
    expect(started.readyAt!.getTime()).toBeGreaterThanOrEqual(started.startedAt.getTime());

    const facts = await inspect(started.socketPath);
    // The tracked PID is the VMM itself, leader of its own session and process group.
    expect(facts.pid).toBe(started.pid);
    expect(facts.pgid).toBe(started.pid);
    expect(facts.sid).toBe(started.pid);
    const expectedNetns = (await execa('ip', ['netns', 'exec', netns.name, 'readlink', '/proc/self/ns/net'])).stdout.trim();
    expect(facts.netns).toBe(expectedNetns);
    expect(facts.netns).not.toBe((await execa('readlink', ['/proc/self/ns/net'])).stdout.trim());
    expect(facts.sandbox_dir).toBe(fixture.sandboxDir);
    expect(facts.sandbox_fstype).toBe('tmpfs');
    // Each link leads to the VMM's own descriptor of the file checked beneath its image root.
    expect(facts.links).toEqual({ vmlinux: `/proc/${started.pid}/fd/3`, 'rootfs.ext4': `/proc/${started.pid}/fd/4` });
    expect(facts.files).toEqual({ vmlinux: fixture.kernelPath, 'rootfs.ext4': req.rootfsPath });
    // The tmpfs lives only in the VMM's mount namespace.
    expect(await hostMountsUnder(fixture.sandboxDir)).toEqual([]);
    // Its parent is the reaper, which keeps the exit status for the daemon.
    const parentCmdline = await readFile(`/proc/${facts.ppid}/cmdline`, 'utf8');
    expect(parentCmdline.split('\0')[0]).toBe(nativeBin('vmprocd-reaper'));

    const stopped = await supervisor.stop(req.sandboxId);
    expect(stopped.exit).toMatchObject({ reason: 'stopped', exitCode: 0, labels: { suite: 'launch' } });
    await expectNothingLeft(req.sandboxId, started.socketPath);
  });

  it('gives the VMM the mount table ip netns exec would: its own tmpfs, and a /sys of its netns', async () => {
    const started = await supervisor.start(await request());
    const own = await readFile(`/proc/${started.pid}/mountinfo`, 'utf8');
    const host = await readFile('/proc/self/mountinfo', 'utf8');
    const mountOf = (table: string, point: string) =>
      table.split('\n').map((line) => line.split(' ')).filter((f) => f[4] === point).map((f) => ({ id: f[0], fstype: f[f.indexOf('-') + 1], source: f[f.indexOf('-') + 2] }));
    expect(mountOf(own, fixture.sandboxDir)).toEqual([expect.objectContaining({ fstype: 'tmpfs', source: 'vmprocd-sandbox' })]);
    // A sysfs mounted for the VMM (named after its netns, as ip netns exec does), not the host's.
    const sys = mountOf(own, '/sys').at(-1)!;
    expect(sys).toMatchObject({ fstype: 'sysfs', source: netns.name });
    expect(mountOf(host, '/sys').map((m) => m.id)).not.toContain(sys.id);
    const argv = (await readFile(`/proc/${started.pid}/cmdline`, 'utf8')).split('\0');
    expect(argv).toEqual([nativeBin('standin-vmm'), '--api-socket', `path=${started.socketPath}`, '--event-monitor', expect.stringMatching(/^path=.*\/exits\/.*\.status\.events$/), '']);
  });

  it('restores with OnDemand paging: the VMM receives the exact restore body', async () => {
    const snapshot = await fixture.snapshot('s1');
    const req = await request({}, {
      mode: 'restore',
      kernelPath: '',
      restore: { sourceUrl: snapshot, memoryRestoreMode: 'OnDemand', resume: true, prefault: false },
    });
    const started = await supervisor.start(req);
    const facts = await inspect(started.socketPath);
    expect(facts.last_restore).toEqual({ source_url: snapshot, memory_restore_mode: 'OnDemand', resume: true, prefault: false });
    expect(facts.links).toEqual({ vmlinux: null, 'rootfs.ext4': `/proc/${started.pid}/fd/3` });
    expect(facts.files).toEqual({ vmlinux: null, 'rootfs.ext4': req.rootfsPath });
    const info = await new ChClient(started.socketPath).info({ timeoutMs: 2000 });
    expect(info.state).toBe('Running');
  });

  it('a restore without resume leaves the VM paused, and a bare restore-mode VMM is ready on ping alone', async () => {
    const snapshot = await fixture.snapshot('s2');
    const paused = await supervisor.start(await request({}, {
      mode: 'restore',
      kernelPath: '',
      restore: { sourceUrl: snapshot, memoryRestoreMode: 'Copy', resume: false, prefault: true },
    }));
    expect((await new ChClient(paused.socketPath).info({ timeoutMs: 2000 })).state).toBe('Paused');
    const bare = await supervisor.start(await request({}, { mode: 'restore', kernelPath: '' }));
    expect((await inspect(bare.socketPath)).last_restore).toBeNull();
  });

  it('escalates to SIGKILL after the grace period when the VMM ignores SIGTERM', async () => {
    const req = await request({ ignore_sigterm: 1 });
    const started = await supervisor.start(req);
    const before = Date.now();
    const stopped = await supervisor.stop(req.sandboxId, 400);
    const took = Date.now() - before;
    expect(took).toBeGreaterThanOrEqual(390);
    expect(stopped.exit).toMatchObject({ reason: 'stopped', signal: 'SIGKILL', signalSentByDaemon: true });
    expect(stopped.exit!.exitCode).toBeUndefined();
    // SIGKILL leaves CH's socket behind; the daemon removes it.
    await expectNothingLeft(req.sandboxId, started.socketPath);
  });

  it('detects a crash with its exit code and one with its signal', async () => {
    const byCode = await request({ crash_after_ms: 50, crash_exit_code: 3, stderr_lines: 2 });
    const bySignal = await request({ crash_after_ms: 50, crash_signal: 'SIGSEGV' });
    const [a, b] = await Promise.all([supervisor.start(byCode), supervisor.start(bySignal)]);
    const exitA = await exitOf(byCode.sandboxId);
    expect(exitA).toMatchObject({ reason: 'exited', exitCode: 3, pid: a.pid, signalSentByDaemon: false });
    expect(exitA.signal).toBeUndefined();
    expect(exitA.stderrTail).toContain('standin-vmm: stderr line 2 of 2');
    const exitB = await exitOf(bySignal.sandboxId);
    expect(exitB).toMatchObject({ reason: 'signaled', signal: 'SIGSEGV', pid: b.pid, signalSentByDaemon: false });
    expect(exitB.exitCode).toBeUndefined();
    expect(supervisor.get(byCode.sandboxId).state).toBe('exited');
    // A crashed VMM's socket is stale: it is cleaned up too.
    await expectNothingLeft(byCode.sandboxId, a.socketPath);
    await expectNothingLeft(bySignal.sandboxId, b.socketPath);
  });

  it('a VMM that exits before ready fails the start with its code and stderr, and leaves nothing', async () => {
    const req = await request({ exit_before_socket: 1 });
    const error = await supervisor.start(req).then(() => undefined, (e: unknown) => e);
    expect(isVmprocError(error, 'failed-precondition')).toBe(true);
    expect((error as Error).message).toMatch(/exited before it was ready \(exit code 1\)/);
    expect((error as Error).message).toContain('/dev/kvm');
    expect(await exitOf(req.sandboxId)).toMatchObject({ reason: 'start-failed', exitCode: 1 });
    await expectNothingLeft(req.sandboxId, supervisor.get(req.sandboxId).socketPath);
  });

  it('a VMM that never answers times out, is killed, and leaves nothing', async () => {
    const req = await request({ no_socket: 1 }, { readyTimeoutMs: 300 });
    const error = await supervisor.start(req).then(() => undefined, (e: unknown) => e);
    expect(isVmprocError(error, 'deadline-exceeded')).toBe(true);
    expect(await exitOf(req.sandboxId)).toMatchObject({ reason: 'start-timeout', signal: 'SIGKILL', message: 'not ready within 300ms' });
    await expectNothingLeft(req.sandboxId, supervisor.get(req.sandboxId).socketPath);
  });

  it('a caller that gives up before ready gets cancelled, and the VMM is killed', async () => {
    const req = await request({ socket_delay_ms: 5000 });
    const abort = new AbortController();
    const starting = supervisor.start(req, abort.signal);
    await eventually(() => supervisor.list().processes.some((p) => p.sandboxId === req.sandboxId && p.pid > 0));
    abort.abort();
    const error = await starting.then(() => undefined, (e: unknown) => e);
    expect(isVmprocError(error, 'cancelled')).toBe(true);
    expect(await exitOf(req.sandboxId)).toMatchObject({ reason: 'start-failed', message: 'start cancelled by the client' });
    await expectNothingLeft(req.sandboxId, supervisor.get(req.sandboxId).socketPath);
  });

  it('a stop during the start ends the start with aborted and the exit as stopped', async () => {
    const req = await request({ socket_delay_ms: 5000 });
    const starting = supervisor.start(req);
    await eventually(() => supervisor.list().processes.some((p) => p.sandboxId === req.sandboxId && p.pid > 0));
    const stopped = await supervisor.stop(req.sandboxId, 1000);
    const error = await starting.then(() => undefined, (e: unknown) => e);
    expect(isVmprocError(error, 'aborted')).toBe(true);
    expect(stopped.exit!.reason).toBe('stopped');
    // Depending on how far the launch got, SIGTERM ended the launch script (a signal death the
    // daemon caused) or reached the VMM, which shuts down cleanly.
    const { exitCode, signal, signalSentByDaemon } = stopped.exit!;
    expect(signal === 'SIGTERM' ? signalSentByDaemon : exitCode === 0 && !signalSentByDaemon).toBe(true);
  });

  it('removes a stale socket before launch, but refuses a socket a live VMM of ours owns', async () => {
    const first = await supervisor.start(await request());
    // A dead VMM's socket: a listener killed with SIGKILL leaves its socket file behind.
    const stalePath = join(fixture.runDir, 'stale.sock');
    const listener = execa(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stalePath)}, () => console.log('up'))`]);
    await new Promise<void>((resolve) => listener.stdout!.once('data', () => resolve()));
    listener.kill('SIGKILL');
    await listener.catch(() => undefined);
    expect(existsSync(stalePath)).toBe(true);
    const restarted = await supervisor.start(await request({}, { socketPath: stalePath }));
    expect(restarted.state).toBe('running');

    const clash = await supervisor.start(await request({}, { socketPath: first.socketPath })).then(() => undefined, (e: unknown) => e);
    expect(isVmprocError(clash, 'failed-precondition')).toBe(true);
    expect((clash as Error).message).toContain(`belongs to sandbox ${first.sandboxId}`);
    // The refused start must not have touched the live VMM's socket.
    expect((await new ChClient(first.socketPath).ping({ timeoutMs: 2000 })).pid).toBe(first.pid);

    const notSocket = join(fixture.runDir, 'plain-file');
    await writeFile(notSocket, 'x');
    const refused = await supervisor.start(await request({}, { socketPath: notSocket })).then(() => undefined, (e: unknown) => e);
    expect(isVmprocError(refused, 'failed-precondition')).toBe(true);
  });

  it('an exited sandbox can be started again and replaces its record; a live one cannot', async () => {
    const req = await request();
    const first = await supervisor.start(req);
    const duplicate = await supervisor.start(req).then(() => undefined, (e: unknown) => e);
    expect(isVmprocError(duplicate, 'already-exists')).toBe(true);
    await supervisor.stop(req.sandboxId);
    const second = await supervisor.start(req);
    expect(second.pid).not.toBe(first.pid);
    expect(supervisor.get(req.sandboxId).exit).toBeUndefined();
  });
});
