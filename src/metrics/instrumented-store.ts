import { performance } from 'node:perf_hooks';
import type { StateStore } from '../core/ports.js';

/** The journal record each store write appends (see src/store/state-store.ts). */
export type StoreOperation = 'launch' | 'spawn' | 'ready' | 'stop' | 'vm' | 'signal' | 'start_failure' | 'exit' | 'event' | 'abandon' | 'boot';

export interface StoreObserver {
  /** One store write settled after `seconds` (as its caller waits for it: written, and synced if the mode asks). */
  storeWrite(operation: StoreOperation, seconds: number, ok: boolean): void;
}

/**
 * The same store, timing every write as its caller sees it. A decorator, so the store itself
 * stays free of metrics; a launch is timed to `durable` (the moment a start may report ready).
 */
export function instrumentStore(store: StateStore, observer: StoreObserver): StateStore {
  const timed = <T>(operation: StoreOperation, write: Promise<T>, startedAt = performance.now()): Promise<T> => {
    write.then(
      () => observer.storeWrite(operation, (performance.now() - startedAt) / 1000, true),
      () => observer.storeWrite(operation, (performance.now() - startedAt) / 1000, false),
    );
    return write;
  };
  return {
    launching(sandboxId, launch) {
      const startedAt = performance.now();
      const appended = store.launching(sandboxId, launch);
      timed('launch', appended.durable, startedAt);
      return appended;
    },
    spawned: (sandboxId, identity, logOffset) => timed('spawn', store.spawned(sandboxId, identity, logOffset)),
    ready: (sandboxId, readyAt, vmmVersion, socketFiles) => timed('ready', store.ready(sandboxId, readyAt, vmmVersion, socketFiles)),
    stopping: (sandboxId, killAt, snapshotUrl) => timed('stop', store.stopping(sandboxId, killAt, snapshotUrl)),
    vmState: (sandboxId, state) => timed('vm', store.vmState(sandboxId, state)),
    signalled: (sandboxId, signal) => timed('signal', store.signalled(sandboxId, signal)),
    startFailed: (sandboxId, failure) => timed('start_failure', store.startFailed(sandboxId, failure)),
    exited: (event) => timed('exit', store.exited(event)),
    event: (event, monitorOffset) => timed('event', store.event(event, monitorOffset)),
    abandoned: (sandboxId) => timed('abandon', store.abandoned(sandboxId)),
    booted: (bootId) => timed('boot', store.booted(bootId)),
    close: () => store.close(),
  };
}
