import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmprocError } from '../../src/errors.js';
import { encodeRequest, type SpawnRequest, Spawner } from '../../src/launch/spawner.js';
import { UNKNOWN_START_TIME } from '../../src/core/domain.js';
import { expectThrowsVmprocError, expectVmprocError, rejectionOf } from './support/errors.js';

/**
 * A stand-in for `vmprocd-reaper --spawner`: reads length-framed requests from stdin and answers as
 * each request's env tells it:
 * - FAKE_ANSWER: lines to print, `{id}` replaced by the request's ID (none: the request is held);
 * - FAKE_FIELDS: a file to write the request's decoded fields to (JSON);
 * - FAKE_EXIT: exit with this code after answering; FAKE_SIGNAL: kill itself with this signal.
 * It exits when stdin ends, as the real helper does.
 */
const fakeHelper = (lingerMs: number) => `#!/usr/bin/env node
// How long it stays after stdin ends.
const LINGER_MS = ${lingerMs};
const { writeFileSync } = require('node:fs');
let buffer = Buffer.alloc(0);
if (process.argv[2] !== '--spawner') { process.stderr.write('expected --spawner\\n'); process.exit(64); }
process.stdin.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  while (buffer.length >= 4) {
    const length = buffer.readUInt32LE(0);
    if (buffer.length < 4 + length) break;
    const payload = buffer.subarray(4, 4 + length).toString('utf8');
    buffer = buffer.subarray(4 + length);
    handle(payload);
  }
});
process.stdin.on('end', () => setTimeout(() => process.exit(0), LINGER_MS));
function handle(payload) {
  if (!payload.endsWith('\\0')) throw new Error('payload does not end with NUL');
  const fields = payload.slice(0, -1).split('\\0');
  const [id, statusPath, logPath, kind] = fields;
  let at = kind === 'sandbox' ? 7 : 4;
  const linkc = Number(fields[at++]);
  const links = fields.slice(at, at + 4 * linkc); at += 4 * linkc;
  const argc = Number(fields[at++]);
  const argv = fields.slice(at, at + argc); at += argc;
  const envc = Number(fields[at++]);
  const envList = fields.slice(at, at + envc);
  const env = Object.fromEntries(envList.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
  if (env.FAKE_FIELDS) writeFileSync(env.FAKE_FIELDS, JSON.stringify({ fields, length: payload.length, id, statusPath, logPath, kind, links, argv, env: envList }));
  if (env.FAKE_ANSWER) process.stdout.write(env.FAKE_ANSWER.split('{id}').join(id) + '\\n');
  if (env.FAKE_SIGNAL) process.kill(process.pid, env.FAKE_SIGNAL);
  if (env.FAKE_EXIT) process.stdout.write('', () => process.exit(Number(env.FAKE_EXIT)));
}
`;

let dir: string;
let helper: string;
const spawners: Spawner[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmprocd-spawner-'));
  helper = join(dir, 'fake-spawner');
  await writeFile(helper, fakeHelper(0));
  await chmod(helper, 0o755);
  for (const [path, lingerMs] of [[lingering(300), 300], [lingering(60_000), 60_000]] as const) {
    await writeFile(path, fakeHelper(lingerMs));
    await chmod(path, 0o755);
  }
});

afterEach(async () => {
  await Promise.all(spawners.splice(0).map((spawner) => stop(spawner)));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Closes the helper and waits until it has ended. */
async function stop(spawner: Spawner): Promise<void> {
  if (!spawner.alive) return;
  await within(spawner.close(), 3000, 'the helper did not end after close()');
}

/** A fake helper that stays `lingerMs` after its stdin ends. */
function lingering(lingerMs: number): string {
  return join(dir, `fake-spawner-lingering-${lingerMs}`);
}

async function start(bin = helper): Promise<Spawner> {
  const spawner = await Spawner.start(bin);
  spawners.push(spawner);
  return spawner;
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function request(id: string, env: Record<string, string> = {}, overrides: Partial<SpawnRequest> = {}): SpawnRequest {
  return {
    id,
    statusPath: `/run/vmprocd/exits/${id}.1.status`,
    logPath: `/run/vmprocd/logs/${id}.log`,
    argv: ['/usr/bin/cloud-hypervisor', '--api-socket', `path=/run/vmprocd/${id}.sock`],
    env: { PATH: '/usr/bin:/bin', ...env },
    ...overrides,
  };
}

/** The first call of a listener registered with `register`, bounded. */
function nextCall<A extends unknown[]>(register: (listener: (...args: A) => void) => void): Promise<A> {
  return within(new Promise<A>((resolve) => register((...args) => resolve(args))), 3000, 'no call within 3 s');
}

describe('encodeRequest', () => {
  it('frames an exec request: 4-byte LE length, then NUL-terminated fields', () => {
    const bytes = encodeRequest({ id: 'sb-1', statusPath: '/s', logPath: '/l', argv: ['/bin/vmm', '-v'], env: { A: '1', B: 'x=y' } });
    const payload = 'sb-1\0/s\0/l\0exec\x000\x002\0/bin/vmm\0-v\x002\0A=1\0B=x=y\0';
    expect(bytes.readUInt32LE(0)).toBe(Buffer.byteLength(payload));
    expect(bytes.subarray(4).toString('utf8')).toBe(payload);
  });

  it('frames a sandbox request with its three fields, and each link as name, root, relative path, check', () => {
    const sandbox = { dir: '/sb', netnsPath: '/var/run/netns/n', netnsName: 'n' };
    const links = [{ name: 'rootfs.ext4', root: '/img', path: '/img/r', allowBlock: true }];
    const bytes = encodeRequest({ id: 'x', statusPath: '/s', logPath: '/l', sandbox, links, argv: [], env: {} });
    expect(bytes.subarray(4).toString('utf8')).toBe('x\0/s\0/l\0sandbox\0/sb\0/var/run/netns/n\0n\x001\0rootfs.ext4\0/img\0r\0file-or-block\x000\x000\0');
  });

  it('counts the length in bytes, not characters', () => {
    const bytes = encodeRequest({ id: 'é', statusPath: '€', logPath: '/l', argv: [], env: {} });
    expect(bytes.readUInt32LE(0)).toBe(bytes.length - 4);
    expect(bytes.length - 4).toBe(Buffer.byteLength('é\0€\0/l\0exec\x000\x000\x000\0'));
  });

  it.each([
    ['the id', { id: 'a\0b' }],
    ['an argument', { argv: ['/bin/vmm', 'x\0y'] }],
    ['an environment value', { env: { A: 'x\0' } }],
    ['the status path', { statusPath: '/s\0' }],
  ])('refuses a NUL byte in %s', (_what, overrides) => {
    expectThrowsVmprocError(() => encodeRequest({ ...request('ok'), ...overrides }), 'invalid-argument', 'NUL');
  });
});

describe('Spawner.start', () => {
  it('starts the helper with --spawner and reports it alive', async () => {
    const spawner = await start();
    expect(spawner.alive).toBe(true);
  });

  it('fails with failed-precondition when the binary cannot run', async () => {
    const missing = join(dir, 'no-such-helper');
    expectVmprocError(await rejectionOf(Spawner.start(missing)), 'failed-precondition', 'cannot run', missing, '--spawner');
  });

  it('fails with failed-precondition when the file is not executable', async () => {
    const plain = join(dir, 'not-executable');
    await writeFile(plain, fakeHelper(0), { mode: 0o644 });
    expectVmprocError(await rejectionOf(Spawner.start(plain)), 'failed-precondition', 'cannot run', plain);
  });
});

describe('Spawner.spawn', () => {
  // One helper for these tests (each uses its own IDs): starting a Node helper costs ~100 ms.
  let shared: Spawner;
  beforeAll(async () => {
    shared = await Spawner.start(helper);
  });
  afterAll(async () => {
    await stop(shared);
  });
  const start = async () => shared;

  it('sends the framed request the helper decodes', async () => {
    const spawner = await start();
    const out = join(dir, 'fields-exec.json');
    await spawner.spawn(request('sb-1', { FAKE_FIELDS: out, FAKE_ANSWER: 'spawned {id} 1 2 0 1 1' }));
    const got = JSON.parse(await readFile(out, 'utf8'));
    expect(got).toMatchObject({
      id: 'sb-1',
      statusPath: '/run/vmprocd/exits/sb-1.1.status',
      logPath: '/run/vmprocd/logs/sb-1.log',
      kind: 'exec',
      argv: ['/usr/bin/cloud-hypervisor', '--api-socket', 'path=/run/vmprocd/sb-1.sock'],
      env: ['PATH=/usr/bin:/bin', `FAKE_FIELDS=${out}`, 'FAKE_ANSWER=spawned {id} 1 2 0 1 1'],
    });
  });

  it('sends a sandbox request', async () => {
    const spawner = await start();
    const out = join(dir, 'fields-sandbox.json');
    const sandbox = { dir: '/run/vmprocd/sandbox/s', netnsPath: '/var/run/netns/s', netnsName: 's' };
    const links = [{ name: 'rootfs.ext4', root: '/srv/images', path: '/srv/images/a/r.ext4', allowBlock: false }];
    await spawner.spawn(request('s', { FAKE_FIELDS: out, FAKE_ANSWER: 'spawned {id} 1 2 0 1 1' }, { sandbox, links }));
    const got = JSON.parse(await readFile(out, 'utf8'));
    expect(got.kind).toBe('sandbox');
    expect(got.fields.slice(4, 7)).toEqual(['/run/vmprocd/sandbox/s', '/var/run/netns/s', 's']);
    expect(got.links).toEqual(['rootfs.ext4', '/srv/images', 'a/r.ext4', 'file']);
    expect(got.argv).toEqual(['/usr/bin/cloud-hypervisor', '--api-socket', 'path=/run/vmprocd/s.sock']);
  });

  it('resolves with the PIDs, log offset and exact bigint start times of a spawned answer', async () => {
    const spawner = await start();
    const spawned = await spawner.spawn(request('sb-1', { FAKE_ANSWER: 'spawned {id} 1234 1235 4096 18446744073709551615 98765' }));
    expect(spawned).toEqual({ reaperPid: 1234, vmmPid: 1235, logOffset: 4096, reaperStartTime: 18446744073709551615n, vmmStartTime: 98765n });
    expect(typeof spawned.vmmStartTime).toBe('bigint');
  });

  it.each([
    ['0 (unreadable)', '0', '0'],
    ['missing', '', ''],
    ['not a number', 'x', '-5'],
    ['a leading zero', '012', '00'],
  ])('maps start times that are %s to UNKNOWN_START_TIME', async (_what, reaperStart, vmmStart) => {
    const spawner = await start();
    const answer = `spawned {id} 10 11 0 ${reaperStart} ${vmmStart}`.trimEnd();
    const spawned = await spawner.spawn(request('sb-1', { FAKE_ANSWER: answer }));
    expect(spawned.reaperStartTime).toBe(UNKNOWN_START_TIME);
    expect(spawned.vmmStartTime).toBe(UNKNOWN_START_TIME);
    expect(spawned).toMatchObject({ reaperPid: 10, vmmPid: 11, logOffset: 0 });
  });

  it('rejects with the reason of a failed answer', async () => {
    const spawner = await start();
    const error = await rejectionOf(spawner.spawn(request('sb-1', { FAKE_ANSWER: 'failed {id} execve /usr/bin/cloud-hypervisor: No such file or directory' })));
    expectVmprocError(error, 'internal', 'cannot launch: execve /usr/bin/cloud-hypervisor: No such file or directory');
  });

  it('matches answers to requests by ID, in any order', async () => {
    const spawner = await start();
    const a = spawner.spawn(request('a'));
    const b = spawner.spawn(request('b', { FAKE_ANSWER: 'spawned b 20 21 0 2 2\nspawned a 10 11 0 1 1' }));
    await expect(b).resolves.toMatchObject({ reaperPid: 20, vmmPid: 21 });
    await expect(a).resolves.toMatchObject({ reaperPid: 10, vmmPid: 11 });
  });

  it('ignores answers for IDs it is not waiting for', async () => {
    const spawner = await start();
    const spawned = spawner.spawn(request('a', { FAKE_ANSWER: 'spawned other 1 2 0 1 1\nfailed nobody oops\nspawned a 5 6 7 8 9' }));
    await expect(spawned).resolves.toEqual({ reaperPid: 5, vmmPid: 6, logOffset: 7, reaperStartTime: 8n, vmmStartTime: 9n });
  });

  it('refuses a second launch of an ID already in flight, and takes it again once settled', async () => {
    const spawner = await start();
    const first = spawner.spawn(request('dup'));
    expectVmprocError(await rejectionOf(spawner.spawn(request('dup', { FAKE_ANSWER: 'spawned dup 1 2 0 1 1' }))), 'internal', 'dup', 'already in flight');
    // The first is still pending: answer it through another request's answer.
    await spawner.spawn(request('other', { FAKE_ANSWER: 'spawned dup 7 8 0 1 1\nspawned other 1 2 0 1 1' }));
    await expect(first).resolves.toMatchObject({ reaperPid: 7, vmmPid: 8 });
    await expect(spawner.spawn(request('dup', { FAKE_ANSWER: 'spawned dup 9 10 0 1 1' }))).resolves.toMatchObject({ reaperPid: 9 });
  });

  it('takes an ID again after a failed launch', async () => {
    const spawner = await start();
    await expect(spawner.spawn(request('x', { FAKE_ANSWER: 'failed x nope' }))).rejects.toBeInstanceOf(VmprocError);
    await expect(spawner.spawn(request('x', { FAKE_ANSWER: 'spawned x 1 2 0 1 1' }))).resolves.toMatchObject({ vmmPid: 2 });
  });
});

describe('Spawner.spawn: its own helper', () => {
  // spawn() registers the pending launch before encodeRequest() throws on a NUL byte: the
  // rejection reaches the caller, but the ID stays "in flight" forever.
  it('a request refused for a NUL byte does not leave its ID in flight', async () => {
    const spawner = await start();
    expectVmprocError(await rejectionOf(spawner.spawn(request('nul', {}, { argv: ['/bin/vmm', 'a\0b'] }))), 'invalid-argument', 'NUL');
    await expect(spawner.spawn(request('nul', { FAKE_ANSWER: 'spawned nul 1 2 0 1 1' }))).resolves.toMatchObject({ vmmPid: 2 });
  });
});

describe('Spawner notices', () => {
  it('passes the decoded status file content of an exited notice to every listener', async () => {
    const spawner = await start();
    const content = 'pid=1235 code=3 at_ms=5\nlog line ☃\n';
    const first = nextCall<[string, string | undefined]>((l) => spawner.onExited(l));
    const second = nextCall<[string, string | undefined]>((l) => spawner.onExited(l));
    await spawner.spawn(request('sb-1', { FAKE_ANSWER: `spawned {id} 1 2 0 1 1\nexited /run/vmprocd/exits/sb-1.1.status ${Buffer.from(content).toString('base64')}` }));
    await expect(first).resolves.toEqual(['/run/vmprocd/exits/sb-1.1.status', content]);
    await expect(second).resolves.toEqual(['/run/vmprocd/exits/sb-1.1.status', content]);
  });

  it('passes undefined for an exited notice without content', async () => {
    const spawner = await start();
    const exited = nextCall<[string, string | undefined]>((l) => spawner.onExited(l));
    await spawner.spawn(request('sb-1', { FAKE_ANSWER: 'spawned {id} 1 2 0 1 1\nexited /x/sb-1.status' }));
    await expect(exited).resolves.toEqual(['/x/sb-1.status', undefined]);
  });

  it('passes the reaper PID of a reaped notice', async () => {
    const spawner = await start();
    const reaped = nextCall<[number]>((l) => spawner.onReaped(l));
    await spawner.spawn(request('sb-1', { FAKE_ANSWER: 'spawned {id} 1 2 0 1 1\nreaped 31337' }));
    await expect(reaped).resolves.toEqual([31337]);
  });

  it('delivers notices in order, without settling a pending launch', async () => {
    const spawner = await start();
    const seen: string[] = [];
    spawner.onReaped((pid) => seen.push(`reaped ${pid}`));
    spawner.onExited((path, content) => seen.push(`exited ${path} ${content ?? '-'}`));
    const held = spawner.spawn(request('held'));
    // A notice naming the held ID as its path must not be taken for its answer.
    await spawner.spawn(request('n', { FAKE_ANSWER: `exited held\nreaped 1\nreaped 2\nexited /p ${Buffer.from('c').toString('base64')}\nspawned n 1 2 0 1 1` }));
    expect(seen).toEqual(['exited held -', 'reaped 1', 'reaped 2', 'exited /p c']);
    await spawner.spawn(request('m', { FAKE_ANSWER: 'spawned held 3 4 0 1 1\nspawned m 1 2 0 1 1' }));
    await expect(held).resolves.toMatchObject({ reaperPid: 3 });
  });
});

describe('Spawner: the helper ends', () => {
  it('rejects pending launches with unavailable and fires onExit when the helper exits', async () => {
    const spawner = await start();
    const exit = nextCall<[]>((l) => spawner.onExit(l));
    const held = spawner.spawn(request('held'));
    const dying = spawner.spawn(request('dying', { FAKE_EXIT: '3' }));
    expectVmprocError(await rejectionOf(held), 'unavailable', 'exit code 3', 'retry');
    expectVmprocError(await rejectionOf(dying), 'unavailable');
    await exit;
    expect(spawner.alive).toBe(false);
    expectVmprocError(await rejectionOf(spawner.spawn(request('late'))), 'unavailable', 'not running');
  });

  it('names the signal that killed the helper', async () => {
    const spawner = await start();
    const held = spawner.spawn(request('held'));
    spawner.spawn(request('kill', { FAKE_SIGNAL: 'SIGKILL' })).catch(() => undefined);
    expectVmprocError(await rejectionOf(held), 'unavailable', 'SIGKILL');
  });

  it('fires every onExit listener once', async () => {
    const spawner = await start();
    let calls = 0;
    spawner.onExit(() => calls++);
    spawner.onExit(() => calls++);
    await stop(spawner);
    expect(calls).toBe(2);
    expect(spawner.alive).toBe(false);
  });

  it('close() resolves only once the helper has exited, not when its stdin is closed', async () => {
    const spawner = await start(lingering(300));
    const startedAt = Date.now();
    await spawner.close();
    expect({ alive: spawner.alive, waitedForIt: Date.now() - startedAt >= 250 }).toEqual({ alive: false, waitedForIt: true });
  });

  it('close() kills a helper that does not end within the grace period', async () => {
    const spawner = await start(lingering(60_000));
    const startedAt = Date.now();
    await within(spawner.close(100), 3000, 'close() did not kill a lingering helper');
    expect({ alive: spawner.alive, killedSoon: Date.now() - startedAt < 2000 }).toEqual({ alive: false, killedSoon: true });
  });

  it('close() ends the helper (stdin closed) and rejects what was pending', async () => {
    const spawner = await start();
    const held = spawner.spawn(request('held'));
    await stop(spawner);
    expectVmprocError(await rejectionOf(held), 'unavailable', 'exit code 0');
  });
});
