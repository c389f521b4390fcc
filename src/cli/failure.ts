import { status } from '@grpc/grpc-js';
import { ExitHistoryGapError, isRpcError, statusName } from '../client/rpc-error.js';
import { ExitCode, UsageError } from './exit-codes.js';

/** What the failing command was doing, for a hint that names the next step. */
export interface FailureContext {
  readonly command: string;
  readonly address: string;
  readonly sandboxId?: string;
  /** Whether TLS flags were given. */
  readonly tls?: boolean;
}

/** The message (to stderr) and exit code for any error a command threw. */
export function describeFailure(error: unknown, context: FailureContext): { text: string; exitCode: ExitCode } {
  if (error instanceof UsageError) {
    const help = context.command ? `vmprocctl ${context.command} --help` : 'vmprocctl --help';
    return { text: `vmprocctl: ${error.message}\n(see: ${help})\n`, exitCode: ExitCode.USAGE };
  }
  if (isRpcError(error)) {
    const hint = hintFor(error.code, error, context);
    const details = rpcDetails(error);
    return { text: `vmprocctl: ${statusName(error.code)}: ${details}\n${hint ? `hint: ${hint}\n` : ''}`, exitCode: ExitCode.RPC_FAILED };
  }
  const message = error instanceof Error ? error.message : String(error);
  return { text: `vmprocctl: ${message}\n`, exitCode: ExitCode.RPC_FAILED };
}

/** The server's message; grpc-js appends an empty "Resolution note:" to connection failures. */
export function rpcDetails(error: { details: string; message: string }): string {
  return (error.details || error.message).replace(/\s*Resolution note:\s*$/, '');
}

function hintFor(code: number, error: { details: string }, context: FailureContext): string | undefined {
  const id = context.sandboxId ?? 'SANDBOX';
  switch (code) {
    case status.UNAVAILABLE:
      return context.tls
        ? `is vmprocd running, with TLS? check --address (now ${context.address}), and that --tls-ca and --tls-server-name match its certificate`
        : `is vmprocd running? check --address (now ${context.address}) or VMPROCD_ADDRESS, and that you may open the socket (root)`;
    case status.NOT_FOUND:
      return 'list sandboxes with: vmprocctl list';
    case status.ALREADY_EXISTS:
      return `a process with this sandbox ID is live: stop it first (vmprocctl stop ${id}) or pick another ID`;
    case status.INVALID_ARGUMENT:
      return context.command === 'signal'
        ? 'give a signal name such as TERM, KILL, USR1 or SIGUSR1 (see kill -l)'
        : `fix the request as the message says; see: vmprocctl ${context.command} --help`;
    case status.FAILED_PRECONDITION:
      if (context.command === 'start') {
        return 'check that the kernel and rootfs files and the network namespace exist (ip netns list); a VMM that exited early left its stderr in the message';
      }
      return `the process has already exited; see: vmprocctl get ${id}`;
    case status.DEADLINE_EXCEEDED:
      if (context.command === 'start' && !/deadline exceeded/i.test(error.details)) {
        return 'the VMM was not ready in time: raise --ready-timeout, or look at its log (vmprocctl logs ' + id + ')';
      }
      if (context.command === 'wait') return 'the process is still running; wait longer with --timeout, or without it';
      return 'no answer within --timeout; raise it, e.g. --timeout 2m';
    case status.CANCELLED:
      return 'the call was cancelled before it finished; run it again';
    case status.ABORTED:
      return `a stop arrived while the process was starting; see: vmprocctl get ${id}`;
    case status.OUT_OF_RANGE:
      return error instanceof ExitHistoryGapError || context.command === 'watch'
        ? 'the daemon no longer keeps exits that far back: take a fresh snapshot with `vmprocctl list --json` and watch again with --after set to its exitSequence'
        : undefined;
    case status.RESOURCE_EXHAUSTED:
      return 'the daemon cut this watcher off because it fell too far behind; run it again';
    case status.UNAUTHENTICATED:
    case status.PERMISSION_DENIED:
      return 'check the TLS flags: --tls-ca, --tls-cert, --tls-key (and --tls-server-name)';
    case status.UNIMPLEMENTED:
      return context.command === 'logs'
        ? `this vmprocd is older than vmprocctl and has no StreamLogs; until it is upgraded, the VMM's log file is at the "Log:" path of: vmprocctl get ${id}`
        : 'the daemon does not know this call: upgrade vmprocd';
    case status.INTERNAL:
    case status.UNKNOWN:
      return "the daemon failed: look at its log (e.g. journalctl -u vmprocd)";
    default:
      return undefined;
  }
}
