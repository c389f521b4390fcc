/**
 * vmprocd's public surface: the typed client of vmprocess.v1.VmProcessService, its helpers, and
 * the generated messages, enums and schemas a caller needs (schemas for `create`, `toJson`).
 * Nothing else in the package is a stable API.
 */
export {
  DEFAULT_TIMEOUT_MS,
  type Init,
  type RpcOptions,
  type StreamOptions,
  VmProcessClient,
  type VmProcessClientOptions,
} from './client/vm-process-client.js';
export {
  type ExitWatchSource,
  type ReconnectEvent,
  ReconnectingExitWatch,
  type ReconnectingWatchOptions,
} from './client/exit-watch.js';
export type { BackoffOptions } from './client/backoff.js';
export { ExitHistoryGapError, isRpcError, type RpcError, Status, statusName } from './client/rpc-error.js';
export { tlsCredentials, type TlsOptions } from './client/tls.js';

export {
  ExitReason,
  ExitReasonSchema,
  file_vmprocess_v1_vmprocess,
  type GetProcessRequest,
  GetProcessRequestSchema,
  type GetProcessResponse,
  GetProcessResponseSchema,
  LaunchMode,
  LaunchModeSchema,
  type ListProcessesRequest,
  ListProcessesRequestSchema,
  type ListProcessesResponse,
  ListProcessesResponseSchema,
  MemoryRestoreMode,
  MemoryRestoreModeSchema,
  type ProcessExit,
  ProcessExitSchema,
  type ProcessInfo,
  ProcessInfoSchema,
  ProcessState,
  ProcessStateSchema,
  type RestoreConfig,
  RestoreConfigSchema,
  type SignalProcessRequest,
  SignalProcessRequestSchema,
  type SignalProcessResponse,
  SignalProcessResponseSchema,
  type StartProcessRequest,
  StartProcessRequestSchema,
  type StartProcessResponse,
  StartProcessResponseSchema,
  type StopProcessRequest,
  StopProcessRequestSchema,
  type StopProcessResponse,
  StopProcessResponseSchema,
  type StreamLogsRequest,
  StreamLogsRequestSchema,
  type StreamLogsResponse,
  StreamLogsResponseSchema,
  VmProcessService,
  type WaitProcessRequest,
  WaitProcessRequestSchema,
  type WaitProcessResponse,
  WaitProcessResponseSchema,
  type WatchExitsRequest,
  WatchExitsRequestSchema,
} from '../gen/vmprocess/v1/vmprocess_pb.js';
