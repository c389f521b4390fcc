/**
 * StreamLogs end to end (root): the real daemon in this process, stand-in VMMs launched through
 * the real namespaced path, logs capped at 8 KiB and checked every 100 ms so rotations happen
 * while the tests watch.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { appendFile, readFile, stat } from 'node:fs/promises';
import { describeAsRoot } from '../helpers/root.js';
import { eventually, expectRpcError, processesMentioning, useGrpcSuite, WAIT_MS } from '../grpc/support.js';
import { LogsClient } from './logs-client.js';

const CAP = 8192;

function numbered(from: number, to: number, tag: string): string {
  let text = '';
  for (let i = from; i <= to; i++) text += `${tag} line ${String(i).padStart(5, '0')} ${'.'.repeat(40)}\n`;
  return text;
}

describeAsRoot('StreamLogs', () => {
  const suite = useGrpcSuite({ logMaxBytes: CAP, logKeep: 1, logCheckIntervalMs: 100 });
  let logs: LogsClient;
  beforeAll(() => {
    logs = new LogsClient(suite.harness.address);
  });
  afterAll(() => logs?.close());

  const logPathOf = async (sandboxId: string) => (await suite.client.getProcess({ sandboxId })).process!.logPath;

  it('answers NOT_FOUND for an unknown sandbox, before sending anything', async () => {
    await expectRpcError(logs.read({ sandboxId: 'no-such-sandbox' }), status.NOT_FOUND, 'no-such-sandbox');
    await expectRpcError(logs.read({ sandboxId: 'no-such-sandbox', follow: true }), status.NOT_FOUND);
  });

  it('sends the whole log, or its last lines, and ends', async () => {
    const id = suite.id('tail');
    await suite.startBoot(id, { stderr_lines: 30 });
    const whole = (await logs.read({ sandboxId: id })).toString();
    for (let i = 1; i <= 30; i++) expect(whole).toContain(`stderr line ${i} of 30\n`);
    const lines = whole.split('\n').slice(0, -1);
    expect((await logs.read({ sandboxId: id, tailLines: 5 })).toString()).toBe(`${lines.slice(-5).join('\n')}\n`);
    expect((await logs.read({ sandboxId: id, tailLines: 1000 })).toString()).toBe(whole);
    await suite.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
  });

  it('follows what the VMM appends until it exits, then ends with OK', async () => {
    const id = suite.id('follow');
    await suite.startBoot(id, { stderr_lines: 3 });
    const logPath = await logPathOf(id);
    const stream = logs.stream({ sandboxId: id, tailLines: 1, follow: true });
    await stream.until((text) => text === 'standin-vmm: stderr line 3 of 3\n');
    // Appends to the VMM's log, as its own output would arrive.
    await appendFile(logPath, 'appended while followed\n');
    await stream.until((text) => text.endsWith('appended while followed\n'));
    await suite.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    expect(await stream.ended).toBeUndefined();
    // Everything the log holds from the tail on, nothing more, nothing twice.
    const log = await readFile(logPath, 'utf8');
    expect(log.endsWith(stream.text)).toBe(true);
    expect(stream.text.startsWith('standin-vmm: stderr line 3 of 3\nappended while followed\n')).toBe(true);
  });

  it('reads an exited process while it is retained; follow then just drains', async () => {
    const id = suite.id('exited');
    await suite.startBoot(id, { stderr_lines: 4 });
    await suite.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    const whole = (await logs.read({ sandboxId: id })).toString();
    expect(whole).toContain('stderr line 4 of 4\n');
    const followed = logs.stream({ sandboxId: id, follow: true });
    expect(await followed.ended).toBeUndefined();
    expect(followed.text).toBe(whole);
  });

  it('rotates a live log past the cap, and a follower loses nothing across rotations', async () => {
    const id = suite.id('rotate');
    await suite.startBoot(id, { stderr_lines: 1 });
    const logPath = await logPathOf(id);
    const initial = await readFile(logPath, 'utf8');
    const stream = logs.stream({ sandboxId: id, follow: true });
    await stream.until((text) => text === initial);
    let written = initial;
    for (let burst = 0; burst < 4; burst++) {
      const text = numbered(burst * 200 + 1, burst * 200 + 200, `b${burst}`); // ~11 KB, past the cap
      await appendFile(logPath, text);
      written += text;
      // Each burst takes the log past the cap; wait for its rotation before the next burst, so
      // that no write races a truncation (the one loss copy-truncate allows).
      // A rotation truncates the log and then renames its copy into place as `.1` (the previous
      // `.1` went to `.2` before the copy): wait for both, not only the truncation.
      await eventually(async () => (await stat(logPath)).size === 0 && existsSync(`${logPath}.1`), WAIT_MS);
      expect((await stat(`${logPath}.1`)).size).toBeGreaterThan(CAP);
    }
    await appendFile(logPath, 'after the last rotation\n');
    written += 'after the last rotation\n';
    await stream.until((text) => text.endsWith('after the last rotation\n'));
    expect(stream.text).toBe(written);
    // A plain read sees only the current file.
    expect((await logs.read({ sandboxId: id })).toString()).toBe('after the last rotation\n');
    stream.cancel();
    expect((await stream.ended)?.code).toBe(status.CANCELLED);
    await eventually(() => suite.harness.daemon.operations.logs!.readCount === 0, WAIT_MS);

    // The exit's stderr tail comes from the rotated log as it is now.
    const stopped = await suite.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    expect(stopped.process?.exit?.stderrTail).toContain('after the last rotation');
  });

  it('leaves an exited VMM\'s log alone, however large', async () => {
    const id = suite.id('big-exited');
    await suite.startBoot(id, {});
    await suite.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    const logPath = await logPathOf(id);
    await appendFile(logPath, 'x'.repeat(CAP * 4));
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect((await stat(logPath)).size).toBeGreaterThanOrEqual(CAP * 4);
    expect(existsSync(`${logPath}.1`)).toBe(false);
  });

  it('paces a large read to a client that stops reading, and delivers it whole when it resumes', async () => {
    const id = suite.id('slow-client');
    await suite.startBoot(id, {});
    await suite.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 5n } });
    const logPath = await logPathOf(id);
    // 8 MiB in an exited VMM's log (no rotation): far more than HTTP/2 windows and grpc-js buffers.
    const block = numbered(1, 1000, 'big'); // ~53 KB
    const blocks = Math.ceil((8 * 1024 * 1024) / block.length);
    await appendFile(logPath, block.repeat(blocks));
    const expected = await readFile(logPath);
    const readsBefore = suite.harness.daemon.operations.logs!.readCount;
    const stream = logs.stream({ sandboxId: id });
    stream.call.pause();
    await new Promise((resolve) => setTimeout(resolve, 500));
    // Paused: what arrived is bounded by flow control, far from the whole log; the stream is still open.
    expect(stream.bytes.length).toBeLessThan(expected.length / 4);
    expect(suite.harness.daemon.operations.logs!.readCount).toBe(readsBefore + 1);
    stream.call.resume();
    expect(await stream.ended).toBeUndefined();
    expect(stream.bytes.equals(expected)).toBe(true);
  });
});

describeAsRoot('StreamLogs when the daemon stops', () => {
  const suite = useGrpcSuite({}, { daemonStoppedByTest: true });

  it('ends a follower with UNAVAILABLE; the VMM keeps running', async () => {
    const logs = new LogsClient(suite.harness.address);
    try {
      const id = suite.id('shutdown');
      const started = await suite.startBoot(id, { stderr_lines: 2 });
      const pid = started.process!.pid;
      const stream = logs.stream({ sandboxId: id, follow: true });
      await stream.until((text) => text.includes('stderr line 2 of 2'));
      try {
        await suite.harness.daemon.stop();
        expect({ code: (await stream.ended)?.code, details: (await stream.ended)?.details }).toEqual({
          code: status.UNAVAILABLE,
          details: expect.stringContaining('shutting down'),
        });
        // Not the VMM's end: it outlives the daemon.
        expect(() => process.kill(pid, 0)).not.toThrow();
      } finally {
        // The daemon is gone: clean the VMM up ourselves, and wait for it and its reaper.
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // already gone
        }
        await eventually(async () => (await processesMentioning(suite.socketOf(id))).length === 0, WAIT_MS);
      }
    } finally {
      logs.close();
    }
  });
});
