/**
 * The real vmprocctl binary, one process per command, against a real daemon (in this process,
 * on a unix socket, launching the stand-in VMM through the namespaced path): every command, its
 * table and --json output, its exit codes and its hints; `watch` streaming lines as exits happen.
 */
import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { fromJson } from '@bufbuild/protobuf';
import { ServerCredentials } from '@grpc/grpc-js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import {
  ListProcessesResponseSchema,
  ProcessExitSchema,
  ProcessState,
  StartProcessResponseSchema,
  WaitProcessResponseSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { isRpcError, Status } from '../../src/client/rpc-error.js';
import { startStubServer } from '../client/stub-server.js';
import { makeTlsFiles, SERVER_NAME } from '../client/tls-files.js';
import { type DaemonHarness, startDaemonHarness } from '../helpers/daemon-harness.js';
import { createTestNetns, type TestNetns } from '../helpers/netns.js';
import { killProcessesMentioning } from '../helpers/process-scan.js';
import { describeAsRoot } from '../helpers/root.js';
import { eventually, WAIT_MS } from '../helpers/wait.js';
import { createSandboxFixture, type SandboxFixture, type StandinKnobs } from '../helpers/sandbox-fixture.js';
import { ctl, RunningCtl } from './support.js';

describeAsRoot('vmprocctl against a real daemon', () => {
  let fixture: SandboxFixture;
  let netns: TestNetns;
  let harness: DaemonHarness;
  const running: RunningCtl[] = [];
  /** vmprocctl ARGS on this suite's daemon. */
  const run = (...args: string[]) => ctl(['--address', harness.address, ...args]);
  const follow = (...args: string[]) => {
    const proc = new RunningCtl(['--address', harness.address, ...args]);
    running.push(proc);
    return proc;
  };
  const bootArgs = async (id: string, knobs: StandinKnobs = {}) => [
    'start', id, '--kernel', fixture.kernelPath, '--rootfs', await fixture.rootfs(id, knobs), '--netns', netns.name,
  ];

  beforeAll(async () => {
    netns = await createTestNetns('vmpl');
    fixture = await createSandboxFixture();
    harness = await startDaemonHarness(fixture);
    await harness.client.waitForReady(10_000);
  });

  afterAll(async () => {
    try {
      await Promise.all(running.map((p) => p.kill()));
      const { processes } = await harness.client.listProcesses({ states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] });
      await Promise.all(processes.map((p) => harness.client.stopProcess({ sandboxId: p.sandboxId, gracePeriod: { seconds: 0n } })));
      await harness.stop();
    } finally {
      await killProcessesMentioning(fixture.root);
      await netns.remove();
      await fixture.remove();
    }
  }, 60_000);

  it('start prints the pid and readiness; --json prints the StartProcessResponse; a second start is ALREADY_EXISTS', async () => {
    const table = await run(...(await bootArgs('cli-a')), '--label', 'team=a', '--label', 'tier=gold', '--ready-timeout', '3s');
    expect(table).toMatchObject({ exitCode: 0, stderr: '' });
    expect(table.stdout).toMatch(/^started cli-a: pid \d+, vmm 53\.0\.0, ready in \d+ms$/);

    const json = await run(...(await bootArgs('cli-b')), '--label', 'team=b', '--json');
    expect(json.exitCode).toBe(0);
    const started = fromJson(StartProcessResponseSchema, JSON.parse(json.stdout));
    expect(started.process).toMatchObject({ sandboxId: 'cli-b', state: ProcessState.RUNNING, labels: { team: 'b' } });
    expect(JSON.parse(json.stdout).process.state).toBe('PROCESS_STATE_RUNNING'); // protobuf JSON, enum names as buf curl prints them

    const again = await run(...(await bootArgs('cli-a')));
    expect(again.exitCode).toBe(1);
    expect(again.stdout).toBe('');
    expect(again.stderr).toMatch(/^vmprocctl: ALREADY_EXISTS: .*cli-a/);
    expect(again.stderr).toContain('hint: a process with this sandbox ID is live: stop it first (vmprocctl stop cli-a)');
  });

  it('start resolves relative paths; restore mode with a snapshot; precondition failures carry a hint', async () => {
    const rootfs = await fixture.rootfs('cli-rel');
    const rel = await ctl(['--address', harness.address, 'start', 'cli-rel', '--kernel', relative(fixture.root, fixture.kernelPath),
      '--rootfs', relative(fixture.root, rootfs), '--netns', netns.name], { cwd: fixture.root });
    expect(rel.exitCode).toBe(0);
    expect((await harness.client.getProcess({ sandboxId: 'cli-rel' })).process?.rootfsPath).toBe(rootfs);

    const restore = await run('start', 'cli-restore', '--rootfs', await fixture.rootfs('cli-restore'), '--netns', netns.name,
      '--restore-source', await fixture.snapshot('s1'), '--restore-mode', 'on-demand', '--resume', '--json');
    expect(restore.exitCode).toBe(0);
    expect(JSON.parse(restore.stdout).process.mode).toBe('LAUNCH_MODE_RESTORE');

    const noNetns = await run('start', 'cli-nonet', '--kernel', fixture.kernelPath, '--rootfs', rootfs, '--netns', 'no-such-netns');
    expect(noNetns.exitCode).toBe(1);
    expect(noNetns.stderr).toMatch(/^vmprocctl: FAILED_PRECONDITION: .*no-such-netns/);
    expect(noNetns.stderr).toContain('hint: check that the kernel and rootfs files and the network namespace exist');

    const slow = await run(...(await bootArgs('cli-slow', { socket_delay_ms: 2_000 })), '--ready-timeout', '300ms');
    expect(slow.exitCode).toBe(1);
    expect(slow.stderr).toMatch(/^vmprocctl: DEADLINE_EXCEEDED: /);
    expect(slow.stderr).toContain('hint: the VMM was not ready in time: raise --ready-timeout');
  });

  it('list prints a table, filters by state and label, and --json carries exitSequence', async () => {
    const all = await run('list');
    expect(all.exitCode).toBe(0);
    const [header, ...rows] = all.stdout.split('\n');
    expect(header!.split(/\s{2,}/)).toEqual(['SANDBOX', 'PID', 'STATE', 'MODE', 'NETNS', 'AGE', 'EXIT', 'LABELS']);
    const rowA = rows.find((r) => r.startsWith('cli-a '))!.split(/\s{2,}/);
    expect(rowA).toEqual(['cli-a', expect.stringMatching(/^\d+$/), 'running', 'boot', netns.name, expect.stringMatching(/^\d+(ms|s|m)$/), '-', 'team=a,tier=gold']);
    expect(rows.find((r) => r.startsWith('cli-restore '))).toContain('restore');
    // The failed start is listed with its exit.
    const slow = rows.find((r) => r.startsWith('cli-slow '))!.split(/\s{2,}/);
    expect([slow[2], slow[6]]).toEqual(['exited', expect.stringMatching(/\(start_timeout\)$/)]);

    const filtered = await run('list', '--state', 'running', '--label', 'team=a');
    expect(filtered.stdout.trim().split('\n').slice(1).map((r) => r.split(/\s+/)[0])).toEqual(['cli-a']);

    const json = await run('list', '--json', '--state', 'exited');
    const parsed = fromJson(ListProcessesResponseSchema, JSON.parse(json.stdout));
    expect(parsed.processes.map((p) => p.sandboxId)).toContain('cli-slow');
    expect(parsed.processes.every((p) => p.state === ProcessState.EXITED)).toBe(true);
    expect(parsed.exitSequence).toBe((await harness.client.listProcesses({})).exitSequence);
  });

  it('get shows every field; --json the GetProcessResponse; NOT_FOUND says how to list', async () => {
    const got = await run('get', 'cli-a');
    expect(got.exitCode).toBe(0);
    for (const field of ['Sandbox:', 'State:', 'PID:', 'Mode:', 'Netns:', 'Labels:', 'Started:', 'Ready:', 'VMM version:', 'Socket:', 'Log:']) {
      expect(got.stdout).toMatch(new RegExp(`^${field}\\s+\\S`, 'm'));
    }
    expect(got.stdout).toMatch(/^State:\s+running$/m);
    const json = JSON.parse((await run('get', 'cli-a', '--json')).stdout);
    expect(json.process).toMatchObject({ sandboxId: 'cli-a', state: 'PROCESS_STATE_RUNNING', labels: { team: 'a', tier: 'gold' } });

    const missing = await run('get', 'nope');
    expect(missing).toEqual({ exitCode: 1, stdout: '', stderr: 'vmprocctl: NOT_FOUND: no process for sandbox "nope"\nhint: list sandboxes with: vmprocctl list' });
  });

  it('signal sends by name; unknown names and exited processes fail with hints', async () => {
    const sent = await run('signal', 'cli-a', 'CONT');
    expect(sent.exitCode).toBe(0);
    expect(sent.stdout).toMatch(/^sent SIGCONT to cli-a \(pid \d+\)$/);
    const bogus = await run('signal', 'cli-a', 'BOGUS');
    expect(bogus.exitCode).toBe(1);
    expect(bogus.stderr).toMatch(/^vmprocctl: INVALID_ARGUMENT: .*BOGUS/);
    expect(bogus.stderr).toContain('hint: give a signal name such as TERM');
    const exited = await run('signal', 'cli-slow', 'TERM');
    expect(exited.exitCode).toBe(1);
    expect(exited.stderr).toMatch(/^vmprocctl: FAILED_PRECONDITION: /);
    expect(exited.stderr).toContain('hint: the process has already exited; see: vmprocctl get cli-slow');
  });

  it('wait: 0 for exit code 0, 3 for a non-zero code or a signal, 1 for NOT_FOUND or its --timeout', async () => {
    await run(...(await bootArgs('cli-ok', { crash_after_ms: 200, crash_exit_code: 0 })));
    await run(...(await bootArgs('cli-bad', { crash_after_ms: 200, crash_exit_code: 7 })));
    await run(...(await bootArgs('cli-sig', { crash_after_ms: 200, crash_signal: 'SEGV' })));
    const ok = await run('wait', 'cli-ok');
    expect(ok).toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/^cli-ok exited: code 0 \(exited\)/) });
    const bad = await run('wait', 'cli-bad');
    expect(bad).toMatchObject({ exitCode: 3, stdout: expect.stringMatching(/^cli-bad exited: code 7 \(exited\)/) });
    const sig = await run('wait', 'cli-sig', '--json');
    expect(sig.exitCode).toBe(3);
    expect(fromJson(WaitProcessResponseSchema, JSON.parse(sig.stdout)).process?.exit?.signal).toBe('SIGSEGV');

    expect((await run('wait', 'nope')).exitCode).toBe(1);
    const timedOut = await run('wait', 'cli-a', '--timeout', '300ms');
    expect(timedOut.exitCode).toBe(1);
    expect(timedOut.stderr).toMatch(/^vmprocctl: DEADLINE_EXCEEDED: /);
    expect(timedOut.stderr).toContain('hint: the process is still running; wait longer with --timeout');
  });

  it('watch streams one line per exit as it happens (table and --json), filters by sandbox, replays with --after', async () => {
    const latest = (await harness.client.listProcesses({})).exitSequence;
    const table = follow('watch');
    const json = follow('watch', '--json');
    const onlyB = follow('watch', '--json', '--sandbox', 'cli-b');
    await table.waitForLines(1); // the header, printed once the daemon answered
    await waitForSubscribers(harness, 3);

    const stopped = await run('stop', 'cli-a', '--grace', '5s');
    expect(stopped).toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/^cli-a exited: code 0 \(stopped\)/) });
    await table.waitForLines(2);
    await json.waitForLines(1);
    expect(table.lines[0]!.split(/\s+/)).toEqual(['SEQ', 'TIME', 'SANDBOX', 'PID', 'RESULT', 'REASON', 'MESSAGE']);
    expect(table.lines[1]!.split(/\s+/).slice(0, 7)).toEqual([String(latest + 1n), expect.stringMatching(/^\d{4}-\d\d-\d\dT/), 'cli-a', expect.stringMatching(/^\d+$/), 'code', '0', 'stopped']);
    const exitA = fromJson(ProcessExitSchema, JSON.parse(json.lines[0]!));
    expect(exitA).toMatchObject({ sandboxId: 'cli-a', sequence: latest + 1n, exitCode: 0 });

    const stopB = await run('stop', 'cli-b', '--grace', '0s', '--json');
    expect(JSON.parse(stopB.stdout).process.exit.signal).toBe('SIGKILL');
    await onlyB.waitForLines(1);
    await json.waitForLines(2);
    expect(onlyB.lines.map((l) => JSON.parse(l).sandboxId)).toEqual(['cli-b']);
    expect(JSON.parse(json.lines[1]!)).toMatchObject({ sandboxId: 'cli-b', sequence: String(latest + 2n), signal: 'SIGKILL', reason: 'EXIT_REASON_STOPPED' });
    expect(table.stderr + json.stderr + onlyB.stderr).toBe('');

    // Killing it ends it; nothing is left subscribed.
    await Promise.all([table.kill(), json.kill(), onlyB.kill()]);
    await waitForSubscribers(harness, 0);

    // --after replays from the retained history, then carries on live.
    const replay = follow('watch', '--json', '--after', String(latest));
    await replay.waitForLines(2);
    expect(replay.lines.map((l) => JSON.parse(l).sandboxId)).toEqual(['cli-a', 'cli-b']);
    await replay.kill();

    const future = await run('watch', '--after', '999999');
    expect(future.exitCode).toBe(1);
    expect(future.stderr).toMatch(/^vmprocctl: OUT_OF_RANGE: /);
    expect(future.stderr).toContain('hint: the daemon no longer keeps exits that far back');
  });

  it('stop prints the exit; --json the StopProcessResponse; NOT_FOUND says how to list', async () => {
    const stopped = await run('stop', 'cli-rel', '--json');
    expect(JSON.parse(stopped.stdout).process.exit).toMatchObject({ sandboxId: 'cli-rel', reason: 'EXIT_REASON_STOPPED' });
    const again = await run('stop', 'cli-rel'); // stopping an exited process returns its exit
    expect(again).toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/^cli-rel exited: code 0 \(stopped\)/) });
    const missing = await run('stop', 'nope');
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain('hint: list sandboxes with: vmprocctl list');
    await run('stop', 'cli-restore', '--grace', '0s');
  });

  it('logs prints the VMM output raw (--tail, --json), or says the daemon lacks StreamLogs', async () => {
    const probe = await (async () => {
      try {
        for await (const _chunk of harness.client.streamLogs({ sandboxId: 'cli-ok' })) break;
        return 'ok';
      } catch (error) {
        if (isRpcError(error, Status.UNIMPLEMENTED)) return 'unimplemented';
        throw error;
      }
    })();
    if (probe === 'unimplemented') {
      process.stderr.write('\n*** this daemon has no StreamLogs handler: testing only the UNIMPLEMENTED path of vmprocctl logs ***\n\n');
      const result = await run('logs', 'cli-ok');
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toMatch(/^vmprocctl: UNIMPLEMENTED: /);
      expect(result.stderr).toContain('vmprocctl get cli-ok');
      return;
    }
    await run(...(await bootArgs('cli-log', { stderr_lines: 5 })));
    const all = await run('logs', 'cli-log');
    expect(all.exitCode).toBe(0);
    expect(all.stdout).toContain('standin-vmm: stderr line 5 of 5');
    const tail = await run('logs', 'cli-log', '--tail', '2');
    expect(tail.stdout.trim().split('\n')).toHaveLength(2);
    expect(tail.stdout).toContain('stderr line 5 of 5');
    const json = await run('logs', 'cli-log', '--tail', '1', '--json');
    const chunks = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { data: string });
    expect(Buffer.concat(chunks.map((c) => Buffer.from(c.data, 'base64'))).toString()).toContain('stderr line 5 of 5');

    const following = follow('logs', 'cli-log', '--tail', '1', '--follow');
    await following.waitFor(() => following.lines.some((l) => l.includes('stderr line 5 of 5')), 'the last log line');
    await run('stop', 'cli-log');
    const ended = await following.exited; // the stream ends once the VMM exited
    expect(ended.code).toBe(0);
    const missing = await run('logs', 'nope');
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain('hint: list sandboxes with: vmprocctl list');
  });

  it('watch rides out a daemon restart: the exit that happened meanwhile comes next, nothing twice', async () => {
    await run(...(await bootArgs('cli-r1')));
    await run(...(await bootArgs('cli-r2')));
    const watch = follow('watch', '--json');
    await waitForSubscribers(harness, 1);
    const pid = Number(JSON.parse((await run('get', 'cli-r1', '--json')).stdout).process.pid);
    await harness.stop(); // streams end with UNAVAILABLE; the VMMs keep running
    process.kill(pid, 'SIGKILL'); // an exit while no daemon runs
    await watch.waitFor(() => watch.stderr.includes('watch interrupted (UNAVAILABLE'), 'the interruption notice');
    harness = await startDaemonHarness(fixture);
    await harness.client.waitForReady(10_000);
    await run('stop', 'cli-r2');
    await watch.waitForLines(2);
    expect(watch.lines.map((l) => [JSON.parse(l).sandboxId, JSON.parse(l).signal ?? JSON.parse(l).exitCode])).toEqual([['cli-r1', 'SIGKILL'], ['cli-r2', 0]]);
    const [first, second] = watch.lines.map((l) => BigInt(JSON.parse(l).sequence));
    expect(second).toBe(first! + 1n);
    await watch.kill();
  });

  it('events prints every lifecycle event of a sandbox, as a table or JSON, and --kind filters them', async () => {
    const table = follow('events', '--sandbox', 'cli-ev');
    const json = follow('events', '--sandbox', 'cli-ev', '--kind', 'exited', '--json');
    await eventually(() => harness.daemon.supervisor.events.subscriberCount >= 2, WAIT_MS);
    await run(...(await bootArgs('cli-ev')));
    await run('stop', 'cli-ev');
    await table.waitForLines(4);
    expect(table.lines[0]).toMatch(/^SEQ\s+TIME\s+SANDBOX\s+PID\s+EVENT\s+BY\s+DETAIL$/);
    expect(table.lines.slice(1).map((line) => line.split(/\s+/).slice(4, 6).join(' '))).toEqual(['started daemon', 'ready daemon', 'exited daemon']);
    expect(table.lines[3]).toMatch(/code 0 \(stopped\) exit \d+$/);
    await json.waitForLines(1);
    const exited = JSON.parse(json.lines[0]!);
    expect({ kind: exited.kind, origin: exited.origin, reason: exited.exit.reason }).toEqual({ kind: 'EVENT_KIND_EXITED', origin: 'EVENT_ORIGIN_DAEMON', reason: 'EXIT_REASON_STOPPED' });
    await table.kill();
    await json.kill();
    const bad = await run('events', '--kind', 'nonsense');
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('is not an event kind; use one of started, ready, vm_booted');
  });

  it('TLS flags: mutual TLS to a TLS server; a wrong CA fails as UNAVAILABLE', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmpt-ctls-'));
    const tls = await makeTlsFiles(dir);
    const server = await startStubServer(() => ({ send: [], end: 'open' }), {
      credentials: ServerCredentials.createSsl(await tls.read('ca.pem'), [{ cert_chain: await tls.read('server.pem'), private_key: await tls.read('server.key') }], true),
    });
    try {
      const flags = ['--address', server.address, '--tls-ca', tls.path('ca.pem'), '--tls-cert', tls.path('client.pem'), '--tls-key', tls.path('client.key'), '--tls-server-name', SERVER_NAME];
      const ok = await ctl([...flags, 'get', 'sb-9', '--json']);
      expect(ok.exitCode).toBe(0);
      expect(JSON.parse(ok.stdout).process.sandboxId).toBe('sb-9');
      const wrongCa = await ctl(['--address', server.address, '--tls-ca', tls.path('client.pem'), '--tls-server-name', SERVER_NAME, 'get', 'sb-9', '--timeout', '5s']);
      expect(wrongCa.exitCode).toBe(1);
      expect(wrongCa.stderr).toMatch(/^vmprocctl: UNAVAILABLE: /);
      expect(wrongCa.stderr).toContain('hint: is vmprocd running, with TLS?');
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

async function waitForSubscribers(harness: DaemonHarness, count: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (harness.daemon.supervisor.exchange.subscriberCount !== count) {
    if (Date.now() > deadline) throw new Error(`expected ${count} watchers, have ${harness.daemon.supervisor.exchange.subscriberCount}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
