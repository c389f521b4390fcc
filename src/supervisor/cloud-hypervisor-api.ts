import { ChClient, waitForVmmReady } from '../vmm/index.js';
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
  };
}
