import type { RestoreSpec } from './process-types.js';

/**
 * What the supervisor needs from a VMM's API, as a port: the real one talks HTTP over the
 * VMM's unix socket (src/vmm), tests can pass a fake.
 */
export interface VmmApi {
  /** Resolves once `GET /api/v1/vmm.ping` answers; rejects with the signal's reason on abort. */
  waitReady(socketPath: string, signal: AbortSignal): Promise<{ readonly version: string }>;
  /** `PUT /api/v1/vm.restore`; rejects with the VMM's error text on failure. */
  restore(socketPath: string, restore: RestoreSpec, signal: AbortSignal): Promise<void>;
  /** The VM's state from `GET /api/v1/vm.info`, or undefined when the VMM holds no VM. */
  vmState(socketPath: string, signal: AbortSignal): Promise<string | undefined>;
}
