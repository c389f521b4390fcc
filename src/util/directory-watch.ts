/**
 * One shared fs.watch (inotify) per directory, reference-counted by the waiters in it and dispatching events
 * by file name: hundreds of VMMs starting in one socket directory cost one watcher and O(1) work per event.
 * A watcher that cannot be created, or fails, just stops delivering events: waiters must also poll.
 */
import { watch, type FSWatcher } from 'node:fs';
import * as path from 'node:path';

export type DirectoryEntryListener = () => void;

interface SharedDirectoryWatch {
  /** Undefined when fs.watch failed (e.g. the directory does not exist yet). */
  watcher: FSWatcher | undefined;
  listenersByName: Map<string, Set<DirectoryEntryListener>>;
  listenerCount: number;
  /** Told once the watch has stopped delivering events for good. */
  lostListeners: Set<() => void>;
}

const watchesByDirectory = new Map<string, SharedDirectoryWatch>();

/**
 * Calls `onEvent` whenever inotify reports something about `name` inside `directory` (created, renamed,
 * removed or changed), or when it cannot say which entry changed. `onLost` is called (once, possibly at
 * once) when the directory cannot be watched or its watch failed: no event will come any more, and a waiter
 * that relied on them must poll. Returns the unsubscribe function; the directory's watcher closes when its
 * last listener unsubscribes.
 */
export function watchDirectoryEntry(directory: string, name: string, onEvent: DirectoryEntryListener, onLost?: () => void): () => void {
  const key = path.resolve(directory);
  const shared = watchesByDirectory.get(key) ?? openSharedWatch(key);
  if (onLost) {
    if (shared.watcher === undefined) queueMicrotask(onLost);
    else shared.lostListeners.add(onLost);
  }
  let listeners = shared.listenersByName.get(name);
  if (listeners === undefined) {
    listeners = new Set();
    shared.listenersByName.set(name, listeners);
  }
  // A fresh function per subscription, so the same callback may subscribe twice and unsubscribe independently.
  const listener: DirectoryEntryListener = () => onEvent();
  listeners.add(listener);
  shared.listenerCount += 1;

  let subscribed = true;
  return () => {
    if (!subscribed) return;
    subscribed = false;
    listeners.delete(listener);
    if (onLost) shared.lostListeners.delete(onLost);
    if (listeners.size === 0) shared.listenersByName.delete(name);
    shared.listenerCount -= 1;
    if (shared.listenerCount === 0) {
      shared.watcher?.close();
      watchesByDirectory.delete(key);
    }
  };
}

/** Test hook: how many fs.watch handles are open, and for which directories. */
export function openDirectoryWatches(): { directory: string; listeners: number }[] {
  return [...watchesByDirectory]
    .filter(([, shared]) => shared.watcher !== undefined)
    .map(([directory, shared]) => ({ directory, listeners: shared.listenerCount }));
}

function openSharedWatch(directory: string): SharedDirectoryWatch {
  const shared: SharedDirectoryWatch = { watcher: undefined, listenersByName: new Map(), listenerCount: 0, lostListeners: new Set() };
  watchesByDirectory.set(directory, shared);
  try {
    // Not persistent: a watch must never keep the daemon alive; waiters hold their own deadline timers.
    shared.watcher = watch(directory, { persistent: false }, (_event, fileName) => dispatch(shared, fileName));
  } catch {
    return shared;
  }
  shared.watcher.on('error', () => {
    shared.watcher?.close();
    shared.watcher = undefined;
    // Whatever happened to the directory, every waiter should look again now rather than at its next poll.
    dispatch(shared, null);
    const lost = [...shared.lostListeners];
    shared.lostListeners.clear();
    for (const listener of lost) listener();
  });
  return shared;
}

function dispatch(shared: SharedDirectoryWatch, fileName: string | null): void {
  const targets =
    fileName === null
      ? [...shared.listenersByName.values()].flatMap((listeners) => [...listeners])
      : [...(shared.listenersByName.get(fileName) ?? [])];
  for (const listener of targets) listener();
}
