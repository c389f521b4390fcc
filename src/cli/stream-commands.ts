import { toJson } from '@bufbuild/protobuf';
import { type EventKind, ProcessEventSchema, ProcessExitSchema, StreamLogsResponseSchema } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { statusName, isRpcError } from '../client/rpc-error.js';
import type { ReconnectEvent } from '../client/reconnecting-watch.js';
import type { VmProcessClient } from '../client/vm-process-client.js';
import { ExitCode } from './exit-codes.js';
import { rpcDetails } from './failure.js';
import { EVENT_HEADER, eventRow, EXIT_HEADER, exitRow } from './format.js';
import type { Output } from './output.js';
import { safeLines } from './terminal-text.js';

/** One line when a stream breaks, then one every few attempts while the daemon stays away. */
function reconnectWarning(out: Output, command: string, item: string): (event: ReconnectEvent) => void {
  return ({ error, attempt, delayMs, cursor }) => {
    if (attempt !== 1 && attempt % 5 !== 0) return;
    const why = isRpcError(error) ? `${statusName(error.code)}: ${rpcDetails(error)}` : 'the stream ended';
    const what = attempt === 1 ? `${command} interrupted` : `still reconnecting after ${attempt} attempts`;
    out.warn(`vmprocctl: ${what} (${why}); retrying in ${(delayMs / 1000).toFixed(1)}s, resuming after ${item} ${cursor}\n`);
  };
}

/**
 * `watch`: one line (or JSON object) per exit, until killed. Starts after `--after`, or after the
 * daemon's latest exit; a first ListProcesses makes an unreachable daemon fail at once. After
 * that, connection losses and daemon restarts are ridden out, resuming after the last printed exit.
 */
export async function watchCommand(
  client: VmProcessClient,
  out: Output,
  flags: { after?: bigint; sandbox?: string[] },
): Promise<ExitCode> {
  // The latest sequence alone: one page of one process is enough.
  const { exitSequence } = await client.listProcessesPage({ pageSize: 1 });
  const exits = client.watchExitsReconnecting({
    startAfter: flags.after ?? exitSequence,
    sandboxIds: flags.sandbox ?? [],
    onReconnect: reconnectWarning(out, 'watch', 'exit'),
  });
  if (!out.json) await out.write(EXIT_HEADER);
  for await (const exit of exits) {
    if (out.json) await out.write(`${JSON.stringify(toJson(ProcessExitSchema, exit))}\n`);
    else await out.write(exitRow(exit));
  }
  return ExitCode.OK;
}

/**
 * `events`: one line (or JSON object) per lifecycle event, until killed, as `watch` does for exits.
 * Starts after `--after`, or after the daemon's latest event (GetLatestSequence, which also makes an
 * unreachable daemon fail at once); progress markers only with `--progress`.
 */
export async function eventsCommand(
  client: VmProcessClient,
  out: Output,
  flags: { after?: bigint; sandbox?: string[]; kind?: EventKind[]; progress?: boolean },
): Promise<ExitCode> {
  const { latestEventSequence } = await client.getLatestSequence();
  const events = client.watchEventsReconnecting({
    startAfter: flags.after ?? latestEventSequence,
    sandboxIds: flags.sandbox ?? [],
    kinds: flags.kind ?? [],
    progress: flags.progress ?? false,
    onReconnect: reconnectWarning(out, 'events', 'event'),
  });
  if (!out.json) await out.write(EVENT_HEADER);
  for await (const event of events) {
    if (out.json) await out.write(`${JSON.stringify(toJson(ProcessEventSchema, event))}\n`);
    else await out.write(eventRow(event));
  }
  return ExitCode.OK;
}

/**
 * `logs`: the VMM's output (a guest's serial console among it), or one StreamLogsResponse JSON
 * object per line with --json. On a terminal, control characters are escaped, since a guest could
 * otherwise drive the operator's terminal; into a pipe, or with --raw, the bytes go as they are.
 */
export async function logsCommand(
  client: VmProcessClient,
  out: Output,
  sandboxId: string,
  flags: { tail?: number; follow?: boolean; raw?: boolean },
): Promise<ExitCode> {
  const chunks = client.streamLogs({ sandboxId, ...(flags.tail !== undefined ? { tailLines: flags.tail } : {}), follow: flags.follow ?? false });
  const escape = !flags.raw && out.isTerminal;
  const decoder = new TextDecoder('utf-8', { fatal: false });
  for await (const chunk of chunks) {
    if (out.json) await out.write(`${JSON.stringify(toJson(StreamLogsResponseSchema, chunk))}\n`);
    else if (escape) await out.write(safeLines(decoder.decode(chunk.data, { stream: true })));
    else await out.write(chunk.data);
  }
  if (escape) await out.write(safeLines(decoder.decode()));
  return ExitCode.OK;
}
