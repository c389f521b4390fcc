/** ListProcesses in pages: one snapshot per listing, bounded pages, tokens that cannot be forged or mixed. */
import { describe, expect, it } from '@jest/globals';
import type { ProcessSnapshot } from '../../src/core/domain.js';
import { LISTING_TTL_MS, ListPages, MAX_LISTINGS, PAGE_BYTE_BUDGET } from '../../src/rpc/list-pages.js';
import { expectThrowsVmprocError } from './support/errors.js';

const snapshot = (id: string, bytes = 100) => ({ sandboxId: id, bytes }) as unknown as ProcessSnapshot;
const sizeOf = (s: ProcessSnapshot) => (s as unknown as { bytes: number }).bytes;
const ids = (page: { processes: readonly ProcessSnapshot[] }) => page.processes.map((p) => p.sandboxId);

function pager(now = { t: 0 }) {
  return { pages: new ListPages(sizeOf, () => now.t), now };
}

describe('ListPages', () => {
  it('pages one snapshot: later pages do not see changes, and carry its exit sequence', () => {
    const { pages } = pager();
    let world = ['a', 'b', 'c', 'd', 'e'].map((id) => snapshot(id));
    let takes = 0;
    const take = () => {
      takes++;
      return { processes: [...world], exitSequence: 7 };
    };
    const first = pages.page({ pageSize: 2, pageToken: '', filterKey: 'k' }, take);
    world = [snapshot('z')];
    const second = pages.page({ pageSize: 2, pageToken: first.nextPageToken, filterKey: 'k' }, take);
    const third = pages.page({ pageSize: 2, pageToken: second.nextPageToken, filterKey: 'k' }, take);
    expect([ids(first), ids(second), ids(third)]).toEqual([['a', 'b'], ['c', 'd'], ['e']]);
    expect([first.exitSequence, second.exitSequence, third.exitSequence]).toEqual([7, 7, 7]);
    expect(third.nextPageToken).toBe('');
    expect(takes).toBe(1);
    expect(pages.size).toBe(0); // a listing read to its end is gone
  });

  it('defaults to 100 a page and refuses more than 1000', () => {
    const { pages } = pager();
    const take = () => ({ processes: Array.from({ length: 150 }, (_, i) => snapshot(`p${i}`)), exitSequence: 0 });
    expect(pages.page({ pageSize: 0, pageToken: '', filterKey: 'k' }, take).processes).toHaveLength(100);
    expectThrowsVmprocError(() => pages.page({ pageSize: 1001, pageToken: '', filterKey: 'k' }, take), 'invalid-argument', 'page_size 1001 is over the maximum of 1000');
  });

  it('keeps a page under the byte budget, but always gives at least one process', () => {
    const { pages } = pager();
    const big = PAGE_BYTE_BUDGET / 3;
    const take = () => ({ processes: [snapshot('a', big), snapshot('b', big), snapshot('c', big), snapshot('d', big), snapshot('huge', PAGE_BYTE_BUDGET * 2)], exitSequence: 0 });
    const first = pages.page({ pageSize: 1000, pageToken: '', filterKey: 'k' }, take);
    expect(ids(first)).toEqual(['a', 'b', 'c']);
    const second = pages.page({ pageSize: 1000, pageToken: first.nextPageToken, filterKey: 'k' }, take);
    expect(ids(second)).toEqual(['d']);
    expect(ids(pages.page({ pageSize: 1000, pageToken: second.nextPageToken, filterKey: 'k' }, take))).toEqual(['huge']);
  });

  it('refuses a forged token, a token for other filters, and an expired one', () => {
    const { pages, now } = pager();
    const take = () => ({ processes: ['a', 'b', 'c'].map((id) => snapshot(id)), exitSequence: 0 });
    const first = pages.page({ pageSize: 1, pageToken: '', filterKey: 'k' }, take);
    expectThrowsVmprocError(() => pages.page({ pageSize: 1, pageToken: 'nope', filterKey: 'k' }, take), 'invalid-argument', 'not one this daemon issued');
    expectThrowsVmprocError(() => pages.page({ pageSize: 1, pageToken: `${'0'.repeat(24)}.1`, filterKey: 'k' }, take), 'invalid-argument', 'unknown or expired');
    expectThrowsVmprocError(() => pages.page({ pageSize: 1, pageToken: first.nextPageToken.replace(/\.\d+$/, '.99'), filterKey: 'k' }, take), 'invalid-argument', 'unknown or expired');
    expectThrowsVmprocError(() => pages.page({ pageSize: 1, pageToken: first.nextPageToken, filterKey: 'other' }, take), 'invalid-argument', 'other states or labels');
    now.t += LISTING_TTL_MS - 1;
    const second = pages.page({ pageSize: 1, pageToken: first.nextPageToken, filterKey: 'k' }, take);
    now.t += LISTING_TTL_MS + 1;
    expectThrowsVmprocError(() => pages.page({ pageSize: 1, pageToken: second.nextPageToken, filterKey: 'k' }, take), 'invalid-argument', 'unknown or expired');
  });

  it('keeps a bounded number of listings, forgetting the one read least recently', () => {
    const { pages } = pager();
    const take = () => ({ processes: [snapshot('a'), snapshot('b')], exitSequence: 0 });
    const tokens = Array.from({ length: MAX_LISTINGS + 1 }, () => pages.page({ pageSize: 1, pageToken: '', filterKey: 'k' }, take).nextPageToken);
    expect(pages.size).toBe(MAX_LISTINGS);
    expectThrowsVmprocError(() => pages.page({ pageSize: 1, pageToken: tokens[0]!, filterKey: 'k' }, take), 'invalid-argument', 'unknown or expired');
    expect(ids(pages.page({ pageSize: 1, pageToken: tokens.at(-1)!, filterKey: 'k' }, take))).toEqual(['b']);
  });
});
