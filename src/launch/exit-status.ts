import { signalName } from './signals.js';

/** How a process ended, as its parent (the reaper) saw it. Exactly one of code and signal is set. */
export interface ExitStatus {
  readonly pid: number;
  readonly exitCode?: number;
  readonly signal?: string;
  readonly coreDumped: boolean;
  readonly exitedAt: Date;
  /** The end of what this run wrote to its log, as the reaper read it at the exit. */
  readonly logTail?: string;
}

/** How many of the log's last lines an exit carries. */
export const TAIL_LINES = 20;

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

/** The last `count` lines of `text`, without the final newline. */
export function lastLines(text: string, count: number): string {
  const lines = text.replace(/\n$/, '').split('\n');
  return lines.slice(-count).join('\n');
}

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

/** `exit code 1`, `signal SIGKILL`, `signal SIGSEGV (core dumped)`. */
export function describeExitStatus(status: Pick<ExitStatus, 'exitCode' | 'signal' | 'coreDumped'>): string {
  if (status.signal !== undefined) return `signal ${status.signal}${status.coreDumped ? ' (core dumped)' : ''}`;
  return `exit code ${status.exitCode}`;
}

function integer(value: string | undefined): number | undefined {
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
}
