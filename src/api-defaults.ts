/**
 * The daemon's defaults that its clients must know too (proto/vmprocess/v1/vmprocess.proto states
 * them): a client's default deadline leaves room for what the daemon may legitimately take.
 * One module, imported by both, so they cannot drift apart.
 */

/** StartProcess's ready_timeout when the request gives none. */
export const DEFAULT_READY_TIMEOUT_MS = 5_000;

/** StopProcess's grace_period between SIGTERM and SIGKILL when the request gives none. */
export const DEFAULT_STOP_GRACE_MS = 10_000;

/** How long a process may survive SIGKILL before a stop (or a failed start) reports it as stuck. */
export const KILL_BACKSTOP_MS = 5_000;

/** The longest ready_timeout a StartProcess may ask for. */
export const MAX_READY_TIMEOUT_MS = 10 * 60_000;

/** The longest grace_period a StopProcess may ask for: an hour is longer than any VM needs to shut down. */
export const MAX_STOP_GRACE_MS = 60 * 60_000;

/** How long the daemon lets a VMM write a snapshot (all of guest memory) before it gives up. */
export const SNAPSHOT_ALLOWANCE_MS = 10 * 60_000;
