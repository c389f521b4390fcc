/**
 * vmprocctl's exit codes. 1 and 2 mean the same thing for every command, so a script can tell
 * "vmprocctl could not do it" from "the VMM failed": `wait` reports a VMM that did not exit with
 * code 0 as 3, never as the VMM's own code (a VMM exiting 1 would read as a failed RPC).
 */
export const ExitCode = {
  /** Done; for `wait`, the VMM exited with code 0. */
  OK: 0,
  /** The call failed (the daemon answered with an error, or could not be reached). */
  RPC_FAILED: 1,
  /** Bad command line: unknown command or flag, missing or malformed argument. Nothing was sent. */
  USAGE: 2,
  /** `wait`: the VMM ended otherwise than with exit code 0 (non-zero code, signal, failed start, lost). */
  PROCESS_FAILED: 3,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** A command-line mistake, found before anything was sent to the daemon. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}
