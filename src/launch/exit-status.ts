import { open } from 'node:fs/promises';
import type { ExitStatus } from '../core/domain.js';
import { signalName } from '../core/signals.js';
import { lastLines, TAIL_LINES } from '../logs/log-tail.js';

/**
 * Parses a reaper's status file: a line `pid=12 code=0 at_ms=...` or `pid=12 signal=9 core=0
 * at_ms=...`, then the end of the run's log (see native/vmprocd-reaper.c). Undefined when the
 * first line is not a complete status.
 */
export function parseReaperStatus(text: string): ExitStatus | undefined {
  const newline = text.indexOf('\n');
  const line = newline === -1 ? text : text.slice(0, newline);
  const status = parseStatusLine(line);
  if (!status || newline === -1) return status;
  return { ...status, logTail: lastLines(text.slice(newline + 1), TAIL_LINES) };
}

/**
 * Reads the status a reaper recorded; undefined if there is none (yet, or ever: a reaper killed
 * before it recorded).
 */
export async function readExitStatus(statusPath: string): Promise<ExitStatus | undefined> {
  let handle;
  try {
    handle = await open(statusPath, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  // One read of a file the reaper keeps under 5 KiB, instead of readFile's stat-then-read: this
  // is on the exit's way to every watcher. Closing need not hold it up.
  try {
    const buffer = Buffer.allocUnsafe(STATUS_FILE_MAX_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return parseReaperStatus(buffer.toString('utf8', 0, bytesRead));
  } finally {
    void handle.close().catch(() => undefined);
  }
}

/** A status line plus a 4 KiB log tail, with room to spare. */
const STATUS_FILE_MAX_BYTES = 8192;

function parseStatusLine(line: string): ExitStatus | undefined {
  const fields = new Map<string, string>();
  for (const pair of line.trim().split(' ')) {
    const eq = pair.indexOf('=');
    if (eq > 0) fields.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  const pid = integer(fields.get('pid'));
  const at = integer(fields.get('at_ms'));
  if (pid === undefined || at === undefined) return undefined;
  const exitedAt = new Date(at);
  const code = integer(fields.get('code'));
  if (code !== undefined) return { pid, exitCode: code, coreDumped: false, exitedAt };
  const signal = integer(fields.get('signal'));
  if (signal !== undefined) {
    return { pid, signal: signalName(signal), coreDumped: fields.get('core') === '1', exitedAt };
  }
  return undefined;
}

function integer(value: string | undefined): number | undefined {
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
}
