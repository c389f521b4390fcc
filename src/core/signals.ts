import { constants } from 'node:os';

/** Signal names and numbers of this platform, e.g. SIGUSR1 <-> 10. */
const byName = constants.signals as Readonly<Record<string, number>>;
const byNumber = new Map<number, string>();
for (const [name, number] of Object.entries(byName)) {
  // SIGIOT and SIGPOLL alias SIGABRT and SIGIO: keep the first (canonical) name.
  if (!byNumber.has(number)) byNumber.set(number, name);
}

export interface SignalSpec {
  readonly name: string;
  readonly number: number;
}

/** Accepts `SIGUSR1`, `USR1` or `usr1`; undefined for anything else. */
export function parseSignalName(input: string): SignalSpec | undefined {
  const upper = input.trim().toUpperCase();
  const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
  const number = Object.hasOwn(byName, name) ? byName[name] : undefined;
  return number === undefined ? undefined : { name, number };
}

/** `SIGKILL` for 9; `SIG<n>` for a number the platform has no name for (real-time signals). */
export function signalName(number: number): string {
  return byNumber.get(number) ?? `SIG${number}`;
}
