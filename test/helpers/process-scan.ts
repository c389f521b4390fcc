import { readdir, readFile } from 'node:fs/promises';

/**
 * PIDs of live processes whose command line mentions `needle` (e.g. a fixture's temp dir, which
 * every reaper and VMM of that fixture has in its argv). Zombies have an empty cmdline and are
 * not counted: they are dead, only not yet reaped by their parent.
 */
export async function processesMentioning(needle: string): Promise<number[]> {
  return (await describeProcessesMentioning(needle)).map((found) => found.pid);
}

/**
 * Like processesMentioning, with each command line as read in the same look: a leak report
 * describes exactly what was found, never a second read that a process exiting meanwhile fails.
 */
export async function describeProcessesMentioning(needle: string): Promise<Array<{ pid: number; cmdline: string }>> {
  const found: Array<{ pid: number; cmdline: string }> = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(needle)) found.push({ pid: Number(entry), cmdline: cmdline.split('\0').join(' ').trim() });
    } catch {
      // exited while we looked
    }
  }
  return found;
}

/** Kills (SIGKILL) every process mentioning `needle`; returns how many there were. */
export async function killProcessesMentioning(needle: string): Promise<number> {
  const pids = await processesMentioning(needle);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return pids.length;
}

/** Mount points in this (the host's) mount namespace at or below `dir`. */
export async function hostMountsUnder(dir: string): Promise<string[]> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  return mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((mountPoint): mountPoint is string => !!mountPoint && (mountPoint === dir || mountPoint.startsWith(`${dir}/`)));
}

/** Every live descendant of `pid` (children, their children...), with its command line, from one read of /proc. */
export async function describeDescendants(pid: number): Promise<Array<{ pid: number; cmdline: string }>> {
  const parents = new Map<number, number>();
  const cmdlines = new Map<number, string>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (state === 'Z') continue;
      parents.set(Number(entry), Number(ppid));
      cmdlines.set(Number(entry), (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').join(' ').trim());
    } catch {
      // exited while we looked
    }
  }
  const isDescendant = (candidate: number): boolean => {
    for (let p = parents.get(candidate); p !== undefined && p > 1; p = parents.get(p)) if (p === pid) return true;
    return false;
  };
  return [...parents.keys()].filter(isDescendant).map((found) => ({ pid: found, cmdline: cmdlines.get(found) ?? '' }));
}
