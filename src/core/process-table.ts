import { VmprocError } from '../errors.js';
import { isLive } from './lifecycle.js';
import type { SupervisedProcess } from './supervised-process.js';

/**
 * Every process the supervisor knows, by sandbox ID, and the live ones by socket path. Holds the
 * invariants of a reservation: at most one live process per sandbox ID and per socket path.
 */
export class ProcessTable {
  readonly #records = new Map<string, SupervisedProcess>();
  /** Live processes by socket path: a socket belongs to one live process at a time. */
  readonly #socketOwners = new Map<string, SupervisedProcess>();

  get(sandboxId: string): SupervisedProcess | undefined {
    return this.#records.get(sandboxId);
  }

  /** The record of `sandboxId`, or `not-found`. */
  find(sandboxId: string): SupervisedProcess {
    const record = this.#records.get(sandboxId);
    if (!record) throw new VmprocError('not-found', `no process for sandbox ${JSON.stringify(sandboxId)}`);
    return record;
  }

  records(): IterableIterator<SupervisedProcess> {
    return this.#records.values();
  }

  /**
   * Takes the sandbox ID and socket of `record`, synchronously, so that two concurrent starts of
   * one ID cannot both get them. Returns the exited record it replaces, if any.
   */
  reserve(record: SupervisedProcess): SupervisedProcess | undefined {
    const { sandboxId, socketPath } = record.spec;
    const previous = this.#records.get(sandboxId);
    if (previous && isLive(previous.phase)) {
      throw new VmprocError(
        'already-exists',
        `sandbox ${sandboxId} is already ${previous.state} (pid ${previous.handle?.identity.pid ?? 'not yet known'}); stop it first`,
      );
    }
    const socketOwner = this.#socketOwners.get(socketPath);
    if (socketOwner) {
      throw new VmprocError(
        'failed-precondition',
        `socket_path ${socketPath} belongs to sandbox ${socketOwner.sandboxId}, which is ${socketOwner.state}`,
      );
    }
    this.#records.set(sandboxId, record);
    this.#socketOwners.set(socketPath, record);
    return previous;
  }

  /** Undoes reserve() for a launch that produced no process: the previous record comes back. */
  unreserve(record: SupervisedProcess, previous: SupervisedProcess | undefined): void {
    this.#socketOwners.delete(record.spec.socketPath);
    if (previous) this.#records.set(record.sandboxId, previous);
    else this.#records.delete(record.sandboxId);
  }

  /** A record a previous daemon left: live ones own their socket again. */
  restore(record: SupervisedProcess, live: boolean): void {
    this.#records.set(record.sandboxId, record);
    if (live) this.#socketOwners.set(record.spec.socketPath, record);
  }

  /** The live process that has `socketPath`, if any. */
  socketOwner(socketPath: string): SupervisedProcess | undefined {
    return this.#socketOwners.get(socketPath);
  }

  /** The process has exited: its socket path may be taken again. */
  releaseSocket(record: SupervisedProcess): void {
    if (this.#socketOwners.get(record.spec.socketPath) === record) this.#socketOwners.delete(record.spec.socketPath);
  }

  /** Forgets a record entirely (retention, or a launch that never produced a process). */
  forget(record: SupervisedProcess): void {
    if (this.#records.get(record.sandboxId) === record) this.#records.delete(record.sandboxId);
    this.releaseSocket(record);
  }
}
