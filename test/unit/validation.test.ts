import { describe, expect, it } from '@jest/globals';
import { isSameOrUnder, MAX_SOCKET_PATH_BYTES, validatePath } from '../../src/validation/paths.js';
import { validateLabels, validateNetworkNamespace, validateSandboxId } from '../../src/validation/identifiers.js';
import { DEFAULT_READY_TIMEOUT_MS } from '../../src/api-defaults.js';
import {
  restoreSourceDir,
  type StartDefaults,
  validateStartRequest,
} from '../../src/validation/start-request.js';
import type { RestoreSpec, StartRequest } from '../../src/core/domain.js';
import { expectThrowsVmprocError } from './support/errors.js';

describe('validatePath', () => {
  it.each([
    ['/a//b/../c/', '/a/c'],
    ['/a/./b', '/a/b'],
    ['/a/b/', '/a/b'],
    ['///a//', '/a'],
    ['/../a', '/a'],
    ['/srv/images/vmlinux', '/srv/images/vmlinux'],
    ['/a._@+:=,-b/c', '/a._@+:=,-b/c'],
  ])('normalises %j to %j', (input, expected) => {
    expect(validatePath('f', input)).toBe(expected);
  });

  it.each(['/', '//', '/..', '/a/..', '/./'])('refuses %j, which is the root directory', (input) => {
    expectThrowsVmprocError(() => validatePath('my_field', input), 'invalid-argument', 'my_field', 'root directory');
  });

  it.each(['', 'a/b', './a', '../a', '~/a', '-rf'])('refuses the relative path %j', (input) => {
    expectThrowsVmprocError(() => validatePath('my_field', input), 'invalid-argument', 'my_field', 'absolute path');
  });

  it('refuses NUL bytes and newlines with their own messages', () => {
    expectThrowsVmprocError(() => validatePath('my_field', '/a\0b'), 'invalid-argument', 'my_field', 'NUL');
    expectThrowsVmprocError(() => validatePath('my_field', '/a\nb'), 'invalid-argument', 'my_field', 'newline');
    expectThrowsVmprocError(() => validatePath('my_field', '/a\rb'), 'invalid-argument', 'my_field', 'newline');
  });

  it('accepts 4095 bytes and refuses 4096', () => {
    const ok = `/${'a'.repeat(4094)}`;
    expect(validatePath('f', ok)).toBe(ok);
    expectThrowsVmprocError(() => validatePath('my_field', `${ok}a`), 'invalid-argument', 'my_field', '4095 bytes');
  });

  it.each([' ', "'", '"', '$', '`', ';', '|', '&', '>', '<', '*', '?', '[', '~', '\\', '\t', '%', '#', '!', '(', 'é', '🚀'])(
    'refuses %j anywhere in the path (allow-list)',
    (character) => {
      expectThrowsVmprocError(() => validatePath('my_field', `/srv/a${character}b`), 'invalid-argument', 'my_field', 'may only contain');
    },
  );

  it('quotes the offending value in the message as JSON', () => {
    expectThrowsVmprocError(() => validatePath('kernel_path', '/a b'), 'invalid-argument', 'kernel_path "/a b"');
  });

  it('applies extra forbidden characters with their reason', () => {
    const rules = { forbidden: { characters: ',=', why: 'they split options' } };
    expect(validatePath('f', '/a/b', rules)).toBe('/a/b');
    expectThrowsVmprocError(() => validatePath('my_field', '/a,b', rules), 'invalid-argument', 'my_field', 'must not contain , or =', 'they split options');
    expectThrowsVmprocError(() => validatePath('my_field', '/a=b', rules), 'invalid-argument', 'my_field', 'must not contain');
  });

  it('exposes the unix socket limit of 107 bytes', () => {
    expect(MAX_SOCKET_PATH_BYTES).toBe(107);
  });
});

describe('isSameOrUnder', () => {
  it.each([
    ['/a', '/a', true],
    ['/a/b', '/a', true],
    ['/a/b/c', '/a', true],
    ['/ab', '/a', false],
    ['/a', '/a/b', false],
    ['/x', '/', true],
    ['/', '/', true],
    ['/b', '/a', false],
  ])('isSameOrUnder(%j, %j) is %s', (path, dir, expected) => {
    expect(isSameOrUnder(path, dir)).toBe(expected);
  });
});

describe('validateSandboxId and validateNetworkNamespace', () => {
  const validators = [
    ['sandbox_id', validateSandboxId],
    ['network_namespace', validateNetworkNamespace],
  ] as const;

  describe.each(validators)('%s', (field, validate) => {
    it.each(['a', 'A', '0', 'sb-1', 'a_b.c-d', 'x..y', `a${'b'.repeat(62)}`])('accepts %j', (value) => {
      expect(validate(value)).toBe(value);
    });

    it('accepts 63 characters and refuses 64', () => {
      expect(validate('a'.repeat(63))).toBe('a'.repeat(63));
      expectThrowsVmprocError(() => validate('a'.repeat(64)), 'invalid-argument', field);
    });

    it('says the field is required when empty', () => {
      expectThrowsVmprocError(() => validate(''), 'invalid-argument', `${field} is required`);
    });

    it.each(['-a', '_a', '.a', '.', '..', 'a/b', 'a b', 'a\n', 'a\0', 'é', 'a:b', 'a@b', 'a+b', 'a,b', 'a=b', ' a', 'a*'])(
      'refuses %j, naming the field',
      (value) => {
        expectThrowsVmprocError(() => validate(value), 'invalid-argument', field);
      },
    );
  });
});

describe('validateLabels', () => {
  it('returns a frozen copy', () => {
    const labels = { team: 'vm', 'app.kubernetes.io/name': 'x' };
    const result = validateLabels(labels);
    expect(result).toEqual(labels);
    expect(result).not.toBe(labels);
    expect(Object.isFrozen(result)).toBe(true);
  });

  it('accepts 64 labels and refuses 65', () => {
    const labels = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
    expect(Object.keys(validateLabels(labels(64)))).toHaveLength(64);
    expectThrowsVmprocError(() => validateLabels(labels(65)), 'invalid-argument', 'at most 64 labels', 'got 65');
  });

  it.each(['a', 'A9', 'a/b.c_d-e', 'x'.repeat(128), '0'])('accepts the key %j', (key) => {
    expect(validateLabels({ [key]: 'v' })).toEqual({ [key]: 'v' });
  });

  it.each(['', 'x'.repeat(129), '-a', 'a-', '/a', 'a/', '.a', 'a.', 'a b', 'a=b', 'a:b', 'é'])('refuses the key %j', (key) => {
    expectThrowsVmprocError(() => validateLabels({ [key]: 'v' }), 'invalid-argument', 'label key', JSON.stringify(key));
  });

  it('accepts values up to 1024 bytes (counted in UTF-8) and refuses longer ones or a NUL', () => {
    expect(validateLabels({ k: 'v'.repeat(1024) }).k).toHaveLength(1024);
    expect(validateLabels({ k: 'é'.repeat(512) }).k).toHaveLength(512);
    expect(validateLabels({ k: '' }).k).toBe('');
    expect(validateLabels({ k: 'any thing $(x) `y` "z"\n' }).k).toBe('any thing $(x) `y` "z"\n');
    expectThrowsVmprocError(() => validateLabels({ k: 'v'.repeat(1025) }), 'invalid-argument', 'label "k"', '1024 bytes');
    expectThrowsVmprocError(() => validateLabels({ k: 'é'.repeat(513) }), 'invalid-argument', 'label "k"');
    expectThrowsVmprocError(() => validateLabels({ k: 'a\0b' }), 'invalid-argument', 'label "k"', 'NUL');
  });
});

describe('validateStartRequest', () => {
  const DEFAULTS: StartDefaults = {
    runDir: '/run/vmprocd',
    sandboxDir: '/run/vmprocd/sandbox',
    vmmBin: '/usr/local/bin/cloud-hypervisor',
    netnsDir: '/var/run/netns',
  };
  const BOOT: StartRequest = {
    sandboxId: 'sb-1',
    mode: 'boot',
    kernelPath: '/srv/images/vmlinux',
    rootfsPath: '/srv/images/rootfs.ext4',
    networkNamespace: 'ns-1',
    labels: {},
  };
  const RESTORE_SPEC: RestoreSpec = { sourceUrl: 'file:///srv/snapshots/s1', resume: true, prefault: false };
  const RESTORE: StartRequest = {
    sandboxId: 'sb-1',
    mode: 'restore',
    rootfsPath: '/srv/images/rootfs.ext4',
    networkNamespace: 'ns-1',
    restore: RESTORE_SPEC,
    labels: {},
  };
  const validate = (patch: Partial<StartRequest>, defaults: StartDefaults = DEFAULTS) =>
    validateStartRequest({ ...BOOT, ...patch }, defaults);

  describe('defaults and shape', () => {
    it('fills in the socket path, sandbox dir and ready timeout, and adds nothing else', () => {
      expect(validateStartRequest(BOOT, DEFAULTS)).toEqual({
        sandboxId: 'sb-1',
        mode: 'boot',
        kernelPath: '/srv/images/vmlinux',
        rootfsPath: '/srv/images/rootfs.ext4',
        networkNamespace: 'ns-1',
        socketPath: '/run/vmprocd/sb-1.sock',
        sandboxDir: '/run/vmprocd/sandbox',
        readyTimeoutMs: 5000,
        labels: {},
      });
      expect(DEFAULT_READY_TIMEOUT_MS).toBe(5000);
    });

    it('treats empty socket_path and sandbox_dir as not given', () => {
      expect(validate({ socketPath: '', sandboxDir: '' })).toMatchObject({
        socketPath: '/run/vmprocd/sb-1.sock',
        sandboxDir: '/run/vmprocd/sandbox',
      });
    });

    it('normalises every path it returns', () => {
      expect(
        validate({
          kernelPath: '/srv//images/./vmlinux',
          rootfsPath: '/srv/x/../images/rootfs.ext4/',
          socketPath: '/run//vmprocd/a/../sb.sock',
          sandboxDir: '/srv/sb//',
        }),
      ).toMatchObject({
        kernelPath: '/srv/images/vmlinux',
        rootfsPath: '/srv/images/rootfs.ext4',
        socketPath: '/run/vmprocd/sb.sock',
        sandboxDir: '/srv/sb',
      });
    });

    it('normalises a default socket path built from a run dir given with a trailing slash', () => {
      expect(validate({}, { ...DEFAULTS, runDir: '/run/vmprocd/' }).socketPath).toBe('/run/vmprocd/sb-1.sock');
    });

    it('copies and freezes labels', () => {
      const labels = { team: 'vm' };
      const spec = validate({ labels });
      expect(spec.labels).toEqual({ team: 'vm' });
      expect(spec.labels).not.toBe(labels);
      expect(Object.isFrozen(spec.labels)).toBe(true);
    });

    it('refuses invalid labels', () => {
      expectThrowsVmprocError(() => validate({ labels: { '-bad': 'v' } }), 'invalid-argument', 'label key');
    });

    it('checks sandbox_id before anything else', () => {
      expectThrowsVmprocError(
        () => validateStartRequest({ sandboxId: 'bad id', rootfsPath: '', networkNamespace: '', labels: {} }, DEFAULTS),
        'invalid-argument',
        'sandbox_id',
      );
      expectThrowsVmprocError(() => validate({ sandboxId: '' }), 'invalid-argument', 'sandbox_id is required');
    });

    it('accepts a 63-character sandbox_id and refuses 64', () => {
      const id63 = `s${'x'.repeat(62)}`;
      expect(validate({ sandboxId: id63 }).sandboxId).toBe(id63);
      expectThrowsVmprocError(() => validate({ sandboxId: `${id63}x` }), 'invalid-argument', 'sandbox_id');
    });
  });

  describe('mode, kernel and restore', () => {
    it('requires a mode', () => {
      const { mode: _omitted, ...withoutMode } = BOOT;
      expectThrowsVmprocError(() => validateStartRequest(withoutMode, DEFAULTS), 'invalid-argument', 'mode is required');
    });

    it('requires kernel_path in boot mode (absent or empty)', () => {
      const { kernelPath: _omitted, ...withoutKernel } = BOOT;
      expectThrowsVmprocError(() => validateStartRequest(withoutKernel, DEFAULTS), 'invalid-argument', 'kernel_path is required');
      expectThrowsVmprocError(() => validate({ kernelPath: '' }), 'invalid-argument', 'kernel_path is required');
    });

    it('refuses kernel_path in restore mode', () => {
      expectThrowsVmprocError(
        () => validateStartRequest({ ...RESTORE, kernelPath: '/srv/images/vmlinux' }, DEFAULTS),
        'invalid-argument',
        'kernel_path is for boot mode only',
      );
    });

    it('accepts restore mode without a kernel, with or without a restore spec', () => {
      const spec = validateStartRequest(RESTORE, DEFAULTS);
      expect(spec).not.toHaveProperty('kernelPath');
      expect(spec.restore).toEqual(RESTORE_SPEC);
      const { restore: _omitted, ...bare } = RESTORE;
      const bareSpec = validateStartRequest(bare, DEFAULTS);
      expect(bareSpec.mode).toBe('restore');
      expect(bareSpec).not.toHaveProperty('restore');
    });

    it('treats an empty kernel_path in restore mode as not given', () => {
      expect(validateStartRequest({ ...RESTORE, kernelPath: '' }, DEFAULTS)).not.toHaveProperty('kernelPath');
    });

    it('refuses a restore spec in boot mode', () => {
      expectThrowsVmprocError(() => validate({ restore: RESTORE_SPEC }), 'invalid-argument', 'restore is for restore mode');
    });

    it('requires rootfs_path in both modes', () => {
      expectThrowsVmprocError(() => validate({ rootfsPath: '' }), 'invalid-argument', 'rootfs_path is required');
      expectThrowsVmprocError(() => validateStartRequest({ ...RESTORE, rootfsPath: '' }, DEFAULTS), 'invalid-argument', 'rootfs_path is required');
    });

    it('requires network_namespace', () => {
      expectThrowsVmprocError(() => validate({ networkNamespace: '' }), 'invalid-argument', 'network_namespace is required');
    });

    const restoreWith = (patch: Partial<RestoreSpec>) =>
      validateStartRequest({ ...RESTORE, restore: { ...RESTORE_SPEC, ...patch } }, DEFAULTS);

    it('requires restore.source_url', () => {
      expectThrowsVmprocError(() => restoreWith({ sourceUrl: '' }), 'invalid-argument', 'restore.source_url is required');
    });

    it.each(['http://host/snap', 'file:/srv/snap', 'file://host/srv/snap', 'file://srv/snap', '/srv/snap', 'FILE:///srv/snap'])(
      'refuses the source_url %j: only file:/// URLs',
      (sourceUrl) => {
        expectThrowsVmprocError(() => restoreWith({ sourceUrl }), 'invalid-argument', 'restore.source_url', 'file://');
      },
    );

    it.each(['file:///', 'file:///srv/a b', 'file:///srv/a%20b', 'file:///srv/a?x=1', 'file:///srv/a#x'])(
      'refuses the source_url %j by the path rules',
      (sourceUrl) => {
        expectThrowsVmprocError(() => restoreWith({ sourceUrl }), 'invalid-argument', 'restore.source_url');
      },
    );

    it('normalises the source_url path and keeps the other restore fields', () => {
      const spec = restoreWith({ sourceUrl: 'file:///srv//snapshots/x/../s1/', memoryRestoreMode: 'Copy', prefault: true });
      expect(spec.restore).toEqual({ sourceUrl: 'file:///srv/snapshots/s1', memoryRestoreMode: 'Copy', resume: true, prefault: true });
      expect(restoreSourceDir(spec.restore!.sourceUrl)).toBe('/srv/snapshots/s1');
    });

    it('refuses prefault with OnDemand, and allows it otherwise', () => {
      expectThrowsVmprocError(
        () => restoreWith({ memoryRestoreMode: 'OnDemand', prefault: true }),
        'invalid-argument',
        'restore.prefault',
        'ON_DEMAND',
      );
      expect(restoreWith({ memoryRestoreMode: 'OnDemand', prefault: false }).restore?.memoryRestoreMode).toBe('OnDemand');
      expect(restoreWith({ memoryRestoreMode: 'Copy', prefault: true }).restore?.prefault).toBe(true);
      expect(restoreWith({ prefault: true }).restore).not.toHaveProperty('memoryRestoreMode');
    });
  });

  describe('socket_path', () => {
    /** An absolute path of exactly `bytes` bytes ending in `.sock`. */
    const socketOf = (bytes: number) => `/s/${'x'.repeat(bytes - '/s/.sock'.length)}.sock`;

    it('accepts 107 bytes and refuses 108, naming the byte count', () => {
      expect(socketOf(107)).toHaveLength(107);
      expect(validate({ socketPath: socketOf(107) }).socketPath).toBe(socketOf(107));
      expectThrowsVmprocError(() => validate({ socketPath: socketOf(108) }), 'invalid-argument', 'socket_path', '108 bytes', '107');
    });

    it('measures the limit after normalisation', () => {
      const sock = socketOf(107);
      expect(validate({ socketPath: sock.replace('/s/', '/s//') }).socketPath).toBe(sock);
    });

    it('applies the limit to the default socket path too', () => {
      const id63 = `s${'x'.repeat(62)}`;
      // `${runDir}/${id}.sock`: 39 + 1 + 63 + 5 = 108 bytes.
      const runDir = `/${'r'.repeat(38)}`;
      expectThrowsVmprocError(() => validate({ sandboxId: id63 }, { ...DEFAULTS, runDir }), 'invalid-argument', 'socket_path', '108 bytes');
      expect(validate({ sandboxId: id63 }, { ...DEFAULTS, runDir: `/${'r'.repeat(37)}` }).socketPath).toHaveLength(107);
    });

    it.each([',', '='])('refuses %j, which the VMM would parse as an option separator', (character) => {
      expectThrowsVmprocError(
        () => validate({ socketPath: `/run/vmprocd/a${character}b.sock` }),
        'invalid-argument',
        'socket_path',
        'comma-separated key=value',
      );
    });

    it('still allows , and = in other paths', () => {
      expect(validate({ rootfsPath: '/srv/a,b=c.ext4' }).rootfsPath).toBe('/srv/a,b=c.ext4');
    });
  });

  describe('sandbox_dir', () => {
    const SYSTEM_DIRS = ['/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/libx32', '/opt',
      '/proc', '/root', '/run', '/sbin', '/sys', '/tmp', '/usr', '/var', '/var/lib', '/var/run'];

    it.each(SYSTEM_DIRS)('refuses %s, which it would cover', (dir) => {
      expectThrowsVmprocError(() => validate({ sandboxDir: dir }), 'invalid-argument', 'sandbox_dir', `would cover ${dir}`);
    });

    it('refuses a parent of a system directory, naming the covered one', () => {
      expectThrowsVmprocError(() => validate({ sandboxDir: '/var/' }), 'invalid-argument', 'would cover /var');
    });

    it('refuses the root directory', () => {
      expectThrowsVmprocError(() => validate({ sandboxDir: '/' }), 'invalid-argument', 'sandbox_dir', 'root directory');
    });

    it.each(['/tmp/sandbox', '/var/lib/vmprocd/sandbox', '/srv/sandbox', '/run/vmprocd/sandbox', '/mnt/x'])(
      'accepts %s: a dedicated directory below a system directory covers nothing needed',
      (sandboxDir) => {
        expect(validate({ sandboxDir }).sandboxDir).toBe(sandboxDir);
      },
    );

    const cases: Array<[string, Partial<StartRequest>, Partial<StartDefaults>, string]> = [
      ['the socket', { sandboxDir: '/srv/sb', socketPath: '/srv/sb/x.sock' }, {}, 'socket_path'],
      ['the rootfs', { sandboxDir: '/srv/images' }, {}, 'rootfs_path'],
      ['the kernel', { sandboxDir: '/srv/k', kernelPath: '/srv/k/vmlinux', rootfsPath: '/data/rootfs.ext4' }, {}, 'kernel_path'],
      ['the VMM binary', { sandboxDir: '/srv/bin' }, { vmmBin: '/srv/bin/cloud-hypervisor' }, 'the VMM binary'],
      ['the netns dir', { sandboxDir: '/srv/ns' }, { netnsDir: '/srv/ns/netns' }, 'the network namespace directory'],
      ['the run dir', { sandboxDir: '/srv/state', socketPath: '/sockets/sb.sock' }, { runDir: '/srv/state/run' }, 'the run directory'],
      ['the run dir itself', { sandboxDir: '/srv/state', socketPath: '/sockets/sb.sock' }, { runDir: '/srv/state' }, 'the run directory'],
      ['the socket, by equality', { sandboxDir: '/srv/x.sock', socketPath: '/srv/x.sock' }, {}, 'socket_path'],
    ];

    it.each(cases)('refuses a sandbox_dir that contains %s', (_what, patch, defaultsPatch, named) => {
      expectThrowsVmprocError(
        () => validate(patch, { ...DEFAULTS, ...defaultsPatch }),
        'invalid-argument',
        'sandbox_dir',
        `contains ${named}`,
      );
    });

    it('compares whole path components: /srv/sb does not contain /srv/sb2', () => {
      expect(validate({ sandboxDir: '/srv/sb', rootfsPath: '/srv/sb2/rootfs.ext4', kernelPath: '/srv/sbx' }).sandboxDir).toBe('/srv/sb');
    });

    it('checks the normalised sandbox_dir', () => {
      expectThrowsVmprocError(() => validate({ sandboxDir: '/srv/x/../images/' }), 'invalid-argument', 'contains rootfs_path');
    });

    it('ignores the kernel in restore mode', () => {
      expect(validateStartRequest({ ...RESTORE, sandboxDir: '/srv/k' }, DEFAULTS).sandboxDir).toBe('/srv/k');
    });

    it('refuses a sandbox_dir that contains the restore snapshot directory', () => {
      expectThrowsVmprocError(
        () =>
          validateStartRequest(
            { ...RESTORE, sandboxDir: '/srv/snapshots', restore: { ...RESTORE_SPEC, sourceUrl: 'file:///srv/snapshots/s1' } },
            DEFAULTS,
          ),
        'invalid-argument',
        'sandbox_dir',
      );
    });
  });

  describe('system trees', () => {
    it.each(['/usr/lib/vmprocd', '/usr/bin/x', '/etc/ssl/sbx', '/dev/net/x', '/proc/sbx', '/sys/fs/x', '/lib64/sbx'])(
      'refuses a sandbox_dir inside %s-like system trees',
      (sandboxDir) => {
        expectThrowsVmprocError(() => validateStartRequest({ ...BOOT, sandboxDir }, DEFAULTS), 'invalid-argument', 'sandbox_dir');
      },
    );
  });

  describe('ready timeout', () => {
    it.each([1, 0.5, 5000, 600_000])('accepts %p ms', (readyTimeoutMs) => {
      expect(validate({ readyTimeoutMs }).readyTimeoutMs).toBe(readyTimeoutMs);
    });

    it.each([0, -1, 600_001, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])('refuses %p ms', (readyTimeoutMs) => {
      expectThrowsVmprocError(() => validate({ readyTimeoutMs }), 'invalid-argument', 'ready_timeout', '600s');
    });
  });
});
