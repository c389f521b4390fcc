/**
 * Every documented error code, through the real server and launch path, with the message content
 * the contract promises. Every failed start must leave no process and no socket behind and, once
 * a VMM was spawned, publish exactly one ProcessExit with the right reason.
 */
import { expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { status } from '@grpc/grpc-js';
import { ExitReason, LaunchMode, MemoryRestoreMode, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { describeAsRoot } from '../helpers/root.js';
import { eventually, expectNothingLeft, expectRpcError, processesMentioning, type StartInit, useGrpcSuite, WAIT_MS } from './support.js';

describeAsRoot('gRPC end to end: error codes', () => {
  const s = useGrpcSuite();

  /** A start that was rejected before anything was spawned leaves no record and no exit. */
  async function expectNoTrace(sandboxId: string): Promise<void> {
    await expectRpcError(s.client.getProcess({ sandboxId }), status.NOT_FOUND);
    expect(s.recorder.exitsOf(sandboxId)).toEqual([]);
    expect(existsSync(s.socketOf(sandboxId))).toBe(false);
  }

  /** Polls GetProcess until the start has a PID (the VMM was spawned) and is still starting. */
  async function spawnedAndStarting(sandboxId: string): Promise<number> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      try {
        const p = (await s.client.getProcess({ sandboxId })).process!;
        if (p.pid > 0) {
          expect(p.state).toBe(ProcessState.STARTING);
          return p.pid;
        }
      } catch (error) {
        if ((error as { code?: number }).code !== status.NOT_FOUND) throw error;
      }
      if (Date.now() > deadline) throw new Error(`${sandboxId} was not spawned within ${WAIT_MS}ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  // ----------------------------------------------------------------------------------------------
  // INVALID_ARGUMENT
  // ----------------------------------------------------------------------------------------------

  type Request = StartInit;
  const invalidStarts: Array<[string, (base: Request) => Request, string[]]> = [
    ['a malformed sandbox_id', (b) => ({ ...b, sandboxId: '../etc' }), ['sandbox_id "../etc" must match']],
    ['an empty sandbox_id', (b) => ({ ...b, sandboxId: '' }), ['sandbox_id is required']],
    ['a sandbox_id of 64 characters', (b) => ({ ...b, sandboxId: 'x'.repeat(64) }), ['sandbox_id', 'must match']],
    ['an unspecified mode', (b) => ({ ...b, mode: LaunchMode.UNSPECIFIED }), ['mode is required']],
    ['a kernel in restore mode', (b) => ({ ...b, mode: LaunchMode.RESTORE }), ['kernel_path is for boot mode only']],
    ['no kernel in boot mode', (b) => ({ ...b, kernelPath: '' }), ['kernel_path is required in boot mode']],
    ['a relative rootfs path', (b) => ({ ...b, rootfsPath: 'images/rootfs.ext4' }), ['rootfs_path "images/rootfs.ext4" must be an absolute path']],
    ['a relative kernel path', (b) => ({ ...b, kernelPath: './vmlinux' }), ['kernel_path "./vmlinux" must be an absolute path']],
    ['a malformed network namespace', (b) => ({ ...b, networkNamespace: '../../proc/1/ns/net' }), ['network_namespace', 'must be a name under /var/run/netns']],
    ['a restore config in boot mode', (b) => ({ ...b, restore: { sourceUrl: 'file:///tmp' } }), ['restore is for restore mode']],
    ['a negative ready_timeout', (b) => ({ ...b, readyTimeout: { seconds: -1n } }), ['ready_timeout must be a non-negative duration']],
    ['a bad label key', (b) => ({ ...b, labels: { 'bad key!': 'v' } }), ['label key "bad key!"']],
    ['a sandbox_dir covering /usr', (b) => ({ ...b, sandboxDir: '/usr' }), ['sandbox_dir "/usr" would cover /usr']],
  ];

  it.each(invalidStarts)('StartProcess with %s is INVALID_ARGUMENT and leaves no trace', async (_what, mutate, fragments) => {
    const id = s.id('inval');
    const request = mutate(await s.bootRequest(id));
    await expectRpcError(s.client.startProcess(request), status.INVALID_ARGUMENT, ...fragments);
    await expectNoTrace(id);
  });

  it('a path with $(...) is INVALID_ARGUMENT and nothing is ever run', async () => {
    const id = s.id('inject');
    const marker = `${s.fixture.root}/pwned`;
    const hostile = `${s.fixture.root}/$(touch${'${IFS}'}${marker})`;
    for (const field of ['kernelPath', 'rootfsPath', 'socketPath', 'sandboxDir'] as const) {
      const request = { ...(await s.bootRequest(id)), [field]: hostile };
      const snake = field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      await expectRpcError(s.client.startProcess(request), status.INVALID_ARGUMENT, snake, 'may only contain');
    }
    const restore = await s.client
      .startProcess({
        sandboxId: id,
        mode: LaunchMode.RESTORE,
        rootfsPath: await s.fixture.rootfs(id),
        networkNamespace: s.netns.name,
        restore: { sourceUrl: `file://${hostile}` },
      })
      .catch((e: unknown) => e);
    expect(restore).toMatchObject({ code: status.INVALID_ARGUMENT });
    expect(existsSync(marker)).toBe(false);
    await expectNoTrace(id);
  });

  it('a socket_path over 107 bytes is INVALID_ARGUMENT, naming its length', async () => {
    const id = s.id('longsock');
    const prefix = `${s.fixture.runDir}/`;
    const socketPath = `${prefix}${'s'.repeat(108 - prefix.length - 5)}.sock`;
    expect(Buffer.byteLength(socketPath)).toBe(108);
    await expectRpcError(s.startBoot(id, {}, { socketPath }), status.INVALID_ARGUMENT, 'socket_path', 'is 108 bytes', 'at most 107');
    await expectNoTrace(id);
    expect(existsSync(socketPath)).toBe(false);
  });

  it('OnDemand memory restore with prefault is INVALID_ARGUMENT', async () => {
    const id = s.id('ondemand');
    const request: Request = {
      sandboxId: id,
      mode: LaunchMode.RESTORE,
      rootfsPath: await s.fixture.rootfs(id),
      networkNamespace: s.netns.name,
      restore: { sourceUrl: await s.fixture.snapshot(id), memoryRestoreMode: MemoryRestoreMode.ON_DEMAND, prefault: true },
    };
    await expectRpcError(s.client.startProcess(request), status.INVALID_ARGUMENT, 'prefault cannot be combined with memory_restore_mode ON_DEMAND');
    await expectNoTrace(id);
  });

  it('SignalProcess with an unknown signal name is INVALID_ARGUMENT; the process is untouched', async () => {
    const id = s.id('badsig');
    const started = (await s.startBoot(id)).process!;
    for (const signal of ['SIGFOO', 'FOO', '', '9']) {
      await expectRpcError(s.client.signalProcess({ sandboxId: id, signal }), status.INVALID_ARGUMENT, `unknown signal ${JSON.stringify(signal)}`);
    }
    const after = (await s.client.getProcess({ sandboxId: id })).process!;
    expect({ state: after.state, pid: after.pid }).toEqual({ state: ProcessState.RUNNING, pid: started.pid });
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('StopProcess with a negative grace period is INVALID_ARGUMENT and does not stop anything', async () => {
    const id = s.id('neggrace');
    const started = (await s.startBoot(id)).process!;
    await expectRpcError(s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: -1n } }), status.INVALID_ARGUMENT, 'grace_period must be a non-negative duration');
    await expectRpcError(s.client.stopProcess({ sandboxId: id, gracePeriod: { nanos: -5 } }), status.INVALID_ARGUMENT, 'grace_period');
    const after = (await s.client.getProcess({ sandboxId: id })).process!;
    expect({ state: after.state, pid: after.pid }).toEqual({ state: ProcessState.RUNNING, pid: started.pid });
    expect(s.recorder.exitsOf(id)).toEqual([]);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('ListProcesses with an unknown state is INVALID_ARGUMENT', async () => {
    await expectRpcError(s.client.listProcesses({ states: [99 as ProcessState] }), status.INVALID_ARGUMENT, 'states contains 99');
  });

  // ----------------------------------------------------------------------------------------------
  // NOT_FOUND
  // ----------------------------------------------------------------------------------------------

  it('Get, Stop, Signal and Wait of an unknown sandbox are NOT_FOUND', async () => {
    const sandboxId = 'never-started';
    const detail = 'no process for sandbox "never-started"';
    await expectRpcError(s.client.getProcess({ sandboxId }), status.NOT_FOUND, detail);
    await expectRpcError(s.client.stopProcess({ sandboxId }), status.NOT_FOUND, detail);
    await expectRpcError(s.client.signalProcess({ sandboxId, signal: 'SIGTERM' }), status.NOT_FOUND, detail);
    await expectRpcError(s.client.waitProcess({ sandboxId }), status.NOT_FOUND, detail);
  });

  // ----------------------------------------------------------------------------------------------
  // ALREADY_EXISTS
  // ----------------------------------------------------------------------------------------------

  it('starting a running sandbox_id again is ALREADY_EXISTS and leaves the running one alone', async () => {
    const id = s.id('dup');
    const first = (await s.startBoot(id)).process!;
    const second = s.client.startProcess({ ...(await s.bootRequest(id)), rootfsPath: await s.fixture.rootfs(`${id}-other`) });
    await expectRpcError(second, status.ALREADY_EXISTS, `sandbox ${id} is already running (pid ${first.pid})`, 'stop it first');
    const after = (await s.client.getProcess({ sandboxId: id })).process!;
    expect(after).toEqual(first);
    expect(s.recorder.exitsOf(id)).toEqual([]);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('starting a sandbox_id that is still starting is ALREADY_EXISTS; the first start completes', async () => {
    const id = s.id('dup-starting');
    // Wide enough that the second start is refused while the first is still starting, on a loaded host.
    const first = s.startBoot(id, { socket_delay_ms: 2_500 });
    await spawnedAndStarting(id);
    await expectRpcError(s.startBoot(id), status.ALREADY_EXISTS, `sandbox ${id} is already starting`);
    expect((await first).process?.state).toBe(ProcessState.RUNNING);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('an EXITED sandbox_id may be started again; the new run replaces the record', async () => {
    const id = s.id('again');
    const first = (await s.startBoot(id, {}, { labels: { run: '1' } })).process!;
    const firstExit = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } })).process!.exit!;
    const second = (await s.startBoot(id, {}, { labels: { run: '2' } })).process!;
    expect(second.pid).not.toBe(first.pid);
    expect(second).toMatchObject({ state: ProcessState.RUNNING, labels: { run: '2' } });
    expect(second.exit).toBeUndefined();
    expect((await s.client.getProcess({ sandboxId: id })).process).toEqual(second);
    const listed = (await s.client.listProcesses({})).processes.filter((p) => p.sandboxId === id);
    expect(listed).toEqual([second]);
    const secondExit = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } })).process!.exit!;
    expect(secondExit.sequence).toBeGreaterThan(firstExit.sequence);
    expect(secondExit).toMatchObject({ pid: second.pid, labels: { run: '2' } });
    await s.recorder.exitOf(id, firstExit.sequence);
    expect(s.recorder.exitsOf(id).map((e) => e.pid)).toEqual([first.pid, second.pid]);
  });

  // ----------------------------------------------------------------------------------------------
  // FAILED_PRECONDITION
  // ----------------------------------------------------------------------------------------------

  it('a missing kernel, rootfs or network namespace is FAILED_PRECONDITION naming it', async () => {
    const kernel = s.id('nokernel');
    const missingKernel = `${s.fixture.root}/missing-vmlinux`;
    await expectRpcError(s.startBoot(kernel, {}, { kernelPath: missingKernel }), status.FAILED_PRECONDITION, `kernel_path ${missingKernel} does not exist`);
    await expectNoTrace(kernel);

    const rootfs = s.id('norootfs');
    const missingRootfs = `${s.fixture.root}/missing.rootfs`;
    await expectRpcError(s.startBoot(rootfs, {}, { rootfsPath: missingRootfs }), status.FAILED_PRECONDITION, `rootfs_path ${missingRootfs} does not exist`);
    await expectNoTrace(rootfs);

    const netns = s.id('nonetns');
    const missingNetns = `${s.netns.name}-missing`;
    await expectRpcError(
      s.startBoot(netns, {}, { networkNamespace: missingNetns }),
      status.FAILED_PRECONDITION,
      `network namespace ${missingNetns} does not exist`,
      `ip netns add ${missingNetns}`,
    );
    await expectNoTrace(netns);
  });

  it('a socket_path that exists and is not a socket, or belongs to a live sandbox, is FAILED_PRECONDITION', async () => {
    const plain = s.id('notsock');
    const path = `${s.fixture.runDir}/${plain}.notsock`;
    await writeFile(path, 'not a socket');
    await expectRpcError(s.startBoot(plain, {}, { socketPath: path }), status.FAILED_PRECONDITION, `socket_path ${path} exists and is not a socket`);
    await expectRpcError(s.client.getProcess({ sandboxId: plain }), status.NOT_FOUND);
    expect(existsSync(path)).toBe(true);

    const owner = s.id('owner');
    const started = (await s.startBoot(owner)).process!;
    const thief = s.id('thief');
    await expectRpcError(
      s.startBoot(thief, {}, { socketPath: started.socketPath }),
      status.FAILED_PRECONDITION,
      `socket_path ${started.socketPath} belongs to sandbox ${owner}`,
    );
    await expectRpcError(s.client.getProcess({ sandboxId: thief }), status.NOT_FOUND);
    expect((await s.client.getProcess({ sandboxId: owner })).process?.state).toBe(ProcessState.RUNNING);
    await s.client.stopProcess({ sandboxId: owner, gracePeriod: { seconds: 5n } });
  });

  it('a VMM that exits before ready is FAILED_PRECONDITION with its exit code and stderr tail; START_FAILED is published', async () => {
    const id = s.id('early-exit');
    const socket = s.socketOf(id);
    await expectRpcError(
      s.startBoot(id, { exit_before_socket: 3, stderr_lines: 2 }),
      status.FAILED_PRECONDITION,
      `VMM of sandbox ${id} exited before it was ready (exit code 3)`,
      'Failed to open /dev/kvm (standin.exit_before_socket)',
      'stderr line 2 of 2',
    );
    await expectNothingLeft(socket);
    const exit = await s.recorder.exitOf(id);
    expect(exit).toMatchObject({ reason: ExitReason.START_FAILED, exitCode: 3, signalSentByDaemon: false });
    expect(exit.stderrTail).toContain('Failed to open /dev/kvm');
    expect(exit.message).toContain('exited before it was ready (exit code 3)');
    expect((await s.client.getProcess({ sandboxId: id })).process).toMatchObject({ state: ProcessState.EXITED, exit });
  });

  it('a VMM that crashes right after binding (leaving its socket) fails the start; the stale socket is removed', async () => {
    const id = s.id('crash-bind');
    const socket = s.socketOf(id);
    await expectRpcError(
      s.startBoot(id, { crash_after_ms: 0, crash_exit_code: 9 }),
      status.FAILED_PRECONDITION,
      'exited before it was ready (exit code 9)',
      'Simulated crash 0 ms after the API socket was bound',
    );
    await expectNothingLeft(socket);
    expect(existsSync(`${socket}.lock`)).toBe(false);
    expect(await s.recorder.exitOf(id)).toMatchObject({ reason: ExitReason.START_FAILED, exitCode: 9 });
  });

  it('a failed restore is FAILED_PRECONDITION carrying the VMM error text; the VMM is killed and START_FAILED published', async () => {
    const id = s.id('restore-err');
    const socket = s.socketOf(id);
    const vmmError = 'Snapshot state is corrupt: bad magic 0xdeadbeef';
    await expectRpcError(
      s.client.startProcess({
        sandboxId: id,
        mode: LaunchMode.RESTORE,
        rootfsPath: await s.fixture.rootfs(id, { restore_error: vmmError }),
        networkNamespace: s.netns.name,
        restore: { sourceUrl: await s.fixture.snapshot(id), resume: true },
      }),
      status.FAILED_PRECONDITION,
      vmmError,
    );
    await expectNothingLeft(socket);
    const exit = await s.recorder.exitOf(id);
    expect(exit).toMatchObject({ reason: ExitReason.START_FAILED, signal: 'SIGKILL', signalSentByDaemon: true });
    expect(exit.message).toContain(vmmError);
  });

  it('a restore from a missing snapshot directory is FAILED_PRECONDITION before anything is spawned', async () => {
    const id = s.id('nosnap');
    const dir = `${s.fixture.root}/snapshots/absent`;
    await expectRpcError(
      s.client.startProcess({
        sandboxId: id,
        mode: LaunchMode.RESTORE,
        rootfsPath: await s.fixture.rootfs(id),
        networkNamespace: s.netns.name,
        restore: { sourceUrl: `file://${dir}` },
      }),
      status.FAILED_PRECONDITION,
      `restore.source_url ${dir} does not exist`,
    );
    await expectNoTrace(id);
  });

  it('SignalProcess of an exited process is FAILED_PRECONDITION', async () => {
    const id = s.id('sig-exited');
    await s.startBoot(id);
    await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    await expectRpcError(s.client.signalProcess({ sandboxId: id, signal: 'SIGUSR1' }), status.FAILED_PRECONDITION, `sandbox ${id} has exited`, 'nothing to signal');
  });

  // ----------------------------------------------------------------------------------------------
  // DEADLINE_EXCEEDED
  // ----------------------------------------------------------------------------------------------

  it('a VMM that never binds its socket is DEADLINE_EXCEEDED after ready_timeout; START_TIMEOUT is published', async () => {
    const id = s.id('nosock');
    const socket = s.socketOf(id);
    const begun = Date.now();
    await expectRpcError(
      s.startBoot(id, { no_socket: 1 }, { readyTimeout: { nanos: 300_000_000 } }),
      status.DEADLINE_EXCEEDED,
      'not ready within 300ms',
    );
    const elapsed = Date.now() - begun;
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(5_000);
    await expectNothingLeft(socket);
    const exit = await s.recorder.exitOf(id);
    expect(exit).toMatchObject({ reason: ExitReason.START_TIMEOUT, signal: 'SIGKILL', signalSentByDaemon: true });
    expect(exit.message).toContain('not ready within 300ms');
  });

  it('a VMM whose ping hangs is DEADLINE_EXCEEDED; its bound socket is removed', async () => {
    const id = s.id('hang');
    const socket = s.socketOf(id);
    const start = s.startBoot(id, { ping_delay_ms: 20_000 }, { readyTimeout: { nanos: 400_000_000 } });
    await eventually(() => existsSync(socket), WAIT_MS);
    await expectRpcError(start, status.DEADLINE_EXCEEDED, 'not ready within 400ms');
    await expectNothingLeft(socket);
    expect(await s.recorder.exitOf(id)).toMatchObject({ reason: ExitReason.START_TIMEOUT, signal: 'SIGKILL' });
  });

  // ----------------------------------------------------------------------------------------------
  // CANCELLED
  // ----------------------------------------------------------------------------------------------

  it.each([
    ['its socket is not yet bound (socket_delay_ms)', { socket_delay_ms: 20_000 }, false],
    ['its ping hangs on a bound socket (ping_delay_ms)', { ping_delay_ms: 20_000 }, true],
  ] as const)('a client that cancels StartProcess while %s gets CANCELLED; the VMM is killed and START_FAILED published', async (_what, knobs, socketBound) => {
    const abort = new AbortController();
    const cancelled = s.id('cancel');
    const cancelledSocket = s.socketOf(cancelled);
    const request = await s.bootRequest(cancelled, knobs);
    const call = s.client.startProcess(request, { signal: abort.signal });
    const pid = await spawnedAndStarting(cancelled);
    if (socketBound) await eventually(() => existsSync(cancelledSocket), WAIT_MS);
    abort.abort();
    await expectRpcError(call, status.CANCELLED);
    const exit = await s.recorder.exitOf(cancelled);
    expect(exit).toMatchObject({ pid, reason: ExitReason.START_FAILED, signal: 'SIGKILL', signalSentByDaemon: true });
    expect(exit.message).toContain('start cancelled by the client');
    await expectNothingLeft(cancelledSocket);
    expect((await s.client.getProcess({ sandboxId: cancelled })).process?.state).toBe(ProcessState.EXITED);
    expect(s.recorder.exitsOf(cancelled)).toHaveLength(1);
  });

  // ----------------------------------------------------------------------------------------------
  // ABORTED
  // ----------------------------------------------------------------------------------------------

  it('StopProcess while starting makes StartProcess ABORTED; StopProcess returns the exit and nothing is left', async () => {
    const id = s.id('abort');
    const socket = s.socketOf(id);
    const start = s.startBoot(id, { socket_delay_ms: 20_000 });
    const pid = await spawnedAndStarting(id);
    const stopped = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } })).process!;
    await expectRpcError(start, status.ABORTED, `sandbox ${id}: stopped by StopProcess while starting`);
    expect(stopped.state).toBe(ProcessState.EXITED);
    // SIGTERM ends it: the stand-in exits 0, or the launch script dies of the signal if it had not exec'd yet.
    expect(stopped.exit?.pid).toBe(pid);
    expect(stopped.exit?.exitCode === 0 || stopped.exit?.signal === 'SIGTERM').toBe(true);
    await expectNothingLeft(socket);
    expect(await s.recorder.exitOf(id)).toEqual(stopped.exit);
    expect(s.recorder.exitsOf(id)).toHaveLength(1);
  });

  it('StopProcess while starting, with a VMM that takes > 5 s to honour SIGTERM: StartProcess is ABORTED, not INTERNAL', async () => {
    // The VMM runs (its socket exists) but does not act on SIGTERM, so the stop's grace period (6 s) ends
    // with SIGKILL. The start was still "stopped by StopProcess while starting": ABORTED, once the stop has
    // ended the process, not INTERNAL after 5 s with a claim that the VMM "survived SIGKILL".
    const id = s.id('abort-slow');
    const socket = s.socketOf(id);
    const start = s.startBoot(id, { ignore_sigterm: 1, ping_delay_ms: 20_000 }).catch((e: unknown) => e);
    await spawnedAndStarting(id);
    await eventually(() => existsSync(socket), WAIT_MS);
    const stopped = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 6n } })).process!;
    expect(stopped.exit).toMatchObject({ signal: 'SIGKILL', signalSentByDaemon: true });
    await expectNothingLeft(socket);
    const startError = (await start) as { code: number; details: string };
    expect({ code: status[startError.code], details: startError.details }).toEqual({
      code: 'ABORTED',
      details: `sandbox ${id}: stopped by StopProcess while starting`,
    });
  }, 20_000);

  it('a start stopped by StopProcess is published as STOPPED (ExitReason contract: "including a stop that arrived before the VMM was ready")', async () => {
    const id = s.id('abort-reason');
    const start = s.startBoot(id, { socket_delay_ms: 20_000 }).catch((e: unknown) => e);
    await spawnedAndStarting(id);
    const stopped = (await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } })).process!;
    expect(await start).toMatchObject({ code: status.ABORTED });
    expect(ExitReason[stopped.exit!.reason]).toBe(ExitReason[ExitReason.STOPPED]);
  });

  // ----------------------------------------------------------------------------------------------
  // OUT_OF_RANGE (newer than latest; "older than retained" is in watch-exits-limits.test.ts)
  // ----------------------------------------------------------------------------------------------

  it('WatchExits with after_sequence newer than the latest sequence is OUT_OF_RANGE', async () => {
    const latest = (await s.client.listProcesses({})).exitSequence;
    const iterate = async () => {
      for await (const exit of s.client.watchExits({ afterSequence: latest + 1n })) return exit;
      return undefined;
    };
    await expectRpcError(iterate(), status.OUT_OF_RANGE, `after_sequence ${latest + 1n} is newer than the latest exit sequence ${latest}`);
    await expectRpcError(
      (async () => {
        for await (const exit of s.client.watchExits({ afterSequence: 2n ** 63n })) return exit;
        return undefined;
      })(),
      status.OUT_OF_RANGE,
      'after_sequence',
    );
  });

  it('no failed start in this suite left a process or socket behind', async () => {
    const live = (await s.client.listProcesses({ states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] })).processes;
    expect(live.map((p) => p.sandboxId)).toEqual([]);
    expect(await processesMentioning(s.fixture.runDir)).toEqual([]);
  });
});
