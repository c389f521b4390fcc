import {
  GetProcessResponseSchema,
  LaunchMode,
  ListProcessesResponseSchema,
  type ProcessExit,
  type ProcessInfo,
  SignalProcessResponseSchema,
  StartProcessResponseSchema,
  StopProcessResponseSchema,
  VmState,
  WaitProcessResponseSchema,
} from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import type { VmProcessClient } from '../client/vm-process-client.js';
import { durationOf, formatAge, parseDuration } from './durations.js';
import { ExitCode, UsageError } from './exit-codes.js';
import { exitedCleanly, exitResult, processDetails, processTable, reasonName, stateName } from './format.js';
import { absolute, parseLabels, parseRestoreMode, parseStates } from './options.js';
import type { Output } from './output.js';
import { type VmFlags, vmConfigOf, vmStateName } from './vm-commands.js';

export interface StartFlags extends VmFlags {
  readonly mode?: 'boot' | 'restore';
  readonly kernel?: string;
  readonly rootfs: string;
  readonly netns: string;
  readonly socket?: string;
  readonly sandboxDir?: string;
  readonly readyTimeout?: string;
  readonly restoreSource?: string;
  readonly restoreMode?: string;
  readonly resume?: boolean;
  readonly prefault?: boolean;
  readonly label?: string[];
}

/** The StartProcess request of `vmprocctl start`; every mistake the flags alone show is a UsageError. */
export function startRequest(sandboxId: string, flags: StartFlags) {
  const restoreFlags = flags.restoreMode !== undefined || flags.resume || flags.prefault;
  const mode = flags.mode ?? (flags.restoreSource !== undefined ? 'restore' : 'boot');
  if (mode === 'boot') {
    if (flags.restoreSource !== undefined || restoreFlags) throw new UsageError('--restore-* flags, --resume and --prefault need --mode restore');
    if (flags.kernel === undefined) throw new UsageError('boot mode needs --kernel PATH');
  } else {
    if (flags.kernel !== undefined) throw new UsageError('--kernel is for boot mode only: a restore takes the kernel from the snapshot');
    if (restoreFlags && flags.restoreSource === undefined) throw new UsageError('--restore-mode, --resume and --prefault need --restore-source file:///DIR');
  }
  return {
    sandboxId,
    mode: mode === 'boot' ? LaunchMode.BOOT : LaunchMode.RESTORE,
    kernelPath: absolute(flags.kernel) ?? '',
    rootfsPath: absolute(flags.rootfs)!,
    networkNamespace: flags.netns,
    ...(flags.socket !== undefined ? { socketPath: absolute(flags.socket)! } : {}),
    ...(flags.sandboxDir !== undefined ? { sandboxDir: absolute(flags.sandboxDir)! } : {}),
    ...(flags.readyTimeout !== undefined ? { readyTimeout: durationOf(parseDuration('--ready-timeout', flags.readyTimeout)) } : {}),
    ...(flags.restoreSource !== undefined
      ? {
          restore: {
            sourceUrl: flags.restoreSource,
            memoryRestoreMode: parseRestoreMode(flags.restoreMode),
            resume: flags.resume ?? false,
            prefault: flags.prefault ?? false,
          },
        }
      : {}),
    labels: parseLabels(flags.label),
    ...vmField(flags, mode),
  };
}

function vmField(flags: VmFlags, mode: 'boot' | 'restore') {
  const vm = vmConfigOf(flags, mode);
  return vm ? { vm } : {};
}

export async function startCommand(client: VmProcessClient, out: Output, sandboxId: string, flags: StartFlags): Promise<ExitCode> {
  const request = startRequest(sandboxId, flags);
  const response = await client.startProcess(request);
  if (out.json) return done(out.message(StartProcessResponseSchema, response));
  const p = response.process!;
  const readyIn = p.readyAt && p.startedAt ? `, ready in ${formatAge(timestampDate(p.readyAt).getTime() - timestampDate(p.startedAt).getTime())}` : '';
  const vm = p.vmState === VmState.NOT_CREATED ? '' : `, VM ${vmStateName(p.vmState)}`;
  await out.write(`started ${p.sandboxId}: pid ${p.pid}${p.vmmVersion ? `, vmm ${p.vmmVersion}` : ''}${vm}${readyIn}\n`);
  return ExitCode.OK;
}

export async function stopCommand(client: VmProcessClient, out: Output, sandboxId: string, flags: { grace?: string }): Promise<ExitCode> {
  const gracePeriod = flags.grace !== undefined ? durationOf(parseDuration('--grace', flags.grace)) : undefined;
  const response = await client.stopProcess({ sandboxId, ...(gracePeriod ? { gracePeriod } : {}) });
  if (out.json) return done(out.message(StopProcessResponseSchema, response));
  await out.write(`${exitSummary(response.process!)}\n`);
  return ExitCode.OK;
}

export async function signalCommand(client: VmProcessClient, out: Output, sandboxId: string, signal: string): Promise<ExitCode> {
  const response = await client.signalProcess({ sandboxId, signal });
  if (out.json) return done(out.message(SignalProcessResponseSchema, response));
  const name = signal.toUpperCase().startsWith('SIG') ? signal.toUpperCase() : `SIG${signal.toUpperCase()}`;
  await out.write(`sent ${name} to ${sandboxId} (pid ${response.process!.pid})\n`);
  return ExitCode.OK;
}

export async function getCommand(client: VmProcessClient, out: Output, sandboxId: string): Promise<ExitCode> {
  const response = await client.getProcess({ sandboxId });
  if (out.json) return done(out.message(GetProcessResponseSchema, response));
  await out.write(processDetails(response.process!));
  return ExitCode.OK;
}

export async function listCommand(client: VmProcessClient, out: Output, flags: { state?: string[]; label?: string[] }): Promise<ExitCode> {
  const response = await client.listProcesses({ states: parseStates(flags.state), labels: parseLabels(flags.label) });
  if (out.json) return done(out.message(ListProcessesResponseSchema, response));
  await out.write(processTable(response.processes));
  return ExitCode.OK;
}

/** Exit 0 if the VMM exited with code 0, 3 for any other end; 1 if the call itself failed. */
export async function waitCommand(client: VmProcessClient, out: Output, sandboxId: string, timeout: string | undefined): Promise<ExitCode> {
  const timeoutMs = timeout !== undefined ? parseDuration('--timeout', timeout) : undefined;
  const response = await client.waitProcess({ sandboxId }, timeoutMs !== undefined ? { timeoutMs } : {});
  const exit = response.process?.exit;
  if (out.json) await out.message(WaitProcessResponseSchema, response);
  else await out.write(`${exitSummary(response.process!)}\n`);
  return exit && exitedCleanly(exit) ? ExitCode.OK : ExitCode.PROCESS_FAILED;
}

/** `sb-1 exited: SIGTERM (stopped): stopped by StopProcess`. */
function exitSummary(p: ProcessInfo): string {
  const exit: ProcessExit | undefined = p.exit;
  if (!exit) return `${p.sandboxId}: ${stateName(p.state)}`;
  return `${p.sandboxId} exited: ${exitResult(exit)} (${reasonName(exit.reason)})${exit.message ? `: ${exit.message}` : ''}`;
}

async function done(printed: Promise<void>): Promise<ExitCode> {
  await printed;
  return ExitCode.OK;
}
