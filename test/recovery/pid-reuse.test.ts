/**
 * PID reuse: records whose PID now belongs to an unrelated process. While the daemon is down,
 * the journal gets records (with valid checksums, as a previous daemon would have written them)
 * naming the PID of a stranger the test started, with a start time that is not the stranger's:
 * the VMM they describe is gone and its PID was reused. The restarted daemon must not adopt them
 * and must never signal the stranger, even for records that ask for a SIGKILL at once (a stop past
 * its deadline, a start past its ready timeout) or that the test stops and signals itself.
 */
import { expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ProcessState, type ProcessInfo } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { readProcessStat } from '../../src/launch/proc-stat.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { describeAsRoot } from '../helpers/root.js';
import {
  appendJournalRecords,
  eventually,
  exitedAtMs,
  getProcess,
  isAlive,
  type JournalRecord,
  outcome,
  readJournalRecords,
  RPC_MS,
  useRecoverySuite,
  waitProcess,
  WAIT_MS,
} from './support.js';

/** A process that writes the name of every catchable signal it gets to `argv[1]`. */
const STRANGER = `
const fs = require('fs');
const out = process.argv[1];
for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGCONT', 'SIGWINCH', 'SIGALRM']) {
  process.on(s, () => fs.appendFileSync(out, s + '\\n'));
}
fs.writeFileSync(out + '.ready', String(process.pid));
setInterval(() => {}, 1 << 30);
`;

describeAsRoot('recovery: a recorded PID that now belongs to another process', () => {
  const suite = useRecoverySuite();
  let stranger: { pid: number; startTime: bigint; signalsFile: string };
  let daemon: DaemonProcess;
  let firstList: ProcessInfo[] = [];
  const crafted = ['reuse-run', 'reuse-stop', 'reuse-start', 'reuse-boot', 'reuse-status'];
  const statusAt = Date.now() - 30_000;

  it('restarts on a journal whose records name a reused PID', async () => {
    // A real launch first, as the template for the crafted records (and a VMM that must survive).
    const daemon1 = await suite.startDaemon();
    await daemon1.client().startProcess(await suite.bootRequest('real'), { timeoutMs: RPC_MS });
    await daemon1.stop();

    const signalsFile = join(suite.fixture.root, 'stranger.signals');
    await writeFile(signalsFile, '');
    const child = spawn(process.execPath, ['-e', STRANGER, signalsFile], { detached: true, stdio: 'ignore' });
    child.unref();
    suite.adopt(child.pid!);
    await eventually(() => existsSync(`${signalsFile}.ready`), WAIT_MS);
    stranger = { pid: child.pid!, startTime: (await readProcessStat(child.pid!))!.startTime, signalsFile };

    const records = await readJournalRecords(suite.stateDir);
    const template = records.find((r) => r.k === 'launch' && r.id === 'real')!;
    const bootId = template.bootId as string;
    const longAgo = Date.now() - 60_000;
    const launch = (id: string, extra: Record<string, unknown> = {}): JournalRecord => ({
      ...template,
      id,
      spec: { ...(template.spec as object), sandboxId: id, socketPath: suite.socketOf(id), ...((extra.spec as object) ?? {}) },
      logPath: join(suite.fixture.runDir, 'logs', `${id}.log`),
      statusPath: suite.statusFileOf(id),
      startedAt: longAgo,
      bootId: (extra.bootId as string) ?? bootId,
    });
    const wrongStart = String(stranger.startTime - 7n);
    const spawnOf = (id: string, startTime = wrongStart): JournalRecord => ({
      k: 'spawn', id, pid: stranger.pid, startTime, reaperPid: stranger.pid, reaperStartTime: wrongStart, logOffset: 0,
    });
    const ready = (id: string): JournalRecord => ({ k: 'ready', id, readyAt: longAgo + 100, vmmVersion: '53.0.0' });
    await appendJournalRecords(suite.stateDir, [
      // A running VMM whose PID was reused.
      launch('reuse-run'), spawnOf('reuse-run'), ready('reuse-run'),
      // A stop whose SIGKILL deadline passed while the daemon was down: SIGKILL is due at once.
      launch('reuse-stop'), spawnOf('reuse-stop'), ready('reuse-stop'), { k: 'stop', id: 'reuse-stop', killAt: longAgo + 1_000 },
      // A start whose ready timeout ran out while the daemon was down: it is killed at once.
      launch('reuse-start', { spec: { readyTimeoutMs: 1_000 } }), spawnOf('reuse-start'),
      // Launched before a reboot: even the stranger's real start time must not make it ours.
      launch('reuse-boot', { bootId: 'a-boot-before-this-one' }), spawnOf('reuse-boot', String(stranger.startTime)), ready('reuse-boot'),
      // A VMM whose reaper recorded its exit before the PID was reused.
      launch('reuse-status'), spawnOf('reuse-status'), ready('reuse-status'),
    ]);
    await writeFile(suite.statusFileOf('reuse-status'), `pid=${stranger.pid} code=3 at_ms=${statusAt}\n`);

    daemon = await suite.startDaemon();
    const client = daemon.client();
    firstList = (await client.listProcesses({}, { timeoutMs: RPC_MS })).processes;
    // Ask for signals right away, whatever the daemon thinks of these records yet.
    await Promise.allSettled([
      client.signalProcess({ sandboxId: 'reuse-run', signal: 'SIGUSR2' }, { timeoutMs: RPC_MS }),
      client.stopProcess({ sandboxId: 'reuse-run', gracePeriod: { seconds: 0n } }, { timeoutMs: RPC_MS }),
      client.stopProcess({ sandboxId: 'reuse-boot', gracePeriod: { seconds: 1n } }, { timeoutMs: RPC_MS }),
    ]);
  });

  it('never signals the process that now has the PID', async () => {
    expect(await isAlive(stranger.pid)).toBe(true);
    expect((await readProcessStat(stranger.pid))!.startTime).toBe(stranger.startTime);
    expect(await readFile(stranger.signalsFile, 'utf8')).toBe('');
  });

  it('publishes LOST for the records with no recorded status (STOPPED, status unknown, where a stop was asked), and the recorded status for the other', async () => {
    const client = daemon.client();
    const exits = new Map<string, ProcessInfo>();
    for (const id of crafted) exits.set(id, await waitProcess(client, id, (p) => p.state === ProcessState.EXITED));
    const lost = (id: string) => ({ sandboxId: id, reason: 'LOST', exitCode: undefined, signal: undefined, signalSentByDaemon: false });
    expect(Object.fromEntries(crafted.map((id) => [id, outcome(exits.get(id)!.exit)]))).toEqual({
      'reuse-run': lost('reuse-run'),
      // A stop had been asked for: it ended as asked, how exactly is unknown.
      'reuse-stop': { ...lost('reuse-stop'), reason: 'STOPPED' },
      'reuse-start': lost('reuse-start'),
      'reuse-boot': lost('reuse-boot'),
      'reuse-status': { sandboxId: 'reuse-status', reason: 'EXITED', exitCode: 3, signal: undefined, signalSentByDaemon: false },
    });
    expect(exitedAtMs(exits.get('reuse-status')!.exit!)).toBe(statusAt);
    expect(exits.get('reuse-boot')!.exit!.message).toContain('rebooted');
    expect(exits.get('reuse-stop')!.exit!.message).toMatch(/^stopped \(an unknown status: .*left no status/);
    // The stranger is still untouched now that every record is settled.
    expect(await isAlive(stranger.pid)).toBe(true);
    expect(await readFile(stranger.signalsFile, 'utf8')).toBe('');
    // And the real VMM was re-adopted alongside.
    expect(ProcessState[(await getProcess(client, 'real')).state]).toBe('RUNNING');
  });

  // Same root cause as in kill-while-running: re-adoption trusts the record and leaves the
  // liveness check to the adopted-exit sweep (1 s), so the daemon starts serving with the
  // stranger's PID listed as a RUNNING (or STOPPING) VMM and counts it as re-adopted.
  it('does not count or list a record whose PID was reused as a live VMM once it serves', async () => {
    const states = Object.fromEntries(
      crafted.map((id) => {
        const p = firstList.find((x) => x.sandboxId === id);
        return [id, p ? ProcessState[p.state] : 'missing'];
      }),
    );
    expect({ readopted: daemon.servingLine!.readopted, states }).toEqual({
      readopted: 1,
      states: Object.fromEntries(crafted.map((id) => [id, 'EXITED'])),
    });
  });
});
