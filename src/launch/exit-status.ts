import { signalName } from './signals.js';

/** How a process ended, as its parent (the reaper) saw it. Exactly one of code and signal is set. */
export interface ExitStatus {
  readonly pid: number;
  readonly exitCode?: number;
  readonly signal?: string;
  readonly coreDumped: boolean;
  readonly exitedAt: Date;
}

/**
 * Parses the reaper's status line: `pid=12 code=0 at_ms=...` or `pid=12 signal=9 core=0 at_ms=...`
 * (see native/vmprocd-reaper.c). Undefined when the line is not a complete status.
 */
export function parseReaperStatus(line: string): ExitStatus | undefined {
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
