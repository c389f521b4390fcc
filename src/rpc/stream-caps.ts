import { ServerInterceptingCall, type ServerInterceptor } from '@grpc/grpc-js';
import { VmprocError } from '../errors.js';

/**
 * How many long-lived streams (WatchExits, StreamLogs) may be open at once, over the whole daemon
 * and over one client connection: each holds a subscription, buffers and a file descriptor or two,
 * so an unbounded number is a way to exhaust the daemon. Beyond a cap the call fails with
 * RESOURCE_EXHAUSTED, saying which cap and how to get under it.
 */
export interface StreamLimits {
  readonly total: number;
  readonly perConnection: number;
}

export const DEFAULT_WATCH_LIMITS: StreamLimits = { total: 1024, perConnection: 128 };
export const DEFAULT_LOG_STREAM_LIMITS: StreamLimits = { total: 256, perConnection: 32 };

/** The metadata key the connection interceptor stamps on every call (a client cannot forge it: it is overwritten). */
export const CONNECTION_KEY = 'x-vmprocd-connection';

/** The connection a call came on, as connectionInterceptor stamped it. */
export function connectionOf(call: { readonly metadata?: { get(key: string): unknown[] } }): string {
  return String(call.metadata?.get(CONNECTION_KEY)[0] ?? 'unknown');
}

export class StreamCaps {
  readonly #what: string;
  readonly #limits: StreamLimits;
  #open = 0;
  readonly #byConnection = new Map<string, number>();

  constructor(what: string, limits: StreamLimits) {
    this.#what = what;
    this.#limits = limits;
  }

  get open(): number {
    return this.#open;
  }

  /** Takes a slot for a stream on `connection`; returns the function that gives it back (once). */
  acquire(connection: string): () => void {
    const mine = this.#byConnection.get(connection) ?? 0;
    if (this.#open >= this.#limits.total) {
      throw new VmprocError('resource-exhausted', `the daemon already serves ${this.#open} ${this.#what}, its maximum; close some and retry`);
    }
    if (mine >= this.#limits.perConnection) {
      throw new VmprocError(
        'resource-exhausted',
        `this connection already has ${mine} ${this.#what} open, the most one connection may have (${this.#limits.perConnection}); close some, or spread them over connections`,
      );
    }
    this.#open++;
    this.#byConnection.set(connection, mine + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#open--;
      const left = (this.#byConnection.get(connection) ?? 1) - 1;
      if (left === 0) this.#byConnection.delete(connection);
      else this.#byConnection.set(connection, left);
    };
  }
}

/**
 * A server interceptor that stamps each call with an ID of the HTTP/2 connection it came on, so
 * handlers can count per connection (grpc-js hands handlers no connection). The session is the
 * grpc-js internal `stream.session` of the innermost call; were it ever missing, the peer address
 * stands in (unique per TCP connection, shared by all unix socket connections).
 */
export function connectionInterceptor(): ServerInterceptor {
  const ids = new WeakMap<object, string>();
  let next = 0;
  return (_method, call) => {
    const session = (call as unknown as { stream?: { session?: object } }).stream?.session;
    let id: string;
    if (session) {
      id = ids.get(session) ?? String(++next);
      ids.set(session, id);
    } else {
      id = `peer:${call.getPeer()}`;
    }
    return new ServerInterceptingCall(call, {
      start: (start) =>
        start({
          onReceiveMetadata: (metadata, pass) => {
            metadata.set(CONNECTION_KEY, id);
            pass(metadata);
          },
        }),
    });
  };
}
