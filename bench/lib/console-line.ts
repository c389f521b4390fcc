import type { Readable } from 'node:stream';
import type { VmProcessClient } from '../../src/client/vm-process-client.js';

/** The tiny guest's first line (native/tiny-guest/README.md): `tiny-guest: boot cmdline=...`. */
export const FIRST_GUEST_LINE = /tiny-guest: boot[^\n]*\n/;

/** No such line within the time allowed: the VMM printed no guest console (the stand-in, today). */
export class NoConsoleLineError extends Error {
  constructor(where: string, timeoutMs: number, seen: string) {
    super(`no guest console line on ${where} within ${timeoutMs} ms (it said ${JSON.stringify(seen.slice(-200))})`);
  }
}

/** Resolves with the first match of `pattern` in what `stream` says (a bare VMM's stdout: its serial console). */
export function lineOn(stream: Readable, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const done = (error: Error | undefined, line?: string) => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      // Keep draining: a VMM blocked on a full pipe would stall its VM.
      stream.resume();
      if (error) reject(error);
      else resolve(line!);
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const match = pattern.exec(text);
      if (match) done(undefined, match[0]);
    };
    const onEnd = () => done(new NoConsoleLineError('the VMM stdout (it closed)', timeoutMs, text));
    const timer = setTimeout(() => done(new NoConsoleLineError('the VMM stdout', timeoutMs, text)), timeoutMs);
    stream.on('data', onData);
    stream.once('end', onEnd);
  });
}

/** The same through the daemon: StreamLogs with follow, from the start of the VMM's log, until the match. */
export async function lineInLogs(client: VmProcessClient, sandboxId: string, pattern: RegExp, timeoutMs: number): Promise<string> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let text = '';
  try {
    for await (const chunk of client.streamLogs({ sandboxId, follow: true }, { signal: abort.signal })) {
      text += Buffer.from(chunk.data).toString('utf8');
      const match = pattern.exec(text);
      if (match) return match[0];
    }
  } catch (error) {
    if (!abort.signal.aborted) throw error;
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
  throw new NoConsoleLineError(`StreamLogs of ${sandboxId}`, timeoutMs, text);
}
