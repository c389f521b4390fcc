/**
 * The success path of every RPC, end to end: the real gRPC server and supervisor, the real launch
 * (reaper, unshare -m, tmpfs, ip netns exec) and the stand-in VMM in a network namespace this
 * suite creates.
 */
import { expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { readlink } from 'node:fs/promises';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import {
  ExitReason,
  LaunchMode,
  MemoryRestoreMode,
  type ProcessInfo,
  ProcessState,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { hostMountsUnder } from '../helpers/process-scan.js';
import { describeAsRoot } from '../helpers/root.js';
import { delay, eventually, hasSettled, inspectStandin, netnsIdentity, processesMentioning, useGrpcSuite } from './support.js';

describeAsRoot('gRPC end to end: process lifecycle', () => {
  const s = useGrpcSuite();

  /** Common checks on a freshly started process. */
  function expectReady(info: ProcessInfo | undefined, sandboxId: string): ProcessInfo {
    expect(info).toBeDefined();
    const p = info!;
    expect(p.sandboxId).toBe(sandboxId);
    expect(p.pid).toBeGreaterThan(0);
    expect(p.state).toBe(ProcessState.RUNNING);
    expect(p.vmmVersion).toBe('53.0.0');
    expect(p.exit).toBeUndefined();
    expect(p.startedAt).toBeDefined();
    expect(p.readyAt).toBeDefined();
    const startedAt = timestampDate(p.startedAt!).getTime();
    const readyAt = timestampDate(p.readyAt!).getTime();
    expect(readyAt).toBeGreaterThanOrEqual(startedAt);
    expect(Math.abs(Date.now() - startedAt)).toBeLessThan(60_000);
    return p;
  }

  it('StartProcess (boot) answers once ready, echoes the request, and the VMM runs isolated as the tracked PID', async () => {
    const id = s.id('boot');
    const labels = { team: 'e2e', 'example.com/owner': 'grpc-tests' };
    const response = await s.startBoot(id, {}, { labels });
    const p = expectReady(response.process, id);
    expect(p).toMatchObject({
      mode: LaunchMode.BOOT,
      socketPath: s.socketOf(id),
      networkNamespace: s.netns.name,
      labels,
      sandboxDir: s.fixture.sandboxDir,
      kernelPath: s.fixture.kernelPath,
      rootfsPath: `${s.fixture.root}/${id}.rootfs`,
      logPath: `${s.fixture.runDir}/logs/${id}.log`,
    });
    expect(existsSync(p.socketPath)).toBe(true);

    // The launch, as the VMM itself sees it.
    const inspect = await inspectStandin(p.socketPath);
    expect(inspect.pid).toBe(p.pid);
    expect({ pgid: inspect.pgid, sid: inspect.sid }).toEqual({ pgid: p.pid, sid: p.pid });
    expect(inspect.netns).toBe(await netnsIdentity(s.netns.name));
    expect(inspect.netns).not.toBe(await readlink('/proc/self/ns/net'));
    expect(inspect.sandbox_dir).toBe(s.fixture.sandboxDir);
    expect(inspect.sandbox_fstype).toBe('tmpfs');
    expect(inspect.files).toEqual({ vmlinux: s.fixture.kernelPath, 'rootfs.ext4': p.rootfsPath });
    expect(inspect.api_socket).toBe(p.socketPath);
    // The sandbox tmpfs lives only in the VMM's mount namespace.
    expect(await hostMountsUnder(s.fixture.sandboxDir)).toEqual([]);

    const stopped = await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    expect(stopped.process?.state).toBe(ProcessState.EXITED);
  });

  it('StartProcess (restore) restores the snapshot before answering; no kernel is linked', async () => {
    const id = s.id('restore');
    const sourceUrl = await s.fixture.snapshot(id);
    const response = await s.client.startProcess({
      sandboxId: id,
      mode: LaunchMode.RESTORE,
      rootfsPath: await s.fixture.rootfs(id, { restore_delay_ms: 150 }),
      networkNamespace: s.netns.name,
      restore: { sourceUrl, memoryRestoreMode: MemoryRestoreMode.COPY, resume: true, prefault: true },
      labels: { kind: 'restore' },
    });
    const p = expectReady(response.process, id);
    expect(p).toMatchObject({ mode: LaunchMode.RESTORE, labels: { kind: 'restore' }, kernelPath: '' });

    const inspect = await inspectStandin(p.socketPath);
    expect(inspect.files).toEqual({ vmlinux: null, 'rootfs.ext4': p.rootfsPath });
    expect(inspect.sandbox_fstype).toBe('tmpfs');
    expect({ pgid: inspect.pgid, sid: inspect.sid, pid: inspect.pid }).toEqual({ pgid: p.pid, sid: p.pid, pid: p.pid });
    expect(inspect.netns).toBe(await netnsIdentity(s.netns.name));
    expect(inspect.restore_count).toBe(1);
    expect(inspect.last_restore).toMatchObject({ source_url: sourceUrl, resume: true, prefault: true, memory_restore_mode: 'Copy' });
    expect(inspect.state).toBe('Running');
    expect(await hostMountsUnder(s.fixture.sandboxDir)).toEqual([]);

    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('StartProcess (restore) without a restore config leaves a bare VMM with no VM', async () => {
    const id = s.id('bare');
    const response = await s.client.startProcess({
      sandboxId: id,
      mode: LaunchMode.RESTORE,
      rootfsPath: await s.fixture.rootfs(id),
      networkNamespace: s.netns.name,
    });
    const p = expectReady(response.process, id);
    const inspect = await inspectStandin(p.socketPath);
    expect(inspect.restore_count).toBe(0);
    expect(inspect.links.vmlinux).toBeNull();
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('many VMMs share one sandbox_dir path, each with its own tmpfs, none visible on the host', async () => {
    const ids = [s.id('shared'), s.id('shared'), s.id('shared')];
    const started = await Promise.all(ids.map((id) => s.startBoot(id)));
    const inspects = await Promise.all(started.map((r) => inspectStandin(r.process!.socketPath)));
    expect(new Set(inspects.map((i) => i.mntns)).size).toBe(3);
    inspects.forEach((inspect, i) => {
      expect(inspect.sandbox_dir).toBe(s.fixture.sandboxDir);
      expect(inspect.sandbox_fstype).toBe('tmpfs');
      expect(inspect.files['rootfs.ext4']).toBe(`${s.fixture.root}/${ids[i]}.rootfs`);
    });
    expect(await hostMountsUnder(s.fixture.sandboxDir)).toEqual([]);
    await Promise.all(ids.map((sandboxId) => s.client.stopProcess({ sandboxId, gracePeriod: { seconds: 5n } })));
  });

  it('honours socket_path (exactly 107 bytes is accepted) and reports the VMM version from its ping', async () => {
    const id = s.id('sock');
    const prefix = `${s.fixture.runDir}/`;
    const socketPath = `${prefix}${'s'.repeat(107 - prefix.length - 5)}.sock`;
    expect(Buffer.byteLength(socketPath)).toBe(107);
    const response = await s.startBoot(id, { version: '55.1.0' }, { socketPath });
    expect(response.process).toMatchObject({ socketPath, vmmVersion: '55.1.0', state: ProcessState.RUNNING });
    expect((await inspectStandin(socketPath)).api_socket).toBe(socketPath);
    const stopped = await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    expect(stopped.process?.exit?.reason).toBe(ExitReason.STOPPED);
    expect(existsSync(socketPath)).toBe(false);
  });

  it('GetProcess returns the running process, then its exit once it has exited', async () => {
    const id = s.id('get');
    const started = (await s.startBoot(id, {}, { labels: { a: '1' } })).process!;
    const got = (await s.client.getProcess({ sandboxId: id })).process!;
    expect(got).toEqual(started);

    const stopped = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } })).process!;
    const after = (await s.client.getProcess({ sandboxId: id })).process!;
    expect(after.state).toBe(ProcessState.EXITED);
    expect(after.pid).toBe(started.pid);
    expect(after.exit).toEqual(stopped.exit);
    expect(after.exit?.labels).toEqual({ a: '1' });
  });

  it('ListProcesses filters by states and labels and reports the latest exit sequence', async () => {
    const a = s.id('list-a');
    const b = s.id('list-b');
    const c = s.id('list-c');
    await s.startBoot(a, {}, { labels: { suite: 'list', team: 'a', role: 'x' } });
    await s.startBoot(b, {}, { labels: { suite: 'list', team: 'b', role: 'x' } });
    await s.startBoot(c, { crash_after_ms: 100, crash_exit_code: 9 }, { labels: { suite: 'list', team: 'c' } });
    const cExit = await s.recorder.exitOf(c);

    const ids = (processes: ProcessInfo[]) => processes.map((p) => p.sandboxId).filter((x) => [a, b, c].includes(x)).sort();
    const all = await s.client.listProcesses({ labels: { suite: 'list' } });
    expect(ids(all.processes)).toEqual([a, b, c].sort());
    expect(all.exitSequence).toBe(s.recorder.lastSequence);
    expect(all.exitSequence).toBeGreaterThanOrEqual(cExit.sequence);

    const running = await s.client.listProcesses({ states: [ProcessState.RUNNING], labels: { suite: 'list' } });
    expect(ids(running.processes)).toEqual([a, b].sort());
    expect(running.processes.every((p) => p.state === ProcessState.RUNNING)).toBe(true);

    const exited = await s.client.listProcesses({ states: [ProcessState.EXITED] });
    expect(exited.processes.every((p) => p.state === ProcessState.EXITED)).toBe(true);
    const cInfo = exited.processes.find((p) => p.sandboxId === c);
    expect(cInfo?.exit).toMatchObject({ sequence: cExit.sequence, reason: ExitReason.EXITED, exitCode: 9 });
    expect(exited.processes.some((p) => p.sandboxId === a || p.sandboxId === b)).toBe(false);

    const both = await s.client.listProcesses({ states: [ProcessState.RUNNING, ProcessState.EXITED], labels: { suite: 'list' } });
    expect(ids(both.processes)).toEqual([a, b, c].sort());

    expect(ids((await s.client.listProcesses({ labels: { team: 'a' } })).processes)).toEqual([a]);
    expect(ids((await s.client.listProcesses({ labels: { team: 'a', role: 'x' } })).processes)).toEqual([a]);
    expect(ids((await s.client.listProcesses({ labels: { role: 'x' } })).processes)).toEqual([a, b].sort());
    expect((await s.client.listProcesses({ labels: { team: 'a', role: 'y' } })).processes).toEqual([]);
    expect((await s.client.listProcesses({ states: [ProcessState.STOPPING], labels: { suite: 'list' } })).processes).toEqual([]);

    const stopB = await s.client.stopProcess({ sandboxId: b, gracePeriod: { seconds: 5n } });
    const afterStop = await s.client.listProcesses({ labels: { suite: 'list' } });
    expect(afterStop.exitSequence).toBe(stopB.process!.exit!.sequence);
    await s.client.stopProcess({ sandboxId: a, gracePeriod: { seconds: 5n } });
  });

  it('SignalProcess accepts SIGUSR1 and USR1; the VMM dies of it and the exit says the daemon sent it', async () => {
    for (const signal of ['SIGUSR1', 'usr1']) {
      const id = s.id('usr1');
      const started = (await s.startBoot(id)).process!;
      const signalled = (await s.client.signalProcess({ sandboxId: id, signal })).process!;
      expect(signalled.sandboxId).toBe(id);
      expect(signalled.pid).toBe(started.pid);
      const waited = (await s.client.waitProcess({ sandboxId: id })).process!;
      expect(waited.state).toBe(ProcessState.EXITED);
      expect(waited.exit).toMatchObject({
        sandboxId: id,
        pid: started.pid,
        reason: ExitReason.SIGNALED,
        signal: 'SIGUSR1',
        signalSentByDaemon: true,
      });
      expect(waited.exit?.exitCode).toBeUndefined();
    }
  });

  it('SignalProcess TERM makes the stand-in exit cleanly (EXITED, code 0); KILL ends it as SIGNALED by the daemon', async () => {
    const term = s.id('term');
    await s.startBoot(term);
    await s.client.signalProcess({ sandboxId: term, signal: 'TERM' });
    const termExit = (await s.client.waitProcess({ sandboxId: term })).process!.exit!;
    expect(termExit).toMatchObject({ reason: ExitReason.EXITED, exitCode: 0, signalSentByDaemon: false });
    expect(termExit.signal).toBeUndefined();
    expect(existsSync(s.socketOf(term))).toBe(false);

    const kill = s.id('kill');
    const started = (await s.startBoot(kill)).process!;
    await s.client.signalProcess({ sandboxId: kill, signal: 'KILL' });
    const killExit = (await s.client.waitProcess({ sandboxId: kill })).process!.exit!;
    expect(killExit).toMatchObject({ reason: ExitReason.SIGNALED, signal: 'SIGKILL', signalSentByDaemon: true, pid: started.pid });
    expect(killExit.exitCode).toBeUndefined();
    // A SIGKILLed VMM leaves its socket; the daemon removes it.
    expect(existsSync(s.socketOf(kill))).toBe(false);
    expect(await processesMentioning(s.socketOf(kill))).toEqual([]);
  });

  it('a VMM that crashes on its own is EXITED or SIGNALED, never attributed to the daemon, with its stderr tail', async () => {
    const code = s.id('crash-code');
    await s.startBoot(code, { crash_after_ms: 50, crash_exit_code: 7 });
    const codeExit = (await s.client.waitProcess({ sandboxId: code })).process!.exit!;
    expect(codeExit).toMatchObject({ reason: ExitReason.EXITED, exitCode: 7, signalSentByDaemon: false });
    expect(codeExit.stderrTail).toContain('Simulated crash 50 ms after the API socket was bound');
    expect(codeExit.message).toContain('exit code 7');

    const sig = s.id('crash-sig');
    await s.startBoot(sig, { crash_after_ms: 50, crash_signal: 'SEGV' });
    const sigExit = (await s.client.waitProcess({ sandboxId: sig })).process!.exit!;
    expect(sigExit).toMatchObject({ reason: ExitReason.SIGNALED, signal: 'SIGSEGV', signalSentByDaemon: false });
    expect(sigExit.exitCode).toBeUndefined();
    expect(existsSync(s.socketOf(sig))).toBe(false);
  });

  it('StopProcess returns the exit (STOPPED); a second StopProcess returns the same recorded exit', async () => {
    const id = s.id('stop');
    const started = (await s.startBoot(id, {}, { labels: { k: 'v' } })).process!;
    const first = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } })).process!;
    expect(first.state).toBe(ProcessState.EXITED);
    expect(first.exit).toMatchObject({
      sandboxId: id,
      pid: started.pid,
      reason: ExitReason.STOPPED,
      exitCode: 0,
      labels: { k: 'v' },
      signalSentByDaemon: false,
    });
    expect(first.exit?.message).toContain('stopped');
    expect(timestampDate(first.exit!.startedAt!)).toEqual(timestampDate(started.startedAt!));
    expect(existsSync(started.socketPath)).toBe(false);
    expect(await processesMentioning(started.socketPath)).toEqual([]);

    const second = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } })).process!;
    expect(second.exit).toEqual(first.exit);
    expect(s.recorder.exitsOf(id)).toHaveLength(1);
    expect((await s.recorder.exitOf(id)).sequence).toBe(first.exit!.sequence);
  });

  it('StopProcess with a zero grace period sends SIGKILL at once', async () => {
    const id = s.id('stop-now');
    await s.startBoot(id, { ignore_sigterm: 1 });
    const begun = Date.now();
    const exit = (await s.client.stopProcess({ sandboxId: id, gracePeriod: {} })).process!.exit!;
    expect(Date.now() - begun).toBeLessThan(3_000);
    expect(exit).toMatchObject({ reason: ExitReason.STOPPED, signal: 'SIGKILL', signalSentByDaemon: true });
  });

  it('concurrent StopProcess calls share one stop: the first grace period wins and all get the same exit', async () => {
    const id = s.id('stop-shared');
    await s.startBoot(id, { ignore_sigterm: 1 });
    const begun = Date.now();
    const first = s.client.stopProcess({ sandboxId: id, gracePeriod: { nanos: 400_000_000 } });
    // Make sure the first stop is in progress before the others arrive.
    await expectStateSoon(id, ProcessState.STOPPING);
    const others = [
      s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } }),
      s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 30n } }),
      s.client.stopProcess({ sandboxId: id }),
    ];
    const results = await Promise.all([first, ...others]);
    const elapsed = Date.now() - begun;
    // SIGTERM is ignored: the exit comes from the SIGKILL after the FIRST grace period (400 ms),
    // neither at once (the second caller's 0) nor after 10-30 s.
    expect(elapsed).toBeGreaterThanOrEqual(350);
    expect(elapsed).toBeLessThan(8_000);
    const exits = results.map((r) => r.process!.exit);
    for (const exit of exits) expect(exit).toEqual(exits[0]);
    expect(exits[0]).toMatchObject({ reason: ExitReason.STOPPED, signal: 'SIGKILL', signalSentByDaemon: true });
    expect(s.recorder.exitsOf(id)).toHaveLength(1);
  });

  it('WaitProcess blocks until the process exits, and answers at once for an exited one', async () => {
    const id = s.id('wait');
    const started = (await s.startBoot(id)).process!;
    const waiting = s.client.waitProcess({ sandboxId: id });
    // Let the wait reach the daemon (a later unary call on the same channel has been served), then check it still waits.
    await s.client.getProcess({ sandboxId: id });
    expect(await hasSettled(waiting, 200)).toBe(false);

    const stopped = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } })).process!;
    const waited = (await waiting).process!;
    expect(waited.state).toBe(ProcessState.EXITED);
    expect(waited.pid).toBe(started.pid);
    expect(waited.exit).toEqual(stopped.exit);

    const begun = Date.now();
    const again = (await s.client.waitProcess({ sandboxId: id }, { timeoutMs: 5_000 })).process!;
    expect(Date.now() - begun).toBeLessThan(2_000);
    expect(again.exit).toEqual(stopped.exit);
  });

  it('WaitProcess resolves for exits of every cause (a crash while waiting)', async () => {
    const id = s.id('wait-crash');
    await s.startBoot(id, { crash_after_ms: 300, crash_exit_code: 3 });
    const waited = (await s.client.waitProcess({ sandboxId: id })).process!;
    expect(waited.exit).toMatchObject({ reason: ExitReason.EXITED, exitCode: 3 });
  });

  it('WatchExits streams exits live, with the exit fields filled in', async () => {
    const id = s.id('watch');
    const exchange = s.harness.daemon.supervisor.exchange;
    const before = exchange.subscriberCount;
    const received = (async () => {
      for await (const exit of s.client.watchExits({ sandboxIds: [id] })) return exit;
      return undefined;
    })();
    // A live stream sees only exits after it is subscribed: wait for the subscription to exist.
    await eventually(() => exchange.subscriberCount === before + 1);
    const started = (await s.startBoot(id, { stderr_lines: 3 }, { labels: { w: 'x' } })).process!;
    await s.client.signalProcess({ sandboxId: id, signal: 'SIGKILL' });
    const exit = await received;
    expect(exit).toMatchObject({
      sandboxId: id,
      pid: started.pid,
      reason: ExitReason.SIGNALED,
      signal: 'SIGKILL',
      labels: { w: 'x' },
      signalSentByDaemon: true,
    });
    expect(exit!.sequence).toBeGreaterThan(0n);
    expect(exit!.stderrTail).toContain('stderr line 3 of 3');
    expect(timestampDate(exit!.exitedAt!).getTime()).toBeGreaterThanOrEqual(timestampDate(started.readyAt!).getTime() - 1000);
    expect(timestampDate(exit!.startedAt!)).toEqual(timestampDate(started.startedAt!));
    expect(exit).toEqual(await s.recorder.exitOf(id));
  });

  async function expectStateSoon(sandboxId: string, state: ProcessState): Promise<void> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const p = (await s.client.getProcess({ sandboxId })).process!;
      if (p.state === state) return;
      if (Date.now() > deadline) throw new Error(`${sandboxId} is ${ProcessState[p.state]}, not ${ProcessState[state]}`);
      await delay(5);
    }
  }
});
