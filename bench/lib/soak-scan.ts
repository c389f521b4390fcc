import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** What a soak leaves behind under its root, read from /proc and the run dir. */
export interface Leftovers {
  readonly vmms: string[];
  readonly reapers: string[];
  readonly mounts: string[];
  readonly sockets: string[];
  readonly statusFiles: string[];
}

/** Live processes whose command line mentions `needle` (zombies have none and are not counted). */
export async function processesMentioning(needle: string): Promise<Array<{ pid: number; cmdline: string }>> {
  const found: Array<{ pid: number; cmdline: string }> = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle)) found.push({ pid: Number(entry), cmdline: cmdline.split('\0').join(' ').trim() });
  }
  return found;
}

/**
 * The VMMs and per-VMM reapers still running under `root` (the state lock's reaper, which lives as
 * long as its daemon, is not one), host mounts under it, and the run dir's sockets and exit
 * records. With no daemon and no VMM running, every list must be empty.
 */
export async function leftoversUnder(root: string, runDir: string): Promise<Leftovers> {
  const processes = await processesMentioning(root);
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const runFiles = await readdir(runDir).catch(() => [] as string[]);
  const exitsDir = join(runDir, 'exits');
  return {
    vmms: processes.filter((p) => program(p).endsWith('/standin-vmm')).map(describe),
    reapers: processes.filter((p) => program(p).endsWith('/vmprocd-reaper') && !p.cmdline.includes('--lock')).map(describe),
    mounts: mountinfo.split('\n').map((line) => line.split(' ')[4]).filter((point): point is string => !!point && point.startsWith(`${root}/`)),
    sockets: runFiles.filter((name) => name.endsWith('.sock') || name.endsWith('.sock.lock')),
    statusFiles: await readdir(exitsDir).catch(() => [] as string[]),
  };
}

/** argv[0]: the daemon's own command line names both binaries too. */
function program(p: { cmdline: string }): string {
  return p.cmdline.split(' ')[0] ?? '';
}

function describe(p: { pid: number; cmdline: string }): string {
  return `${p.pid}: ${p.cmdline.slice(0, 160)}`;
}

/** RSS (KiB) and open file descriptors of a process. */
export async function residentAndFds(pid: number): Promise<{ rssKiB: number; fds: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  return { rssKiB, fds };
}
