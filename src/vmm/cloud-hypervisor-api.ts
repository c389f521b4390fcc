import type { VmmApi } from '../core/ports.js';
import { ChClient } from './ch-client.js';
import { waitForVmmReady } from './socket-readiness.js';
import { isVmmApiError } from './vmm-api-error.js';
import { vmmFailure } from './vmm-failure.js';

/**
 * The supervisor's deadlines (ready timeout, stop, cancel) arrive as the AbortSignal; the
 * client's own timeouts are only a backstop far beyond any of them.
 */
const BACKSTOP_TIMEOUT_MS = 15 * 60_000;

/**
 * The VmmApi port over Cloud Hypervisor's REST API on its unix socket. Failures leave as domain
 * errors (vmm-failure.ts); an abort leaves as the signal's reason, which the core reads.
 */
export function cloudHypervisorApi(): VmmApi {
  const call = async <T>(signal: AbortSignal, action: string, work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw vmmFailure(error, action);
    }
  };
  return {
    waitReady: (socketPath, signal) =>
      call(signal, 'waiting for the VMM to answer', async () => {
        const ping = await waitForVmmReady(socketPath, { signal, timeoutMs: BACKSTOP_TIMEOUT_MS });
        return { version: ping.version };
      }),
    restore: (socketPath, restore, signal) =>
      call(signal, 'restoring the snapshot', () =>
        new ChClient(socketPath).restore(
          {
            sourceUrl: restore.sourceUrl,
            ...(restore.memoryRestoreMode ? { memoryRestoreMode: restore.memoryRestoreMode } : {}),
            resume: restore.resume,
            prefault: restore.prefault,
          },
          { timeoutMs: BACKSTOP_TIMEOUT_MS, signal },
        )),
    vmState: (socketPath, signal) =>
      call(signal, 'reading the VM state', async () => {
        try {
          return (await new ChClient(socketPath).info({ timeoutMs: BACKSTOP_TIMEOUT_MS, signal })).state;
        } catch (error) {
          // Cloud Hypervisor answers vm.info on a VMM without a VM with an error (500, or 404 in newer versions).
          if (isVmmApiError(error, 'http-status') && (error.status === 500 || error.status === 404)) return undefined;
          throw error;
        }
      }),
  };
}
