import { type Timestamp, timestampDate } from '@bufbuild/protobuf/wkt';
import { EventKind, EventOrigin, ExitReason, LaunchMode, type ProcessEvent, type ProcessExit, type ProcessInfo, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { formatAge } from './durations.js';
import { formatFields, formatTable } from './table.js';
import { safeCell } from './terminal-text.js';

/** `running`, `exited`: the enum value's name without its prefix, lower case. */
export const stateName = (state: ProcessState): string => (ProcessState[state] ?? String(state)).toLowerCase();
export const modeName = (mode: LaunchMode): string => (LaunchMode[mode] ?? String(mode)).toLowerCase();
export const reasonName = (reason: ExitReason): string => (ExitReason[reason] ?? String(reason)).toLowerCase();

/** `code 0`, `code 1`, `SIGKILL`, or `-` when the exit was lost. */
export function exitResult(exit: ProcessExit): string {
  if (exit.exitCode !== undefined) return `code ${exit.exitCode}`;
  return exit.signal ?? '-';
}

/** Whether a process that ended this way succeeded: exit code 0, nothing else (a signal death never is). */
export function exitedCleanly(exit: ProcessExit): boolean {
  return exit.exitCode === 0;
}

const iso = (ts: Timestamp | undefined): string => (ts ? timestampDate(ts).toISOString() : '-');
const ms = (ts: Timestamp): number => timestampDate(ts).getTime();

function labelsText(labels: Record<string, string>): string {
  const text = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(',');
  return text || '-';
}

/** The `list` table. */
export function processTable(processes: readonly ProcessInfo[], now = Date.now()): string {
  const rows = processes.map((p) => [
    p.sandboxId,
    p.pid ? String(p.pid) : '-',
    stateName(p.state),
    modeName(p.mode),
    p.networkNamespace || '-',
    p.startedAt ? formatAge(now - ms(p.startedAt)) : '-',
    p.exit ? `${exitResult(p.exit)} (${reasonName(p.exit.reason)})` : '-',
    labelsText(p.labels),
  ]);
  return formatTable(['SANDBOX', 'PID', 'STATE', 'MODE', 'NETNS', 'AGE', 'EXIT', 'LABELS'], rows);
}

/** The `get` view: every field of one process. */
export function processDetails(p: ProcessInfo, now = Date.now()): string {
  const fields: Array<[string, string]> = [
    ['Sandbox', p.sandboxId],
    ['State', stateName(p.state)],
    ['PID', p.pid ? String(p.pid) : '-'],
    ['Mode', modeName(p.mode)],
    ['Netns', p.networkNamespace || '-'],
    ['Labels', labelsText(p.labels)],
    ['Started', p.startedAt ? `${iso(p.startedAt)} (${formatAge(now - ms(p.startedAt))} ago)` : '-'],
    ['Ready', p.readyAt && p.startedAt ? `${iso(p.readyAt)} (after ${formatAge(ms(p.readyAt) - ms(p.startedAt))})` : '-'],
    ['VMM version', p.vmmVersion || '-'],
    ['Socket', p.socketPath || '-'],
    ['Sandbox dir', p.sandboxDir || '-'],
    ['Kernel', p.kernelPath || '-'],
    ['Rootfs', p.rootfsPath || '-'],
    ['Log', p.logPath || '-'],
  ];
  if (p.exit) {
    fields.push(['Exit', `${exitResult(p.exit)} (${reasonName(p.exit.reason)}) at ${iso(p.exit.exitedAt)}, sequence ${p.exit.sequence}`]);
    if (p.exit.message) fields.push(['Message', p.exit.message]);
    if (p.exit.stderrTail) fields.push(['Stderr tail', p.exit.stderrTail.replace(/\n$/, '')]);
  }
  return formatFields(fields);
}

const EXIT_WIDTHS = [6, 24, 20, 8, 9, 13];

/** One line per exit for `watch` and `wait`: fixed-width columns, since the stream has no end to align to. */
export const EXIT_HEADER = exitLine(['SEQ', 'TIME', 'SANDBOX', 'PID', 'RESULT', 'REASON', 'MESSAGE']);

export function exitRow(exit: ProcessExit): string {
  return exitLine([
    String(exit.sequence),
    iso(exit.exitedAt),
    exit.sandboxId,
    exit.pid ? String(exit.pid) : '-',
    exitResult(exit),
    reasonName(exit.reason),
    exit.message.replace(/\s*\n\s*/g, ' ') || '-',
  ]);
}

function exitLine(cells: readonly string[]): string {
  return cells.map((cell, i) => (i < EXIT_WIDTHS.length ? cell.padEnd(EXIT_WIDTHS[i]!) : cell)).join(' ').trimEnd() + '\n';
}

export const eventKindName = (kind: EventKind): string => (EventKind[kind] ?? String(kind)).toLowerCase();

const EVENT_WIDTHS = [6, 24, 20, 8, 14, 6];

export const EVENT_HEADER = eventLine(['SEQ', 'TIME', 'SANDBOX', 'PID', 'EVENT', 'BY', 'DETAIL']);

/** One line per event for `events`; a progress marker shows only its sequence. */
export function eventRow(event: ProcessEvent): string {
  if (event.kind === EventKind.PROGRESS) return eventLine([String(event.sequence), '-', '-', '-', 'progress', '-', '-']);
  return eventLine([
    String(event.sequence),
    iso(event.time),
    event.sandboxId,
    event.pid ? String(event.pid) : '-',
    eventKindName(event.kind),
    event.origin === EventOrigin.DAEMON ? 'daemon' : event.origin === EventOrigin.VMM ? 'vmm' : '-',
    eventDetail(event),
  ]);
}

function eventDetail(event: ProcessEvent): string {
  const { detail } = event;
  switch (detail.case) {
    case 'snapshot':
      return detail.value.snapshotUrl;
    case 'restore':
      return detail.value.sourceUrl;
    case 'resize': {
      const { vcpus, memoryMib, balloonMib } = detail.value;
      const parts = [vcpus !== undefined ? `vcpus=${vcpus}` : '', memoryMib !== undefined ? `memory=${memoryMib}MiB` : '', balloonMib !== undefined ? `balloon=${balloonMib}MiB` : ''];
      return parts.filter(Boolean).join(' ') || '-';
    }
    case 'guestPanic':
      return detail.value.event || '-';
    case 'exit':
      return `${exitResult(detail.value)} (${reasonName(detail.value.reason)}) exit ${detail.value.sequence}`;
    default:
      return '-';
  }
}

function eventLine(cells: readonly string[]): string {
  return cells.map((cell, i) => safeCell(i < EVENT_WIDTHS.length ? cell.padEnd(EVENT_WIDTHS[i]!) : cell)).join(' ').trimEnd() + '\n';
}
