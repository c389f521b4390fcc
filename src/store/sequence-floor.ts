import { open, readFile, rename, unlink } from 'node:fs/promises';
import { VmprocError } from '../errors.js';

/**
 * The last exit sequence published while the journal could not record it (a full state disk),
 * kept in a small file on another file system (the run dir, a tmpfs in production), so that a
 * restarted daemon numbers on from it and never hands a watcher a sequence it has already seen:
 * numbering from the journal alone would reuse the sequences of exits it lacks.
 *
 * The file holds one decimal number and a newline, written atomically (temp file + rename). It is
 * removed once a later exit is journalled: the journal is the record again. Operations run one at
 * a time, in the order they were asked for, so the file always ends as the last decision left it.
 */
export class SequenceFloor {
  readonly path: string;
  /** What the file holds once the queued operations are done; undefined: no file. */
  #value: number | undefined;
  #queue: Promise<void> = Promise.resolve();

  private constructor(path: string, value: number | undefined) {
    this.path = path;
    this.#value = value;
  }

  /** Reads the floor a previous daemon left, if any. Throws `failed-precondition` on a damaged file. */
  static async open(path: string): Promise<SequenceFloor> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new SequenceFloor(path, undefined);
      throw error;
    }
    if (!/^[1-9]\d{0,15}\n$/.test(text)) {
      throw new VmprocError(
        'failed-precondition',
        `the exit sequence floor ${path} holds ${JSON.stringify(text.slice(0, 40))}, not a sequence number. It is written ` +
          'when an exit could not be journalled; remove it to start anyway (exit sequences watchers saw may then repeat)',
      );
    }
    return new SequenceFloor(path, Number(text));
  }

  /** The sequence the next daemon must number after, if the journal lags behind it. */
  get value(): number | undefined {
    return this.#value;
  }

  /**
   * `sequence` was published but not journalled: resolves once the file says at least that. Each
   * call writes (rarely: only while the journal fails), so each learns whether its own write worked.
   */
  raise(sequence: number): Promise<void> {
    const floor = Math.max(this.#value ?? 0, sequence);
    this.#value = floor;
    return this.#enqueue(() => writeAtomically(this.path, `${floor}\n`));
  }

  /** `sequence` is in the journal: a floor at or below it says nothing the journal does not. */
  journalled(sequence: number): Promise<void> {
    if (this.#value === undefined || this.#value > sequence) return this.#queue;
    this.#value = undefined;
    return this.#enqueue(() => unlink(this.path).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    }));
  }

  /** Resolves once every operation asked for so far is done (whether it worked or not). */
  settled(): Promise<void> {
    return this.#queue;
  }

  #enqueue(operation: () => Promise<void>): Promise<void> {
    const done = this.#queue.then(operation);
    this.#queue = done.catch(() => undefined);
    return done;
  }
}

async function writeAtomically(path: string, content: string): Promise<void> {
  const tmp = `${path}.tmp`;
  const handle = await open(tmp, 'w', 0o600);
  try {
    await handle.writeFile(content);
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
}
