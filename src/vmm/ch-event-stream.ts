import type { VmmEvent } from '../core/ports.js';

const OPEN = 0x7b; // {
const CLOSE = 0x7d; // }
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * Cloud Hypervisor's event monitor output, parsed as it arrives. CH writes each event as
 * pretty-printed JSON followed by a blank line (event_monitor/src/lib.rs: to_string_pretty, then
 * "\n\n"): not one object per line, so objects are found by their braces, outside strings. Each
 * event comes with the absolute byte offset just past it, where a later reader resumes.
 */
export class ChEventStream {
  #buffer: Buffer = Buffer.alloc(0);
  /** The absolute offset of #buffer[0]. */
  #base: number;
  /** Scan state within #buffer, kept across pushes so each byte is looked at once. */
  #scanned = 0;
  #depth = 0;
  #inString = false;
  #escaped = false;
  #objectStart = -1;

  constructor(offset = 0) {
    this.#base = offset;
  }

  /** The offset up to which everything was consumed (complete events and the blanks between). */
  get offset(): number {
    return this.#base + (this.#objectStart >= 0 ? this.#objectStart : this.#scanned);
  }

  /**
   * Takes the next bytes; returns the events they complete. An object that is not an event
   * (bad JSON, no source or event) is returned in `malformed`, skipped past, never retried.
   */
  push(chunk: Buffer): { events: VmmEvent[]; malformed: string[] } {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const events: VmmEvent[] = [];
    const malformed: string[] = [];
    const buffer = this.#buffer;
    let consumed = 0;
    for (let i = this.#scanned; i < buffer.length; i++) {
      const byte = buffer[i]!;
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (byte === BACKSLASH) this.#escaped = true;
        else if (byte === QUOTE) this.#inString = false;
        continue;
      }
      if (this.#depth === 0) {
        if (byte === OPEN) {
          this.#objectStart = i;
          this.#depth = 1;
        } else {
          // Whitespace between events (or stray bytes, skipped alike).
          consumed = i + 1;
        }
        continue;
      }
      if (byte === QUOTE) this.#inString = true;
      else if (byte === OPEN) this.#depth++;
      else if (byte === CLOSE && --this.#depth === 0) {
        const text = buffer.toString('utf8', this.#objectStart, i + 1);
        const event = parseEvent(text, this.#base + i + 1);
        if (event) events.push(event);
        else malformed.push(text);
        this.#objectStart = -1;
        consumed = i + 1;
      }
    }
    // Keep only the unfinished object's bytes.
    const keepFrom = this.#objectStart >= 0 ? this.#objectStart : consumed;
    const scannedTo = buffer.length;
    this.#buffer = buffer.subarray(keepFrom);
    this.#base += keepFrom;
    this.#scanned = scannedTo - keepFrom;
    if (this.#objectStart >= 0) this.#objectStart -= keepFrom;
    return { events, malformed };
  }
}

function parseEvent(text: string, end: number): VmmEvent | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const { source, event, properties } = json as { source?: unknown; event?: unknown; properties?: unknown };
  if (typeof source !== 'string' || typeof event !== 'string') return undefined;
  const props: Record<string, string> = {};
  if (properties && typeof properties === 'object') {
    for (const [key, value] of Object.entries(properties)) if (typeof value === 'string') props[key] = value;
  }
  return { source, event, ...(Object.keys(props).length > 0 ? { properties: props } : {}), end };
}
