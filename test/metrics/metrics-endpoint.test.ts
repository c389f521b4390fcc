/**
 * The Prometheus endpoint end to end (root): the real daemon with --metrics-listen on
 * 127.0.0.1:0, stand-in VMMs that become ready, fail to start, crash and are stopped, and what a
 * scrape with fetch says about them.
 */
import { expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { ExitReason } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { describeAsRoot } from '../helpers/root.js';
import { eventually, expectRpcError, useGrpcSuite, WAIT_MS } from '../grpc/support.js';
import { LogsClient } from '../logs/logs-client.js';
import { scrape } from './scrape.js';

describeAsRoot('metrics endpoint', () => {
  const suite = useGrpcSuite({ metricsListen: { kind: 'tcp', host: '127.0.0.1', port: 0 } });
  const url = () => {
    const address = suite.harness.daemon.operations.metricsAddress;
    if (address?.kind !== 'tcp') throw new Error('metrics are not served on TCP');
    return `http://127.0.0.1:${address.port}`;
  };

  it('serves the text format at /metrics, and only there', async () => {
    const first = await scrape({ url: url() });
    expect(first.status).toBe(200);
    expect(first.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    // Every exit reason and the ready outcome are there from the start, at zero.
    for (const reason of ['exited', 'signaled', 'stopped', 'start_failed', 'start_timeout', 'lost']) {
      expect(first.value('vmprocd_exits_total', { reason })).toBe(0);
    }
    expect(first.value('vmprocd_starts_total', { outcome: 'ready' })).toBe(0);
    expect(first.value('vmprocd_processes', { state: 'running' })).toBe(0);
    // The suite's exit recorder is a watcher.
    expect(first.value('vmprocd_exit_watchers')).toBe(1);
    // Process metrics from prom-client's defaults.
    expect(first.value('process_resident_memory_bytes')).toBeGreaterThan(0);

    expect((await scrape({ url: url() }, '/')).status).toBe(404);
    expect((await fetch(`${url()}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('counts starts by outcome, exits by reason, processes by state, store writes and log streams', async () => {
    const before = await scrape({ url: url() });
    const count = (name: string, labels?: Record<string, string>) => before.value(name, labels) ?? 0;

    const ready = suite.id('ready');
    await suite.startBoot(ready, {});
    const failed = suite.id('fails');
    await expectRpcError(suite.startBoot(failed, { exit_before_socket: 1 }), status.FAILED_PRECONDITION);
    const crashes = suite.id('crashes');
    await suite.startBoot(crashes, { crash_after_ms: 50, crash_exit_code: 3 });
    expect((await suite.recorder.exitOf(crashes)).reason).toBe(ExitReason.EXITED);
    const rejected = suite.id('rejected');
    await expectRpcError(suite.startBoot(rejected, {}, { kernelPath: '/nonexistent/vmlinux' }), status.FAILED_PRECONDITION);

    const logs = new LogsClient(suite.harness.address);
    const follower = logs.stream({ sandboxId: ready, follow: true });
    try {
      await eventually(() => suite.harness.daemon.operations.logs!.readCount === 1, WAIT_MS);
      const during = await scrape({ url: url() });
      expect(during.value('vmprocd_processes', { state: 'running' })).toBe(1);
      expect(during.value('vmprocd_log_streams')).toBe(1);
    } finally {
      follower.cancel();
      logs.close();
    }
    await suite.client.stopProcess({ sandboxId: ready, gracePeriod: { seconds: 5n } });
    await suite.recorder.exitOf(ready);

    const after = await scrape({ url: url() });
    const delta = (name: string, labels?: Record<string, string>) => (after.value(name, labels) ?? 0) - count(name, labels);
    expect({
      ready: delta('vmprocd_starts_total', { outcome: 'ready' }),
      failedPrecondition: delta('vmprocd_starts_total', { outcome: 'failed_precondition' }),
      readyObserved: delta('vmprocd_start_ready_seconds_count'),
      exited: delta('vmprocd_exits_total', { reason: 'exited' }),
      startFailed: delta('vmprocd_exits_total', { reason: 'start_failed' }),
      stopped: delta('vmprocd_exits_total', { reason: 'stopped' }),
      exitedProcesses: delta('vmprocd_processes', { state: 'exited' }),
      running: after.value('vmprocd_processes', { state: 'running' }),
      exitRecords: delta('vmprocd_store_write_seconds_count', { operation: 'exit' }),
      sequence: delta('vmprocd_exit_sequence'),
      logStreams: after.value('vmprocd_log_streams'),
    }).toEqual({
      ready: 2,
      // The exit before ready and the missing kernel (refused before any spawn, so no exit).
      failedPrecondition: 2,
      readyObserved: 2,
      exited: 1,
      startFailed: 1,
      stopped: 1,
      exitedProcesses: 3,
      running: 0,
      exitRecords: 3,
      sequence: 3,
      logStreams: 0,
    });
    // Three launches were journalled (the refused start never got that far), each timed to disk.
    expect(delta('vmprocd_store_write_seconds_count', { operation: 'launch' })).toBe(3);
    expect(after.value('vmprocd_store_write_seconds_sum', { operation: 'launch' })).toBeGreaterThan(0);
    // Start-to-ready is a real duration: a stand-in start takes milliseconds, not zero, not seconds.
    const readySeconds = delta('vmprocd_start_ready_seconds_sum');
    expect(readySeconds).toBeGreaterThan(0);
    expect(readySeconds).toBeLessThan(10);
  });

  it('scrapes quickly', async () => {
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const begun = performance.now();
      expect((await scrape({ url: url() })).status).toBe(200);
      times.push(performance.now() - begun);
    }
    times.sort((a, b) => a - b);
    process.stderr.write(`metrics scrape (few processes): median ${times[10]!.toFixed(2)} ms, max ${times[19]!.toFixed(2)} ms\n`);
    expect(times[10]).toBeLessThan(100);
  });
});
