import { toJson } from '@bufbuild/protobuf';
import { ProcessExitSchema, StreamLogsResponseSchema } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { statusName, isRpcError } from '../client/rpc-error.js';
import type { VmProcessClient } from '../client/vm-process-client.js';
import { ExitCode } from './exit-codes.js';
import { rpcDetails } from './failure.js';
import { EXIT_HEADER, exitRow } from './format.js';
import type { Output } from './output.js';

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
  const { exitSequence } = await client.listProcesses({});
  const exits = client.watchExitsReconnecting({
    startAfter: flags.after ?? exitSequence,
    sandboxIds: flags.sandbox ?? [],
    // One line when the stream breaks, then one every few attempts while the daemon stays away.
    onReconnect: ({ error, attempt, delayMs, cursor }) => {
      if (attempt !== 1 && attempt % 5 !== 0) return;
      const why = isRpcError(error) ? `${statusName(error.code)}: ${rpcDetails(error)}` : 'the stream ended';
      const what = attempt === 1 ? 'watch interrupted' : `still reconnecting after ${attempt} attempts`;
      out.warn(`vmprocctl: ${what} (${why}); retrying in ${(delayMs / 1000).toFixed(1)}s, resuming after exit ${cursor}\n`);
    },
  });
  if (!out.json) await out.write(EXIT_HEADER);
  for await (const exit of exits) {
    if (out.json) await out.write(`${JSON.stringify(toJson(ProcessExitSchema, exit))}\n`);
    else await out.write(exitRow(exit));
  }
  return ExitCode.OK;
}

/** `logs`: the VMM's output, raw, or one StreamLogsResponse JSON object per line with --json. */
export async function logsCommand(
  client: VmProcessClient,
  out: Output,
  sandboxId: string,
  flags: { tail?: number; follow?: boolean },
): Promise<ExitCode> {
  const chunks = client.streamLogs({ sandboxId, ...(flags.tail !== undefined ? { tailLines: flags.tail } : {}), follow: flags.follow ?? false });
  for await (const chunk of chunks) {
    if (out.json) await out.write(`${JSON.stringify(toJson(StreamLogsResponseSchema, chunk))}\n`);
    else await out.write(chunk.data);
  }
  return ExitCode.OK;
}
