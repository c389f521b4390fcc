import { describe, expect, it } from '@jest/globals';
import { type DaemonConfig, parseDaemonConfig, USAGE } from '../../src/daemon/config.js';
import { isVmprocError } from '../../src/errors.js';
import { nativeBin } from '../../src/package-paths.js';
import { expectThrowsVmprocError } from './support/errors.js';

const VMM = ['--vmm-bin', '/usr/local/bin/cloud-hypervisor'];

function config(argv: readonly string[], env: NodeJS.ProcessEnv = {}): DaemonConfig {
  const parsed = parseDaemonConfig(argv, env);
  if (parsed.help) throw new Error('unexpected --help');
  return parsed.config;
}

describe('parseDaemonConfig defaults', () => {
  it('needs only --vmm-bin and defaults everything else', () => {
    expect(config(VMM)).toEqual({
      listen: [{ kind: 'unix', path: '/run/vmprocd/vmprocd.sock' }],
      vmmBin: '/usr/local/bin/cloud-hypervisor',
      reaperBin: nativeBin('vmprocd-reaper'),
      launcher: 'native',
      runDir: '/run/vmprocd',
      stateDir: '/var/lib/vmprocd',
      stateSync: 'launches',
      sandboxDir: '/run/vmprocd/sandbox',
      imageRoots: ['/srv/vmprocd'],
      socketRoots: [],
      sandboxRoots: [],
      allowBlockDevices: false,
      netnsDir: '/var/run/netns',
      exitHistory: 10000,
      eventHistory: 10000,
      watchBuffer: 1024,
      streamLimits: { watches: { total: 1024, perConnection: 128 }, logs: { total: 256, perConnection: 32 } },
      logLevel: 'info',
      logMaxBytes: 16 * 1024 * 1024,
      logKeep: 1,
      logCheckIntervalMs: 15_000,
      insecureListen: false,
    });
  });

  it('ignores the real process environment (only the env argument counts)', () => {
    expect(config(VMM, {}).runDir).toBe('/run/vmprocd');
  });
});

describe('parseDaemonConfig precedence: flag, then environment, then default', () => {
  const settings = [
    ['--run-dir', 'VMPROCD_RUN_DIR', 'runDir', '/flag/run', '/env/run', '/run/vmprocd'],
    ['--sandbox-dir', 'VMPROCD_SANDBOX_DIR', 'sandboxDir', '/flag/sb', '/env/sb', '/run/vmprocd/sandbox'],
    ['--state-dir', 'VMPROCD_STATE_DIR', 'stateDir', '/flag/state', '/env/state', '/var/lib/vmprocd'],
    ['--netns-dir', 'VMPROCD_NETNS_DIR', 'netnsDir', '/flag/ns', '/env/ns', '/var/run/netns'],
    ['--reaper-bin', 'VMPROCD_REAPER_BIN', 'reaperBin', '/flag/reaper', '/env/reaper', nativeBin('vmprocd-reaper')],
    ['--exit-history', 'VMPROCD_EXIT_HISTORY', 'exitHistory', '5', '6', 10000],
    ['--watch-buffer', 'VMPROCD_WATCH_BUFFER', 'watchBuffer', '7', '8', 1024],
    ['--log-level', 'VMPROCD_LOG_LEVEL', 'logLevel', 'debug', 'warn', 'info'],
  ] as const;

  describe.each(settings)('%s / %s', (flag, env, key, flagValue, envValue, fallback) => {
    const expected = (text: string) => (typeof fallback === 'number' ? Number(text) : text);

    it('uses the flag over the environment', () => {
      expect(config([...VMM, flag, flagValue], { [env]: envValue })[key]).toBe(expected(flagValue));
    });

    it('uses the environment when the flag is absent', () => {
      expect(config(VMM, { [env]: envValue })[key]).toBe(expected(envValue));
    });

    it('uses the default when neither is set, or the variable is empty', () => {
      expect(config(VMM, {})[key]).toBe(fallback);
      expect(config(VMM, { [env]: '' })[key]).toBe(fallback);
    });

    it('accepts --flag=value', () => {
      expect(config([...VMM, `${flag}=${flagValue}`])[key]).toBe(expected(flagValue));
    });
  });

  it('takes --vmm-bin from VMPROCD_VMM_BIN, the flag winning', () => {
    expect(config([], { VMPROCD_VMM_BIN: '/env/ch' }).vmmBin).toBe('/env/ch');
    expect(config(['--vmm-bin', '/flag/ch'], { VMPROCD_VMM_BIN: '/env/ch' }).vmmBin).toBe('/flag/ch');
  });

  it('normalises the paths it is given', () => {
    const parsed = config(['--vmm-bin', '/usr//bin/./ch', '--run-dir', '/run/x/', '--sandbox-dir', '/a/b/../c']);
    expect(parsed).toMatchObject({ vmmBin: '/usr/bin/ch', runDir: '/run/x', sandboxDir: '/a/c' });
  });
});

describe('parseDaemonConfig --listen', () => {
  it('is repeatable', () => {
    expect(config([...VMM, '--listen', 'unix:///run/a.sock', '--listen', '127.0.0.1:0']).listen).toEqual([
      { kind: 'unix', path: '/run/a.sock' },
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
    ]);
  });

  it('reads VMPROCD_LISTEN as a comma-separated list, trimming blanks', () => {
    expect(config(VMM, { VMPROCD_LISTEN: 'unix:///run/a.sock, 127.0.0.1:50051 ,,[::1]:1' }).listen).toEqual([
      { kind: 'unix', path: '/run/a.sock' },
      { kind: 'tcp', host: '127.0.0.1', port: 50051 },
      { kind: 'tcp', host: '::1', port: 1 },
    ]);
  });

  it('prefers the flags over VMPROCD_LISTEN entirely', () => {
    expect(config([...VMM, '--listen', '127.0.0.1:1'], { VMPROCD_LISTEN: '127.0.0.1:2,127.0.0.1:3' }).listen).toEqual([
      { kind: 'tcp', host: '127.0.0.1', port: 1 },
    ]);
  });

  it('falls back to the default socket when VMPROCD_LISTEN is empty', () => {
    expect(config(VMM, { VMPROCD_LISTEN: '' }).listen).toEqual([{ kind: 'unix', path: '/run/vmprocd/vmprocd.sock' }]);
  });

  it('refuses a malformed address from either source', () => {
    expectThrowsVmprocError(() => config([...VMM, '--listen', 'nonsense']), 'invalid-argument', 'nonsense');
    expectThrowsVmprocError(() => config(VMM, { VMPROCD_LISTEN: '127.0.0.1:1,nonsense' }), 'invalid-argument', 'nonsense');
    expectThrowsVmprocError(() => config([...VMM, '--listen', '']), 'invalid-argument', 'listen address');
  });

  it('never yields an empty listen list', () => {
    let listen: DaemonConfig['listen'];
    try {
      listen = config(VMM, { VMPROCD_LISTEN: ' , ' }).listen;
    } catch (error) {
      expect(isVmprocError(error, 'invalid-argument')).toBe(true);
      return;
    }
    expect(listen.length).toBeGreaterThan(0);
  });
});

describe('parseDaemonConfig errors', () => {
  it('requires the VMM binary, naming --vmm-bin and VMPROCD_VMM_BIN', () => {
    expectThrowsVmprocError(() => config([], {}), 'invalid-argument', '--vmm-bin', 'VMPROCD_VMM_BIN');
    expectThrowsVmprocError(() => config([], { VMPROCD_VMM_BIN: '' }), 'invalid-argument', '--vmm-bin', 'VMPROCD_VMM_BIN');
    expectThrowsVmprocError(() => config(['--vmm-bin', '']), 'invalid-argument', '--vmm-bin', 'VMPROCD_VMM_BIN');
  });

  it.each([
    ['--vmm-bin', 'relative/ch'],
    ['--reaper-bin', 'reaper'],
    ['--run-dir', '/run/a b'],
    ['--sandbox-dir', '/'],
    ['--netns-dir', '/var/run/$(x)'],
  ])('refuses a bad path for %s, naming the flag', (flag, value) => {
    const argv = flag === '--vmm-bin' ? [flag, value] : [...VMM, flag, value];
    expectThrowsVmprocError(() => config(argv), 'invalid-argument', flag);
  });

  it.each(['verbose', 'INFO', '', 'warning'])('refuses the log level %j', (level) => {
    expectThrowsVmprocError(() => config([...VMM, '--log-level', level]), 'invalid-argument', '--log-level', 'trace, debug, info, warn, error, fatal');
  });

  it('refuses a bad log level from the environment too', () => {
    expectThrowsVmprocError(() => config(VMM, { VMPROCD_LOG_LEVEL: 'loud' }), 'invalid-argument', 'loud');
  });

  it.each(['trace', 'debug', 'info', 'warn', 'error', 'fatal'])('accepts the log level %s', (level) => {
    expect(config([...VMM, '--log-level', level]).logLevel).toBe(level);
  });

  it.each(['0', '-1', 'abc', '1.5', '', '9007199254740993', 'Infinity', 'NaN'])('refuses %j as an integer setting', (text) => {
    expectThrowsVmprocError(() => config([...VMM, `--exit-history=${text}`]), 'invalid-argument', '--exit-history', 'positive integer', JSON.stringify(text));
    expectThrowsVmprocError(() => config([...VMM, `--watch-buffer=${text}`]), 'invalid-argument', '--watch-buffer', 'positive integer');
  });

  it('needs --flag=VALUE for a value starting with a dash', () => {
    expectThrowsVmprocError(() => config([...VMM, '--exit-history', '-1']), 'invalid-argument', "'--exit-history=-XYZ'");
  });

  it('refuses a bad integer from the environment, naming the flag', () => {
    expectThrowsVmprocError(() => config(VMM, { VMPROCD_WATCH_BUFFER: 'lots' }), 'invalid-argument', '--watch-buffer', '"lots"');
  });

  it('accepts the largest safe integer', () => {
    expect(config([...VMM, '--exit-history', String(Number.MAX_SAFE_INTEGER)]).exitHistory).toBe(Number.MAX_SAFE_INTEGER);
  });

  it.each([
    [['--bogus']],
    [['--vmm-bin']],
    [['positional']],
    [['-x']],
    [['--help=yes']],
  ])('refuses the command line %j with the usage text', (argv) => {
    expectThrowsVmprocError(() => parseDaemonConfig(argv, { VMPROCD_VMM_BIN: '/ch' }), 'invalid-argument', 'usage: vmprocd');
  });
});

describe('parseDaemonConfig --help', () => {
  it.each([[['--help']], [['-h']], [['-h', ...VMM]]])('returns help for %j, even without --vmm-bin', (argv) => {
    expect(parseDaemonConfig(argv, {})).toEqual({ help: true });
  });

  it('still refuses unknown flags next to --help', () => {
    expectThrowsVmprocError(() => parseDaemonConfig(['--help', '--bogus'], {}), 'invalid-argument', '--bogus');
  });

  it('documents every flag and its environment variable', () => {
    for (const flag of ['--listen', '--vmm-bin', '--run-dir', '--sandbox-dir', '--exit-history', '--watch-buffer', '--log-level', '--reaper-bin', '--netns-dir', '--help']) {
      expect(USAGE).toContain(flag);
    }
    for (const env of ['VMPROCD_LISTEN', 'VMPROCD_VMM_BIN', 'VMPROCD_RUN_DIR', 'VMPROCD_SANDBOX_DIR', 'VMPROCD_EXIT_HISTORY', 'VMPROCD_WATCH_BUFFER', 'VMPROCD_LOG_LEVEL', 'VMPROCD_REAPER_BIN', 'VMPROCD_NETNS_DIR']) {
      expect(USAGE).toContain(env);
    }
  });
});

describe('parseDaemonConfig --state-sync', () => {
  it('defaults to launches, accepts always and none from flag or environment, and refuses anything else', () => {
    expect(config(VMM).stateSync).toBe('launches');
    expect(config([...VMM, '--state-sync', 'none']).stateSync).toBe('none');
    expect(config(VMM, { VMPROCD_STATE_SYNC: 'always' }).stateSync).toBe('always');
    expectThrowsVmprocError(() => config([...VMM, '--state-sync', 'sometimes']), 'invalid-argument', '--state-sync');
  });
});

describe('parseDaemonConfig --launcher', () => {
  it('defaults to native, accepts script from flag or environment, and refuses anything else', () => {
    expect(config(VMM).launcher).toBe('native');
    expect(config([...VMM, '--launcher', 'script']).launcher).toBe('script');
    expect(config(VMM, { VMPROCD_LAUNCHER: 'script' }).launcher).toBe('script');
    expectThrowsVmprocError(() => config([...VMM, '--launcher', 'bash']), 'invalid-argument', '--launcher');
  });
});

describe('parseDaemonConfig confinement roots', () => {
  it('takes --image-root, --socket-root and --sandbox-root repeatedly, or comma-separated from the environment', () => {
    const flags = config([...VMM, '--image-root', '/a', '--image-root', '/b/', '--socket-root', '/s', '--sandbox-root', '/x']);
    expect({ images: flags.imageRoots, sockets: flags.socketRoots, sandboxes: flags.sandboxRoots }).toEqual({ images: ['/a', '/b'], sockets: ['/s'], sandboxes: ['/x'] });
    const env = config(VMM, { VMPROCD_IMAGE_ROOT: '/e1, /e2', VMPROCD_SOCKET_ROOT: '/es', VMPROCD_SANDBOX_ROOT: '/ex' });
    expect({ images: env.imageRoots, sockets: env.socketRoots, sandboxes: env.sandboxRoots }).toEqual({ images: ['/e1', '/e2'], sockets: ['/es'], sandboxes: ['/ex'] });
    expect(config([...VMM, '--image-root', '/f'], { VMPROCD_IMAGE_ROOT: '/e' }).imageRoots).toEqual(['/f']);
  });

  it('refuses a relative root and an environment variable that names none', () => {
    expectThrowsVmprocError(() => config([...VMM, '--image-root', 'images']), 'invalid-argument', '--image-root');
    expectThrowsVmprocError(() => config(VMM, { VMPROCD_IMAGE_ROOT: ' , ' }), 'invalid-argument', 'VMPROCD_IMAGE_ROOT names no directory');
  });

  it('allows block devices only when told, by flag or environment', () => {
    expect(config(VMM).allowBlockDevices).toBe(false);
    expect(config([...VMM, '--allow-block-devices']).allowBlockDevices).toBe(true);
    expect(config(VMM, { VMPROCD_ALLOW_BLOCK_DEVICES: 'yes' }).allowBlockDevices).toBe(true);
    expect(config(VMM, { VMPROCD_ALLOW_BLOCK_DEVICES: '0' }).allowBlockDevices).toBe(false);
    expectThrowsVmprocError(() => config(VMM, { VMPROCD_ALLOW_BLOCK_DEVICES: 'maybe' }), 'invalid-argument', 'VMPROCD_ALLOW_BLOCK_DEVICES');
  });
});
