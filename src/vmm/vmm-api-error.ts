/**
 * The VMM client's own closed error type. It never leaves src/vmm as anything else; the supervisor maps
 * each kind to a domain error in one place. Kinds describe what happened on the wire, not what it means.
 */
export type VmmApiErrorKind =
  /** ENOENT/ENOTDIR on connect: no socket file at the path (VMM not started yet, or gone and cleaned up). */
  | 'socket-missing'
  /** The socket could not be connected although the path exists: nobody listening (stale socket, or bound but
   * not yet listening), backlog full (EAGAIN), or not permitted. The errno is in the message and the cause. */
  | 'refused'
  /** The connection closed or failed after it was established, before a complete response arrived. */
  | 'reset'
  /** No complete response within the call's timeoutMs. */
  | 'timeout'
  /** The caller's AbortSignal fired; `cause` is the signal's reason. */
  | 'aborted'
  /** The VMM answered with a non-2xx status; see `status`, `errorChain`, `body`. */
  | 'http-status'
  /** The response could not be parsed as HTTP, or its body not as what the endpoint promises. */
  | 'protocol';

export interface VmmApiErrorInit {
  kind: VmmApiErrorKind;
  /** Method and endpoint, e.g. `PUT vm.restore`. */
  endpoint: string;
  socketPath: string;
  /** What went wrong, for every kind but `http-status` (whose message is built from the status and body). */
  detail?: string;
  /** Whether the whole request reached the socket: after a reset or timeout the VMM may still act on it. */
  requestSent?: boolean;
  status?: number;
  body?: string;
  cause?: unknown;
}

/** Longest piece of a non-chain error body quoted in a message; the full body stays on `body`. */
const MAX_QUOTED_BODY_CHARS = 300;

export class VmmApiError extends Error {
  override readonly name = 'VmmApiError';
  readonly kind: VmmApiErrorKind;
  readonly endpoint: string;
  readonly socketPath: string;
  readonly requestSent: boolean;
  /** HTTP status, only for `http-status`. */
  readonly status: number | undefined;
  /** CH's error chain (v47+ sends a JSON array of strings, outermost first), only for `http-status`. */
  readonly errorChain: string[] | undefined;
  /** Raw response body text, only for `http-status`. */
  readonly body: string | undefined;

  constructor(init: VmmApiErrorInit) {
    const errorChain = init.kind === 'http-status' ? parseErrorChain(init.body ?? '') : undefined;
    super(describe(init, errorChain), init.cause === undefined ? undefined : { cause: init.cause });
    this.kind = init.kind;
    this.endpoint = init.endpoint;
    this.socketPath = init.socketPath;
    this.requestSent = init.requestSent ?? false;
    this.status = init.status;
    this.errorChain = errorChain;
    this.body = init.kind === 'http-status' ? (init.body ?? '') : undefined;
  }
}

export function isVmmApiError(error: unknown, kind?: VmmApiErrorKind): error is VmmApiError {
  return error instanceof VmmApiError && (kind === undefined || error.kind === kind);
}

/** CH's error bodies are a JSON array of strings (outermost error first); anything else is not a chain. */
export function parseErrorChain(body: string): string[] | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (!Array.isArray(parsed) || !parsed.every((entry): entry is string => typeof entry === 'string')) {
    return undefined;
  }
  return parsed;
}

function describe(init: VmmApiErrorInit, errorChain: string[] | undefined): string {
  const where = `${init.endpoint} on ${init.socketPath}`;
  if (init.kind !== 'http-status') return `${where} failed: ${init.detail ?? init.kind}`;
  return `${where} failed with HTTP ${init.status ?? '(no status)'}: ${summarizeBody(init.body ?? '', errorChain)}`;
}

function summarizeBody(body: string, errorChain: string[] | undefined): string {
  if (errorChain !== undefined) return errorChain.length > 0 ? errorChain.join(': ') : '(empty error chain)';
  const text = body.trim();
  if (text === '') return '(empty body)';
  return text.length > MAX_QUOTED_BODY_CHARS ? `${text.slice(0, MAX_QUOTED_BODY_CHARS)}…` : text;
}
