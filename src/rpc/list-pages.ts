import { randomBytes } from 'node:crypto';
import type { ProcessSnapshot } from '../core/domain.js';
import { VmprocError } from '../errors.js';

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;
/** A page's processes stay under this many encoded bytes, so every page fits a client's 4 MiB limit with room. */
export const PAGE_BYTE_BUDGET = 1024 * 1024;
/** How long a listing is kept after its last page was read. */
export const LISTING_TTL_MS = 60_000;
/** Listings kept at once; the one read least recently goes first. */
export const MAX_LISTINGS = 256;

interface Listing {
  readonly processes: readonly ProcessSnapshot[];
  readonly exitSequence: number;
  readonly eventSequence: number;
  /** The filters it was taken with: later pages must ask for the same. */
  readonly filterKey: string;
  lastReadAt: number;
}

export interface Page {
  readonly processes: readonly ProcessSnapshot[];
  readonly exitSequence: number;
  readonly eventSequence: number;
  readonly nextPageToken: string;
}

/**
 * ListProcesses in pages, each page from one snapshot taken for the listing's first page. The
 * snapshot is an array of references to frozen process snapshots (shared with the supervisor), so
 * keeping a listing costs a pointer per process, not a copy. `encodedSize` is what a process adds
 * to a response on the wire.
 */
export class ListPages {
  readonly #listings = new Map<string, Listing>();
  readonly #encodedSize: (snapshot: ProcessSnapshot) => number;
  readonly #now: () => number;

  constructor(encodedSize: (snapshot: ProcessSnapshot) => number, now: () => number = Date.now) {
    this.#encodedSize = encodedSize;
    this.#now = now;
  }

  /** How many listings are kept now. */
  get size(): number {
    return this.#listings.size;
  }

  /**
   * A page: the first of a new listing from `take()` (called only then), or the one `pageToken`
   * points at. `filterKey` identifies the filters.
   */
  page(request: { readonly pageSize: number; readonly pageToken: string; readonly filterKey: string }, take: () => { processes: ProcessSnapshot[]; exitSequence: number; eventSequence?: number }): Page {
    const pageSize = request.pageSize === 0 ? DEFAULT_PAGE_SIZE : request.pageSize;
    if (pageSize > MAX_PAGE_SIZE) throw new VmprocError('invalid-argument', `page_size ${pageSize} is over the maximum of ${MAX_PAGE_SIZE}`);
    this.#expire();
    let id: string;
    let offset: number;
    let listing: Listing;
    if (request.pageToken === '') {
      const taken = take();
      id = randomBytes(12).toString('hex');
      offset = 0;
      listing = { ...taken, eventSequence: taken.eventSequence ?? 0, filterKey: request.filterKey, lastReadAt: this.#now() };
    } else {
      ({ id, offset } = parseToken(request.pageToken));
      const found = this.#listings.get(id);
      if (!found || offset > found.processes.length) {
        throw new VmprocError(
          'invalid-argument',
          `page_token ${JSON.stringify(request.pageToken)} is unknown or expired (a listing is kept ${LISTING_TTL_MS / 1000}s after its last page, and not across a daemon restart); start the listing again without page_token`,
        );
      }
      if (found.filterKey !== request.filterKey) {
        throw new VmprocError('invalid-argument', 'page_token belongs to a listing with other states or labels; ask for the next page with the same filters as the first');
      }
      listing = found;
      listing.lastReadAt = this.#now();
      this.#listings.delete(id); // re-inserted below if pages remain: most recently read last
    }
    let end = offset;
    let bytes = 0;
    while (end < listing.processes.length && end - offset < pageSize) {
      const size = this.#encodedSize(listing.processes[end]!);
      // Always at least one process a page, however large: a single one is far under the budget.
      if (end > offset && bytes + size > PAGE_BYTE_BUDGET) break;
      bytes += size;
      end++;
    }
    const more = end < listing.processes.length;
    if (more) {
      this.#listings.set(id, listing);
      while (this.#listings.size > MAX_LISTINGS) this.#listings.delete(this.#listings.keys().next().value!);
    }
    return { processes: listing.processes.slice(offset, end), exitSequence: listing.exitSequence, eventSequence: listing.eventSequence, nextPageToken: more ? `${id}.${end}` : '' };
  }

  #expire(): void {
    const cutoff = this.#now() - LISTING_TTL_MS;
    for (const [id, listing] of this.#listings) {
      if (listing.lastReadAt >= cutoff) break; // in order of last read
      this.#listings.delete(id);
    }
  }
}

function parseToken(token: string): { id: string; offset: number } {
  const match = /^([0-9a-f]{24})\.(\d{1,9})$/.exec(token);
  if (!match) throw new VmprocError('invalid-argument', `page_token ${JSON.stringify(token.slice(0, 64))} is not one this daemon issued; pass next_page_token as it came`);
  return { id: match[1]!, offset: Number(match[2]) };
}
