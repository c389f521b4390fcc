import { describe, expect, it } from '@jest/globals';
import { ChEventStream } from '../../../src/vmm/ch-event-stream.js';

/** Exactly as Cloud Hypervisor writes an event: serde_json's pretty print, then a blank line. */
function chEvent(secs: number, source: string, event: string, properties: Record<string, string> | null = null): string {
  return `${JSON.stringify({ timestamp: { secs, nanos: 1234 }, source, event, properties }, null, 2)}\n\n`;
}

describe('ChEventStream', () => {
  it('parses pretty-printed events separated by blank lines, with the offset just past each', () => {
    const text = chEvent(0, 'vmm', 'starting') + chEvent(1, 'vm', 'booted') + chEvent(2, 'guest', 'panic', { event: 'panicked' });
    const { events, malformed } = new ChEventStream().push(Buffer.from(text));
    expect(malformed).toEqual([]);
    expect(events.map(({ source, event, properties }) => ({ source, event, properties }))).toEqual([
      { source: 'vmm', event: 'starting', properties: undefined },
      { source: 'vm', event: 'booted', properties: undefined },
      { source: 'guest', event: 'panic', properties: { event: 'panicked' } },
    ]);
    const first = chEvent(0, 'vmm', 'starting');
    expect(events[0]!.end).toBe(Buffer.byteLength(first) - 2);
    expect(text.slice(events[1]!.end - 1, events[1]!.end)).toBe('}');
  });

  it('gives the same events whatever the chunking, byte by byte included', () => {
    const text = Buffer.from(chEvent(0, 'vm', 'paused') + chEvent(1, 'vm', 'resumed', { note: 'a } brace and a \\" quote { in a string' }));
    const whole = new ChEventStream().push(text).events;
    const stream = new ChEventStream();
    const pieces = [];
    for (let i = 0; i < text.length; i++) pieces.push(...stream.push(text.subarray(i, i + 1)).events);
    expect(pieces).toEqual(whole);
    expect(whole[1]!.properties).toEqual({ note: 'a } brace and a \\" quote { in a string' });
  });

  it('resumes at an offset: the offsets it reports are absolute', () => {
    const text = chEvent(0, 'vm', 'paused') + chEvent(1, 'vm', 'resumed');
    const all = new ChEventStream().push(Buffer.from(text)).events;
    const from = all[0]!.end;
    const resumed = new ChEventStream(from).push(Buffer.from(text).subarray(from)).events;
    expect(resumed).toEqual([all[1]]);
  });

  it('keeps an unfinished event for later, and reports its start as the offset to resume from', () => {
    const event = Buffer.from(chEvent(0, 'vm', 'paused'));
    const stream = new ChEventStream(100);
    expect(stream.push(event.subarray(0, 10)).events).toEqual([]);
    expect(stream.offset).toBe(100);
    expect(stream.push(event.subarray(10)).events).toHaveLength(1);
    expect(stream.offset).toBe(100 + event.length);
  });

  it('skips an object that is not an event, once, and goes on', () => {
    const text = '{"source": 1}\n\n{not json}\n\n' + chEvent(0, 'vm', 'booted');
    const { events, malformed } = new ChEventStream().push(Buffer.from(text));
    expect(malformed).toEqual(['{"source": 1}', '{not json}']);
    expect(events.map((e) => e.event)).toEqual(['booted']);
  });
});
