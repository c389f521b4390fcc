import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildLaunchCommand,
  buildLaunchEnvironment,
  LAUNCH_SCRIPT,
  LAUNCH_SCRIPT_NAME,
  type LaunchPlan,
  sandboxLinks,
} from '../../src/launch/launch-command.js';
import type { StartRequest, StartSpec } from '../../src/core/domain.js';
import { type StartDefaults, validateStartRequest } from '../../src/validation/start-request.js';
import { expectThrowsVmprocError } from './support/errors.js';

/**
 * Values an attacker (or a careless client) might send. `marker` is a directory the injected
 * commands would write into, so the bash run below can prove none of them ran.
 */
function hostileValues(marker: string): ReadonlyArray<readonly [label: string, value: string]> {
  return [
    ['single quote', `x'; touch ${marker}/pwned-single; '`],
    ['double quote', `x"; touch ${marker}/pwned-double; "`],
    ['command substitution', `$(touch ${marker}/pwned-subst)`],
    ['backticks', `\`touch ${marker}/pwned-backtick\``],
    ['space', 'two words'],
    ['newline', `x\ntouch ${marker}/pwned-newline`],
    ['semicolon', `x; touch ${marker}/pwned-semicolon`],
    ['and-and', `x && touch ${marker}/pwned-and`],
    ['pipe', `x | touch ${marker}/pwned-pipe`],
    ['redirect', `x > ${marker}/pwned-redirect`],
    ['glob', '*'],
    ['variable', '$HOME${IFS}x'],
    ['tilde and braces', '~root/{a,b}'],
    ['.. traversal', '../../etc/passwd'],
    ['unicode', 'sandbox-é-🚀'],
    ['very long', 'a'.repeat(5000)],
    ['leading dash', '-rf'],
    ['NUL', 'a\0b'],
  ];
}

const HOSTILE = hostileValues('/nonexistent-marker');

const DEFAULTS: StartDefaults = {
  runDir: '/run/vmprocd',
  sandboxDir: '/run/vmprocd/sandbox',
  vmmBin: '/usr/local/bin/cloud-hypervisor',
  netnsDir: '/var/run/netns',
};

const BASE: StartRequest = {
  sandboxId: 'sb-1',
  mode: 'boot',
  kernelPath: '/srv/images/vmlinux',
  rootfsPath: '/srv/images/rootfs.ext4',
  networkNamespace: 'ns-1',
  labels: {},
};

describe('validation rejects hostile values before they reach the launch', () => {
  const identifierFields = [
    ['sandbox_id', (v: string) => ({ sandboxId: v })],
    ['network_namespace', (v: string) => ({ networkNamespace: v })],
  ] as const;
  const pathFields = [
    ['kernel_path', (v: string) => ({ kernelPath: v })],
    ['rootfs_path', (v: string) => ({ rootfsPath: v })],
    ['socket_path', (v: string) => ({ socketPath: v })],
    ['sandbox_dir', (v: string) => ({ sandboxDir: v })],
  ] as const;

  for (const [field, patch] of identifierFields) {
    it.each(HOSTILE)(`${field}: %s is invalid-argument naming the field`, (_label, value) => {
      expectThrowsVmprocError(() => validateStartRequest({ ...BASE, ...patch(value) }, DEFAULTS), 'invalid-argument', field);
    });
    it(`${field}: a bare ".." is invalid-argument`, () => {
      expectThrowsVmprocError(() => validateStartRequest({ ...BASE, ...patch('..') }, DEFAULTS), 'invalid-argument', field);
    });
  }

  /** Inside an absolute path, `..` and a leading `-` in a component are harmless (normalised, or not leading). */
  const harmlessInsideAbsolutePath = new Set(['.. traversal', 'leading dash']);

  for (const [field, patch] of pathFields) {
    it.each(HOSTILE)(`${field}: %s as the whole value is invalid-argument naming the field`, (_label, value) => {
      expectThrowsVmprocError(() => validateStartRequest({ ...BASE, ...patch(value) }, DEFAULTS), 'invalid-argument', field);
    });
    it.each(HOSTILE.filter(([label]) => !harmlessInsideAbsolutePath.has(label)))(
      `${field}: %s inside an absolute path is invalid-argument naming the field`,
      (_label, value) => {
        expectThrowsVmprocError(
          () => validateStartRequest({ ...BASE, ...patch(`/srv/vm/${value}`) }, DEFAULTS),
          'invalid-argument',
          field,
        );
      },
    );
  }

  it('normalises .. inside absolute paths so no ".." segment reaches the launch', () => {
    const spec = validateStartRequest(
      {
        ...BASE,
        kernelPath: '/srv/vm/a/../../images/vmlinux',
        rootfsPath: '/srv/vm/../images/./rootfs.ext4',
        socketPath: '/run/vmprocd/x/../sb-1.sock',
        sandboxDir: '/srv/vm/../sandbox/',
      },
      DEFAULTS,
    );
    expect(spec).toMatchObject({
      kernelPath: '/srv/images/vmlinux',
      rootfsPath: '/srv/images/rootfs.ext4',
      socketPath: '/run/vmprocd/sb-1.sock',
      sandboxDir: '/srv/sandbox',
    });
  });

  it('refuses a .. traversal that lands the sandbox_dir on a system directory', () => {
    expectThrowsVmprocError(
      () => validateStartRequest({ ...BASE, sandboxDir: '/srv/vm/../../etc' }, DEFAULTS),
      'invalid-argument',
      'sandbox_dir',
      '/etc',
    );
  });

  it('accepts a leading dash inside a path component: every path starts with "/" so no tool reads it as an option', () => {
    const spec = validateStartRequest({ ...BASE, rootfsPath: '/srv/vm/-rf' }, DEFAULTS);
    expect(spec.rootfsPath).toBe('/srv/vm/-rf');
  });
});

describe('buildLaunchCommand', () => {
  const LINKS = [
    { name: 'vmlinux', root: '/srv/images', path: '/srv/images/vmlinux', allowBlock: false },
    { name: 'rootfs.ext4', root: '/srv/images', path: '/srv/images/rootfs.ext4', allowBlock: false },
  ];
  const PLAN: LaunchPlan = {
    sandboxDir: '/run/vmprocd/sandbox',
    links: LINKS,
    networkNamespace: 'ns-1',
    vmmBin: '/usr/local/bin/cloud-hypervisor',
    socketPath: '/run/vmprocd/sb-1.sock',
    eventMonitorPath: '/run/vmprocd/exits/sb-1.1.status.events',
  };

  it('runs the constant script under unshare -m with the values as positional arguments, and each link as its name and descriptor', () => {
    expect(buildLaunchCommand(PLAN)).toEqual({
      file: 'unshare',
      args: [
        '-m',
        '--',
        'bash',
        '-c',
        LAUNCH_SCRIPT,
        'vmprocd-launch',
        '/run/vmprocd/sandbox',
        'ns-1',
        '/usr/local/bin/cloud-hypervisor',
        '/run/vmprocd/sb-1.sock',
        '/run/vmprocd/exits/sb-1.1.status.events',
        'vmlinux',
        '3',
        'rootfs.ext4',
        '4',
      ],
    });
    expect(LAUNCH_SCRIPT_NAME).toBe('vmprocd-launch');
  });

  it("never puts a file path on the command line: the VMM's process opens them beneath their roots", () => {
    const args = buildLaunchCommand(PLAN).args;
    for (const link of LINKS) expect(args).not.toContain(link.path);
  });

  it('is pure: the same plan gives equal commands and the plan is not modified', () => {
    const plan = Object.freeze({ ...PLAN });
    expect(buildLaunchCommand(plan)).toEqual(buildLaunchCommand(plan));
    expect(plan).toEqual(PLAN);
  });

  const slots = [
    ['sandboxDir', 6],
    ['networkNamespace', 7],
    ['vmmBin', 8],
    ['socketPath', 9],
    ['eventMonitorPath', 10],
  ] as const;

  describe.each(slots)('never interpolates %s (argv slot %i)', (key, slot) => {
    it.each(HOSTILE)('%s: the script stays constant and the value is exactly one argv element', (_label, value) => {
      const command = buildLaunchCommand({ ...PLAN, [key]: value });
      expect(command.file).toBe('unshare');
      expect(command.args).toHaveLength(15);
      expect(command.args.slice(0, 6)).toEqual(['-m', '--', 'bash', '-c', LAUNCH_SCRIPT, LAUNCH_SCRIPT_NAME]);
      expect(command.args[slot]).toBe(value);
      expect(command.args.filter((arg) => arg === value)).toHaveLength(1);
      for (const [otherKey, otherSlot] of slots) {
        if (otherKey !== key) expect(command.args[otherSlot]).toBe(PLAN[otherKey]);
      }
    });
  });

  it('never interpolates when every slot is hostile at once', () => {
    for (const [, value] of HOSTILE) {
      const command = buildLaunchCommand({ sandboxDir: `${value}0`, links: [], networkNamespace: `${value}1`, vmmBin: `${value}2`, socketPath: `${value}3`, eventMonitorPath: `${value}4` });
      expect(command.args).toEqual(['-m', '--', 'bash', '-c', LAUNCH_SCRIPT, LAUNCH_SCRIPT_NAME, `${value}0`, `${value}1`, `${value}2`, `${value}3`, `${value}4`]);
    }
  });
});

describe('sandboxLinks', () => {
  const rootOf = () => '/srv/images';
  const spec = (patch: Partial<StartSpec>): StartSpec => ({ ...validateStartRequest(BASE, DEFAULTS), kernelPath: '/srv/images/k', rootfsPath: '/srv/images/r', ...patch });
  const vm = { vcpus: 1, maxVcpus: 1, memoryMib: 64, maxMemoryMib: 64, cmdline: '', rootfsReadonly: false, net: [], serial: 'log' as const, pvpanic: false };

  it('links vmlinux in boot mode and rootfs.ext4 always; only disks may be block devices, and only when allowed', () => {
    expect(sandboxLinks(spec({}), rootOf, true)).toEqual([
      { name: 'vmlinux', root: '/srv/images', path: '/srv/images/k', allowBlock: false },
      { name: 'rootfs.ext4', root: '/srv/images', path: '/srv/images/r', allowBlock: true },
    ]);
    expect(sandboxLinks(spec({ mode: 'restore' }), rootOf, false)).toEqual([
      { name: 'rootfs.ext4', root: '/srv/images', path: '/srv/images/r', allowBlock: false },
    ]);
  });

  it('links a VM\'s initramfs and extra disks under their fixed names, in order', () => {
    const withVm = spec({ vm: { ...vm, initramfsPath: '/srv/images/i', disks: [{ id: 'data', path: '/srv/images/d', readonly: true }, { id: 'b', path: '/srv/images/b', readonly: false }] } });
    expect(sandboxLinks(withVm, rootOf, true).map((l) => [l.name, l.path, l.allowBlock])).toEqual([
      ['vmlinux', '/srv/images/k', false],
      ['initramfs', '/srv/images/i', false],
      ['rootfs.ext4', '/srv/images/r', true],
      ['disk-data', '/srv/images/d', true],
      ['disk-b', '/srv/images/b', true],
    ]);
    // Restore mode: the snapshot's extra disks, no kernel.
    expect(sandboxLinks(spec({ mode: 'restore', vm: { disks: [{ id: 'data', path: '/srv/images/d', readonly: true }] } }), rootOf, false).map((l) => l.name)).toEqual(['rootfs.ext4', 'disk-data']);
  });
});

describe('LAUNCH_SCRIPT', () => {
  const lines = LAUNCH_SCRIPT.split('\n');

  it('fails fast: set -euo pipefail comes first', () => {
    expect(lines[0]).toBe('set -euo pipefail');
  });

  it('names the five fixed positional parameters, then reads the links two at a time', () => {
    expect(lines[1]).toBe('sandbox_dir=$1 netns=$2 vmm=$3 socket=$4 events=$5');
    expect(lines[2]).toBe('shift 5');
    const positional = [...LAUNCH_SCRIPT.matchAll(/\$\{?(\d+|[@*#])\}?/g)].map((m) => m[0]);
    expect(positional).toEqual(['$1', '$2', '$3', '$4', '$5', '$#', '$2', '$1']);
  });

  it('makes every mount private before mounting the tmpfs over the sandbox dir', () => {
    const rprivate = lines.indexOf('mount --make-rprivate /');
    const mkdirLine = lines.indexOf('mkdir -p -- "$sandbox_dir"');
    const tmpfs = lines.findIndex((line) => /^mount -t tmpfs -o [^ ]+ [^ ]+ "\$sandbox_dir"$/.test(line));
    expect(rprivate).toBeGreaterThan(0);
    expect(mkdirLine).toBeGreaterThan(rprivate);
    expect(tmpfs).toBeGreaterThan(mkdirLine);
    expect(lines[tmpfs]).toBe('mount -t tmpfs -o mode=0755,size=16m vmprocd-sandbox "$sandbox_dir"');
  });

  it("links each file to the VMM's own descriptor of it, after the tmpfs mount", () => {
    const tmpfs = lines.findIndex((line) => line.startsWith('mount -t tmpfs'));
    const links = lines.indexOf('while [[ $# -gt 0 ]]; do ln -s -- "/proc/$BASHPID/fd/$2" "$sandbox_dir/$1"; shift 2; done');
    expect(links).toBeGreaterThan(tmpfs);
  });

  it('ends by exec-ing the VMM inside the network namespace, so the tracked PID is the VMM', () => {
    expect(lines.at(-1)).toBe('exec ip netns exec "$netns" "$vmm" --api-socket "path=$socket" --event-monitor "path=$events"');
    expect(lines.filter((line) => /\bexec\b/.test(line) && !line.startsWith('exec '))).toEqual([]);
    expect(lines.filter((line) => line.startsWith('exec '))).toHaveLength(1);
  });

  it('has no code-evaluating constructs', () => {
    expect(LAUNCH_SCRIPT).not.toMatch(/\$\(|`|\beval\b|\bsource\b|^\s*\.\s/m);
  });

  it('double-quotes every expansion except in the two contexts bash never splits or globs', () => {
    const unquoted: string[] = [];
    let quoted = 0;
    for (const line of lines) {
      const testRanges = [...line.matchAll(/\[\[.*?\]\]/g)].map((m) => [m.index, m.index + m[0].length] as const);
      let inDouble = false;
      let inSingle = false;
      for (let i = 0; i < line.length; i++) {
        const c = line[i];
        if (c === '\\') {
          i++;
          continue;
        }
        if (c === "'" && !inDouble) inSingle = !inSingle;
        else if (c === '"' && !inSingle) inDouble = !inDouble;
        else if (c === '$' && !inSingle) {
          const name = /^\$(\{[^}]*\}|\w+|#)/.exec(line.slice(i))?.[0];
          if (name === undefined) throw new Error(`unexpected $ in script line: ${line}`);
          if (inDouble) {
            quoted++;
            continue;
          }
          const isAssignment = /(^|\s)[a-z_]+=$/.test(line.slice(0, i));
          const inTest = testRanges.some(([from, to]) => i > from && i < to);
          unquoted.push(`${isAssignment ? 'assignment' : inTest ? '[[ ]]' : 'BARE'} ${name}`);
        }
      }
      expect({ line, inDouble, inSingle }).toEqual({ line, inDouble: false, inSingle: false });
    }
    // Assignments (`x=$1`) and `[[ ... ]]` operands are never word-split or globbed in bash.
    expect(unquoted).toEqual(['assignment $1', 'assignment $2', 'assignment $3', 'assignment $4', 'assignment $5', '[[ ]] $#']);
    expect(quoted).toBe(10);
  });
});

describe('buildLaunchEnvironment', () => {
  it('is a fixed PATH plus the sandbox id and dir, nothing inherited from the daemon', () => {
    expect(buildLaunchEnvironment('sb-1', '/run/vmprocd/sandbox')).toEqual({
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      VMPROCD_SANDBOX_ID: 'sb-1',
      VMPROCD_SANDBOX_DIR: '/run/vmprocd/sandbox',
    });
  });
});

/**
 * Runs the real script with bash, with `mount`, `mkdir`, `ln` and `ip` shadowed by stubs that
 * record their argv (NUL-separated, with argc, so empty and multi-line arguments survive).
 * Nothing is mounted and no root is needed.
 */
describe('LAUNCH_SCRIPT under bash with stubbed tools (no root)', () => {
  let dir: string;
  let stubDir: string;
  let markerDir: string;
  let globDir: string;
  let logPath: string;

  const STUB = [
    '#!/bin/bash',
    'if [[ ${STUB_FAIL:-} == "${0##*/}" ]]; then exit 7; fi',
    `{ printf 'CALL\\0%s\\0%s\\0' "\${0##*/}" "$#"; for a in "$@"; do printf '%s\\0' "$a"; done; } >> "$STUB_LOG"`,
    '',
  ].join('\n');

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmprocd-launch-'));
    stubDir = join(dir, 'stubs');
    markerDir = join(dir, 'marker');
    globDir = join(dir, 'glob');
    logPath = join(dir, 'calls.log');
    await Promise.all([mkdir(stubDir), mkdir(markerDir), mkdir(globDir)]);
    // Files an unquoted `*` would expand to.
    await Promise.all([writeFile(join(globDir, 'glob-a'), ''), writeFile(join(globDir, 'glob-b'), '')]);
    for (const tool of ['mount', 'mkdir', 'ln', 'ip']) {
      await writeFile(join(stubDir, tool), STUB);
      await chmod(join(stubDir, tool), 0o755);
    }
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  type Call = string[];

  /** Runs the bash part of the launch command (everything after `unshare -m --`). */
  async function run(plan: LaunchPlan, extraEnv: Record<string, string> = {}): Promise<{ status: number; calls: Call[] }> {
    await rm(logPath, { force: true });
    const [, , bash, ...bashArgs] = buildLaunchCommand(plan).args;
    let status = 0;
    try {
      execFileSync(bash!, bashArgs, {
        cwd: globDir,
        env: { PATH: `${stubDir}:/usr/bin:/bin`, HOME: markerDir, STUB_LOG: logPath, ...extraEnv },
        stdio: ['ignore', 'ignore', 'pipe'],
        timeout: 10_000,
      });
    } catch (error) {
      status = (error as { status: number }).status;
    }
    let log = '';
    try {
      log = await readFile(logPath, 'utf8');
    } catch {
      // no stub ran
    }
    const tokens = log.split('\0');
    const calls: Call[] = [];
    let i = 0;
    while (i < tokens.length - 1) {
      expect(tokens[i]).toBe('CALL');
      const name = tokens[i + 1]!;
      const argc = Number(tokens[i + 2]);
      calls.push([name, ...tokens.slice(i + 3, i + 3 + argc)]);
      i += 3 + argc;
    }
    return { status, calls };
  }

  const LINKS = [
    { name: 'vmlinux', root: '/srv/images', path: '/srv/images/vmlinux', allowBlock: false },
    { name: 'rootfs.ext4', root: '/srv/images', path: '/srv/images/rootfs.ext4', allowBlock: false },
  ];

  /** The calls, with the script's PID in each link target replaced by `PID`. */
  function expectedCalls(plan: LaunchPlan): Call[] {
    return [
      ['mount', '--make-rprivate', '/'],
      ['mkdir', '-p', '--', plan.sandboxDir],
      ['mount', '-t', 'tmpfs', '-o', 'mode=0755,size=16m', 'vmprocd-sandbox', plan.sandboxDir],
      ...plan.links.map((link, i) => ['ln', '-s', '--', `/proc/PID/fd/${3 + i}`, `${plan.sandboxDir}/${link.name}`]),
      ['ip', 'netns', 'exec', plan.networkNamespace, plan.vmmBin, '--api-socket', `path=${plan.socketPath}`, '--event-monitor', `path=${plan.eventMonitorPath}`],
    ];
  }

  const withoutPid = (calls: Call[]) => calls.map((call) => call.map((arg) => arg.replace(/^\/proc\/\d+\/fd\//, '/proc/PID/fd/')));

  it('runs the steps in order with benign values, one link per file', async () => {
    const plan: LaunchPlan = {
      sandboxDir: '/run/vmprocd/sandbox',
      links: LINKS,
      networkNamespace: 'ns-1',
      vmmBin: '/usr/local/bin/cloud-hypervisor',
      socketPath: '/run/vmprocd/sb-1.sock',
      eventMonitorPath: '/run/vmprocd/exits/sb-1.1.status.events',
    };
    const { status, calls } = await run(plan);
    expect(status).toBe(0);
    expect(withoutPid(calls)).toEqual(expectedCalls(plan));
  });

  it('links nothing more than it is given (restore mode: rootfs.ext4 only)', async () => {
    const plan: LaunchPlan = { sandboxDir: '/run/vmprocd/sandbox', links: LINKS.slice(1), networkNamespace: 'ns-1', vmmBin: '/vmm', socketPath: '/s.sock', eventMonitorPath: '/e.events' };
    const { status, calls } = await run(plan);
    expect(status).toBe(0);
    expect(withoutPid(calls)).toEqual(expectedCalls(plan));
    expect(calls.flat().some((arg) => arg.endsWith('/vmlinux'))).toBe(false);
  });

  it('stops at the first failing step (set -e): the VMM is never exec-ed', async () => {
    const plan: LaunchPlan = { sandboxDir: '/run/vmprocd/sandbox', links: LINKS, networkNamespace: 'ns-1', vmmBin: '/vmm', socketPath: '/s.sock', eventMonitorPath: '/e.events' };
    const { status, calls } = await run(plan, { STUB_FAIL: 'mkdir' });
    expect(status).toBe(7);
    expect(calls).toEqual([['mount', '--make-rprivate', '/']]);
  });

  it('hands every hostile value to each tool intact and runs no injected command', async () => {
    // NUL cannot travel in argv at all (execve), so it is covered by the builder tests only.
    const values = hostileValues(markerDir).filter(([label]) => label !== 'NUL');
    for (const [label, value] of values) {
      // A per-slot suffix tells the slots apart, so a swapped argument would show too.
      const plan: LaunchPlan = { sandboxDir: `${value}0`, links: LINKS, networkNamespace: `${value}1`, vmmBin: `${value}2`, socketPath: `${value}3`, eventMonitorPath: `${value}4` };
      const { status, calls } = await run(plan);
      expect({ label, status }).toEqual({ label, status: 0 });
      expect({ label, calls: withoutPid(calls) }).toEqual({ label, calls: expectedCalls(plan) });
      expect({ label, pwned: await readdir(markerDir) }).toEqual({ label, pwned: [] });
    }
    expect((await readdir(globDir)).sort()).toEqual(['glob-a', 'glob-b']);
  });
});
