import { ChClient, isVmmApiError, waitForVmmReady } from '../vmm/index.js';
import type { VmmApi } from './vmm-api.js';

/**
 * The supervisor's deadlines (ready timeout, stop, cancel) arrive as the AbortSignal; the
 * client's own timeouts are only a backstop far beyond any of them.
 */
const BACKSTOP_TIMEOUT_MS = 15 * 60_000;

/** VmmApi over Cloud Hypervisor's REST API on its unix socket. */
export function cloudHypervisorApi(): VmmApi {
  return {
    async waitReady(socketPath, signal) {
      const ping = await waitForVmmReady(socketPath, { signal, timeoutMs: BACKSTOP_TIMEOUT_MS });
      return { version: ping.version };
    },
    async restore(socketPath, restore, signal) {
      await new ChClient(socketPath).restore(
        {
          sourceUrl: restore.sourceUrl,
          ...(restore.memoryRestoreMode ? { memoryRestoreMode: restore.memoryRestoreMode } : {}),
          resume: restore.resume,
          prefault: restore.prefault,
        },
        { timeoutMs: BACKSTOP_TIMEOUT_MS, signal },
      );
    },
    async vmState(socketPath, signal) {
      try {
        return (await new ChClient(socketPath).info({ timeoutMs: BACKSTOP_TIMEOUT_MS, signal })).state;
      } catch (error) {
        // Cloud Hypervisor answers vm.info on a VMM without a VM with an error (500, or 404 in newer versions).
        if (isVmmApiError(error, 'http-status') && (error.status === 500 || error.status === 404)) return undefined;
        throw error;
      }
    },
  };
}
