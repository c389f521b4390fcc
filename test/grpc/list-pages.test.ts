/**
 * ListProcesses in pages, end to end: pages stay under 1 MiB even at the worst case (64 labels
 * at their size limit, which the exit repeats), a client with grpc-js's default 4 MiB limit lists
 * everything, and every page of one listing reflects one snapshot, whatever starts and exits
 * between pages.
 */
import { expect, it } from '@jest/globals';
import { toBinary } from '@bufbuild/protobuf';
import { status } from '@grpc/grpc-js';
import { ListProcessesResponseSchema, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { VmProcessClient } from '../../src/client/vm-process-client.js';
import { describeAsRoot } from '../helpers/root.js';
import { expectRpcError, useGrpcSuite } from './support.js';

/** 64 labels, keys of 128 bytes and values of 1024: the most a start may carry. */
const WORST_LABELS = Object.fromEntries(
  Array.from({ length: 64 }, (_, i) => [`k${String(i).padStart(2, '0')}${'x'.repeat(122)}z`, 'v'.repeat(1024)]),
);

describeAsRoot('gRPC end to end: ListProcesses pages', () => {
  const s = useGrpcSuite();

  it('keeps every page under 1 MiB at the worst case, and a default client lists all of it', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 16; i++) {
      const id = s.id('worst');
      ids.push(id);
      await s.startBoot(id, { stderr_lines: 20 }, { labels: WORST_LABELS });
      await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } });
    }
    // Each process with its exit is ~150 KiB: the 16 would be ~2.4 MiB in one response.
    const sizes: number[] = [];
    const seen: string[] = [];
    let token = '';
    do {
      const page = await s.client.listProcessesPage({ labels: { [Object.keys(WORST_LABELS)[0]!]: 'v'.repeat(1024) }, pageToken: token });
      sizes.push(toBinary(ListProcessesResponseSchema, page).length);
      seen.push(...page.processes.map((p) => p.sandboxId));
      token = page.nextPageToken;
    } while (token !== '');
    expect({ pages: sizes.length > 1, largest: Math.max(...sizes) < 1024 * 1024, seen: [...seen].sort() }).toEqual({ pages: true, largest: true, seen: [...ids].sort() });
    // A client with grpc-js's default limits (4 MiB a message), paging as the TS client does.
    const plain = new VmProcessClient(s.harness.address);
    try {
      const all = await plain.listProcesses({ states: [ProcessState.EXITED] });
      expect(all.processes.filter((p) => ids.includes(p.sandboxId))).toHaveLength(16);
      expect(all.nextPageToken).toBe('');
    } finally {
      plain.close();
    }
  }, 60_000);

  it('every page of one listing comes from the snapshot of its first page, at one exit sequence', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const id = s.id('snap');
      ids.push(id);
      await s.startBoot(id, {}, { labels: { listing: 'snap' } });
    }
    const first = await s.client.listProcessesPage({ labels: { listing: 'snap' }, pageSize: 2 });
    // Between pages: one of them exits, and a new one starts.
    await s.client.stopProcess({ sandboxId: ids[4]!, gracePeriod: { seconds: 0n } });
    const late = s.id('snap');
    await s.startBoot(late, {}, { labels: { listing: 'snap' } });
    const rest = [];
    for (let token = first.nextPageToken; token !== ''; ) {
      const page = await s.client.listProcessesPage({ labels: { listing: 'snap' }, pageSize: 2, pageToken: token });
      expect(page.exitSequence).toBe(first.exitSequence);
      rest.push(...page.processes);
      token = page.nextPageToken;
    }
    const listing = [...first.processes, ...rest];
    expect(listing.map((p) => p.sandboxId).sort()).toEqual([...ids].sort());
    expect(listing.every((p) => p.state === ProcessState.RUNNING)).toBe(true);
    for (const id of [...ids.slice(0, 4), late]) await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } });
  });

  it('refuses a token from other filters, a forged one, and a page size over 1000', async () => {
    const ids = [s.id('tok'), s.id('tok')];
    for (const id of ids) await s.startBoot(id, {}, { labels: { listing: 'tok' } });
    const first = await s.client.listProcessesPage({ labels: { listing: 'tok' }, pageSize: 1 });
    await expectRpcError(s.client.listProcessesPage({ labels: { listing: 'other' }, pageSize: 1, pageToken: first.nextPageToken }), status.INVALID_ARGUMENT, 'other states or labels');
    await expectRpcError(s.client.listProcessesPage({ pageToken: 'forged' }), status.INVALID_ARGUMENT, 'not one this daemon issued');
    await expectRpcError(s.client.listProcessesPage({ pageSize: 1001 }), status.INVALID_ARGUMENT, 'page_size 1001');
    for (const id of ids) await s.client.stopProcess({ sandboxId: id, gracePeriod: { seconds: 0n } });
  });
});
