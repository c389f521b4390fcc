/** The VMM client package: talks to Cloud Hypervisor's API socket. Knows nothing of gRPC or the supervisor. */
export { ChClient, MAX_SOCKET_PATH_BYTES, type ChClientOptions } from './ch-client.js';
export type { ConnectToSocket, VmmCallOptions, VmmHttpMethod, VmmResponse } from './http-exchange.js';
export {
  DEFAULT_READY_TIMEOUT_MS,
  waitForVmmReady,
  type VmmPinger,
  type WaitForVmmReadyOptions,
} from './socket-readiness.js';
export { isVmmApiError, VmmApiError, type VmmApiErrorKind } from './vmm-api-error.js';
export {
  VM_STATES,
  type MemoryRestoreMode,
  type RestoreConfig,
  type VmInfo,
  type VmmPing,
  type VmState,
} from './vmm-wire-format.js';
