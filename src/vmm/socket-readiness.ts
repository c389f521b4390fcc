/**
 * Readiness of a freshly started VMM: `GET vmm.ping` answering 200. A socket file alone proves nothing (a
 * SIGKILLed VMM leaves one behind, and CH binds before it listens).
 */
import * as path from 'node:path';
import { ChClient } from './ch-client.js';
import { watchDirectoryEntry } from '../util/directory-watch.js';
import { isVmmApiError, VmmApiError } from './vmm-api-error.js';
import type { VmmPing } from './vmm-wire-format.js';
import { Wakeup } from '../util/wakeup.js';

/** The part of ChClient readiness needs; tests inject a spy. */
export type VmmPinger = Pick<ChClient, 'ping'>;

export interface WaitForVmmReadyOptions {
  /** Aborting rejects the wait with the signal's reason, e.g. when the supervisor sees the VMM exit. */
  signal: AbortSignal;
  /** Defaults to a ChClient on `socketPath`. */
  client?: VmmPinger;
  /** Overall deadline; defaults to DEFAULT_READY_TIMEOUT_MS. */
  timeoutMs?: number;
}

export const DEFAULT_READY_TIMEOUT_MS = 10_000;
/** Fallback polling for missed inotify events and for ECONNREFUSED between CH's bind and listen. */
const FIRST_RETRY_DELAY_MS = 1;
const MAX_RETRY_DELAY_MS = 32;

/**
 * Resolves with the first successful ping. Attempts run one at a time, right after the socket's name shows
 * up in its directory, else on a 1 ms..32 ms exponential backoff. Rejects with the signal's reason on abort,
 * with a `timeout` VmmApiError (cause: the last failed attempt) at the deadline, and at once with any failure
 * that retrying cannot fix (e.g. HTTP 404: whatever listens there is not CH).
 */
export async function waitForVmmReady(socketPath: string, options: WaitForVmmReadyOptions): Promise<VmmPing> {
  const { signal } = options;
  signal.throwIfAborted();
  const client = options.client ?? new ChClient(socketPath);
  const timeoutMs = options.timeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const startedAt = performance.now();

  // Ends in-flight pings and sleeps, whether the caller aborted, the deadline passed, or the wait finished.
  const stop = new AbortController();
  const deadlineReached = Symbol('deadline');
  const deadline = setTimeout(() => stop.abort(deadlineReached), timeoutMs);
  const onCallerAbort = () => stop.abort(signal.reason);
  signal.addEventListener('abort', onCallerAbort, { once: true });
  // Watch before the first attempt, so a socket created in between is not missed.
  const wakeup = new Wakeup();
  const stopWatching = watchDirectoryEntry(path.dirname(path.resolve(socketPath)), path.basename(socketPath), () =>
    wakeup.notify(),
  );

  let lastFailure: unknown;
  try {
    let delayMs = FIRST_RETRY_DELAY_MS;
    while (!stop.signal.aborted) {
      const remainingMs = Math.max(1, timeoutMs - (performance.now() - startedAt));
      try {
        return await client.ping({ timeoutMs: remainingMs, signal: stop.signal });
      } catch (error) {
        if (stop.signal.aborted) break;
        lastFailure = error;
        // The attempt had all the remaining time: this is the deadline, seen from the ping's side.
        if (isVmmApiError(error, 'timeout')) break;
        if (!isWorthRetrying(error)) throw error;
      }
      const woken = await wakeup.sleep(delayMs, stop.signal);
      delayMs = woken === 'event' ? FIRST_RETRY_DELAY_MS : Math.min(delayMs * 2, MAX_RETRY_DELAY_MS);
    }
    if (stop.signal.aborted && stop.signal.reason !== deadlineReached) throw stop.signal.reason;
    throw new VmmApiError({
      kind: 'timeout',
      endpoint: 'GET vmm.ping',
      socketPath,
      detail: `the VMM was not ready within ${timeoutMs} ms (${describeLastAttempt(lastFailure)})`,
      cause: lastFailure,
    });
  } finally {
    clearTimeout(deadline);
    signal.removeEventListener('abort', onCallerAbort);
    stopWatching();
    stop.abort();
  }
}

/** Failures a VMM that is still starting produces; anything else will not change by waiting. */
function isWorthRetrying(error: unknown): boolean {
  if (!isVmmApiError(error)) return false;
  switch (error.kind) {
    case 'socket-missing':
    case 'refused':
    case 'reset':
      return true;
    case 'http-status':
      return error.status === 503; // more than 10 connections: busy, not broken
    default:
      return false;
  }
}

function describeLastAttempt(failure: unknown): string {
  if (failure === undefined) return 'no attempt completed';
  // Drop the "<endpoint> on <socket> " prefix the timeout error's own message already carries.
  if (isVmmApiError(failure)) return `last attempt ${failure.message.slice(`${failure.endpoint} on ${failure.socketPath} `.length)}`;
  return `last attempt failed: ${failure instanceof Error ? failure.message : String(failure)}`;
}
