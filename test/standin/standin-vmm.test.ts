/**
 * Process tests of the stand-in VMM (native/standin-vmm.c): the built binary is run directly (no namespaces)
 * and checked against the Cloud Hypervisor behaviour it imitates (/work/shared/cloud-hypervisor-api.md):
 * the API's exact wire bytes, VM state transitions, restore validation, signals, crashes, the socket lock
 * and the command line. Knobs reach it the way the daemon's launch provides them: $VMPROCD_SANDBOX_DIR with
 * a `rootfs.ext4` symlink, here pointing at a text file of `standin.*` lines.
 *
 * Build first: make -s -C native ../build/native/standin-vmm
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { makeStandinSnapshot, type StandinSnapshotOptions } from '../helpers/standin-snapshot.js';
import { buildRequest, RawConnection, rawRequest, type RawResponse } from './raw-http.js';

const BIN = fileURLToPath(new URL('../../build/native/standin-vmm', import.meta.url));
const GUEST = fileURLToPath(new URL('../../build/native/tiny-guest.elf', import.meta.url));
/** A VmConfig that boots the tiny guest with its serial console off. */
const GUEST_VM = JSON.stringify({ payload: { kernel: GUEST }, serial: { mode: 'Null' } });
const CHAIN_HEADER = 'Error: Cloud Hypervisor exited with the following chain of errors:';
const PING = buildRequest('GET', '/api/v1/vmm.ping');

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Vmm {
  child: ChildProcess;
  pid: number;
  dir: string;
  sock: string;
  /** Settles once the process has exited and its stdout/stderr are fully read. */
  exited: Promise<Exit>;
  stdout(): string;
  stderr(): string;
  running(): boolean;
}

interface StartOptions {
  /** `standin.*` lines for the knob file (sets VMPROCD_SANDBOX_DIR). */
  knobs?: string[];
  /** Raw knob file content instead of `knobs`. */
  knobFile?: Buffer;
  /** Replaces `--api-socket path=<sock>`. */
  args?: string[];
  dir?: string;
  sock?: string;
  sandboxDir?: string;
  detached?: boolean;
  stdio?: Array<'ignore' | 'pipe' | number>;
}

const running: Vmm[] = [];
const tempDirs: string[] = [];

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'standin-test-'));
  tempDirs.push(dir);
  return dir;
}

function start(options: StartOptions = {}): Vmm {
  const dir = options.dir ?? tempDir();
  const sock = options.sock ?? path.join(dir, 'api.sock');
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  if (options.sandboxDir !== undefined) env.VMPROCD_SANDBOX_DIR = options.sandboxDir;
  if (options.knobs || options.knobFile) {
    // Like the launch: the sandbox holds a symlink to the request's "rootfs", here the knob file.
    const sandbox = path.join(dir, 'sandbox');
    fs.mkdirSync(sandbox, { recursive: true });
    const knobFile = path.join(dir, 'knobs.txt');
    fs.writeFileSync(knobFile, options.knobFile ?? `# knobs for this test\n${(options.knobs ?? []).join('\n')}\n`);
    fs.symlinkSync(knobFile, path.join(sandbox, 'rootfs.ext4'));
    env.VMPROCD_SANDBOX_DIR = sandbox;
  }
  const child = spawn(BIN, options.args ?? ['--api-socket', `path=${sock}`], {
    env,
    stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'],
    detached: options.detached ?? false,
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  let done = false;
  const exited = new Promise<Exit>((resolve) =>
    child.once('close', (code, signal) => {
      done = true;
      resolve({ code, signal });
    }),
  );
  if (child.pid === undefined) throw new Error(`could not spawn ${BIN}`);
  const vmm: Vmm = {
    child,
    pid: child.pid,
    dir,
    sock,
    exited,
    stdout: () => stdout,
    stderr: () => stderr,
    running: () => !done && child.exitCode === null && child.signalCode === null,
  };
  running.push(vmm);
  return vmm;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls (every 5 ms) until `check` is true; fails after timeoutMs. */
async function waitFor(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Waits until GET vmm.ping answers 200 on sock (readiness as the daemon defines it). */
async function waitReady(vmm: Vmm, sock = vmm.sock, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!vmm.running()) throw new Error(`VMM exited before it was ready; stderr: ${vmm.stderr()}`);
    try {
      const r = await rawRequest(sock, 'GET', 'vmm.ping');
      if (r.status === 200) return;
    } catch {
      // socket not there or not listening yet
    }
    if (Date.now() > deadline) throw new Error(`VMM not ready after ${timeoutMs} ms; stderr: ${vmm.stderr()}`);
    await sleep(5);
  }
}

/** True once the process has SIGTERM (15) in its blocked mask (/proc/PID/status SigBlk). */
function signalsBlocked(pid: number): boolean {
  try {
    const mask = /^SigBlk:\s+([0-9a-f]+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return mask !== undefined && (BigInt(`0x${mask}`) & (1n << 14n)) !== 0n;
  } catch {
    return false;
  }
}

async function startReady(options: StartOptions = {}): Promise<Vmm> {
  const vmm = start(options);
  await waitReady(vmm);
  return vmm;
}

function api(vmm: Vmm, method: string, endpoint: string, body?: string): Promise<RawResponse> {
  return rawRequest(vmm.sock, method, endpoint, body);
}

async function info(vmm: Vmm): Promise<{ config: unknown; state: string; memory_actual_size: number }> {
  const r = await api(vmm, 'GET', 'vm.info');
  expect(r.status).toBe(200);
  return JSON.parse(r.body);
}

async function inspect(vmm: Vmm, sock = vmm.sock): Promise<Record<string, unknown>> {
  const r = await rawRequest(sock, 'GET', 'standin.inspect');
  expect(r.status).toBe(200);
  return JSON.parse(r.body);
}

/** A snapshot of the paused tiny guest, made by another stand-in (CH restores only from a complete one). */
async function snapshotDir(vmm: Vmm, options: StandinSnapshotOptions = {}): Promise<string> {
  const dir = path.join(vmm.dir, `snapshot-${Math.random().toString(36).slice(2)}`);
  await makeStandinSnapshot(dir, options);
  return dir;
}

beforeAll(() => {
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing: run make -s -C native ../build/native/standin-vmm`);
});

afterEach(async () => {
  const vmms = running.splice(0);
  for (const vmm of vmms) if (vmm.running()) vmm.child.kill('SIGKILL');
  await Promise.all(vmms.map((vmm) => vmm.exited));
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

describe('REST API', () => {
  it('answers ping with build_version, version, its pid and features', async () => {
    const vmm = await startReady();
    const r = await api(vmm, 'GET', 'vmm.ping');
    expect(r.status).toBe(200);
    // CH v53.0's release build: build_version is its git tag, version its crate version.
    expect(JSON.parse(r.body)).toEqual({
      build_version: 'v53.0',
      version: '53.0.0',
      pid: vmm.pid,
      features: ['io_uring', 'kvm'],
    });
  });

  it('reports the version from the standin.version knob, build_version as its release tag or its own knob', async () => {
    const vmm = await startReady({ knobs: ['standin.version=52.1.0'] });
    const r = await api(vmm, 'GET', 'vmm.ping');
    expect(JSON.parse(r.body)).toMatchObject({ build_version: 'v52.1', version: '52.1.0' });
    const odd = await startReady({ knobs: ['standin.version=54.0.1'] });
    expect(JSON.parse((await api(odd, 'GET', 'vmm.ping')).body)).toMatchObject({ build_version: 'v54.0.1', version: '54.0.1' });
    const dirty = await startReady({ knobs: ['standin.build_version=v53.0-7-gdeadbee-dirty'] });
    expect(JSON.parse((await api(dirty, 'GET', 'vmm.ping')).body)).toMatchObject({ build_version: 'v53.0-7-gdeadbee-dirty', version: '53.0.0' });
  });

  it('writes micro_http bytes: no reason phrase, no Content-Length on 204, keep-alive', async () => {
    const vmm = await startReady();
    const c = await RawConnection.open(vmm.sock);
    try {
      await c.write(buildRequest('PUT', '/api/v1/vm.create', '{"cpus":{"boot_vcpus":1}}'));
      const created = await c.nextResponse();
      expect(created.raw).toBe('HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n');

      // Same connection: keep-alive.
      await c.write(PING);
      const pong = await c.nextResponse();
      const body = `{"build_version":"v53.0","version":"53.0.0","pid":${vmm.pid},"features":["io_uring","kvm"]}`;
      expect(pong.raw).toBe(
        'HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n' +
          `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      expect(c.pendingBytes).toBe(0);
      expect(c.isClosed).toBe(false);
    } finally {
      c.close();
    }
  });

  it('serves pipelined requests in order and requests split across many writes', async () => {
    const vmm = await startReady();
    const c = await RawConnection.open(vmm.sock);
    try {
      await c.write(PING + buildRequest('GET', '/api/v1/nope') + PING);
      expect((await c.nextResponse()).status).toBe(200);
      expect((await c.nextResponse()).status).toBe(404);
      expect((await c.nextResponse()).status).toBe(200);

      const request = buildRequest('PUT', '/api/v1/vm.create', '{"memory":{"size":1073741824}}');
      for (const piece of [request.slice(0, 3), request.slice(3, 30), request.slice(30, -5), request.slice(-5)]) {
        await c.write(piece);
        await sleep(10);
      }
      expect((await c.nextResponse()).status).toBe(204);
      expect(await info(vmm)).toEqual({
        config: { memory: { size: 1073741824 } },
        state: 'Created',
        memory_actual_size: 1073741824,
      });
    } finally {
      c.close();
    }
  });

  it('answers Expect: 100-continue before reading the body', async () => {
    const vmm = await startReady();
    const c = await RawConnection.open(vmm.sock);
    try {
      const body = '{"cpus":{"boot_vcpus":2}}';
      await c.write(
        'PUT /api/v1/vm.create HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n' +
          `Content-Length: ${body.length}\r\n\r\n`,
      );
      const interim = await c.nextResponse();
      expect(interim.status).toBe(100);
      await c.write(body);
      expect((await c.nextResponse()).status).toBe(204);
    } finally {
      c.close();
    }
  });

  it('survives clients that disconnect mid-request or before reading the reply', async () => {
    const vmm = await startReady();
    const partial = await RawConnection.open(vmm.sock);
    await partial.write('PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"cpu');
    partial.close();
    const impatient = await RawConnection.open(vmm.sock);
    await impatient.write(PING + PING);
    impatient.close();
    const r = await api(vmm, 'GET', 'vmm.ping');
    expect(r.status).toBe(200);
  });

  it('answers an unknown path with 404 ["Not Found"]', async () => {
    const vmm = await startReady();
    for (const target of ['/api/v1/vm.nope', '/elsewhere', '/api/v2/vmm.ping']) {
      const c = await RawConnection.open(vmm.sock);
      await c.write(buildRequest('GET', target));
      const r = await c.nextResponse();
      c.close();
      expect(r.status).toBe(404);
      expect(r.body).toBe('["Not Found"]');
      expect(r.headers['content-type']).toBe('application/json');
    }
  });

  it('answers 400 for a wrong method, bad JSON, an unexpected body and a missing body', async () => {
    const vmm = await startReady();
    expect(await api(vmm, 'PUT', 'vmm.ping')).toMatchObject({ status: 400, body: '["Bad Request"]' });
    expect(await api(vmm, 'GET', 'vm.boot')).toMatchObject({ status: 400, body: '["Bad Request"]' });
    expect(await api(vmm, 'POST', 'vm.info')).toMatchObject({ status: 400, body: '["Bad Request"]' });

    const badJson = await api(vmm, 'PUT', 'vm.create', '{"cpus": ');
    expect(badJson.status).toBe(400);
    expect(JSON.parse(badJson.body)).toEqual(['Failed to deserialize JSON', expect.stringMatching(/EOF while parsing/)]);
    expect((await api(vmm, 'PUT', 'vm.create', '[1, 2]')).status).toBe(400);
    expect((await api(vmm, 'PUT', 'vm.create')).status).toBe(400);

    expect((await api(vmm, 'PUT', 'vm.create', '{}')).status).toBe(204);
    expect(await api(vmm, 'PUT', 'vm.boot', '{"x":1}')).toMatchObject({ status: 400, body: '["Bad Request"]' });
    expect((await info(vmm)).state).toBe('Created');
  });

  it('answers a malformed request line with 400 and closes the connection', async () => {
    const vmm = await startReady();
    const c = await RawConnection.open(vmm.sock);
    await c.write('this is not http\r\n\r\n');
    const r = await c.nextResponse();
    expect(r.status).toBe(400);
    await c.waitClosed();
    expect((await api(vmm, 'GET', 'vmm.ping')).status).toBe(200);
  });

  it('serves at most 10 connections: the 11th gets a 503 and is closed', async () => {
    const vmm = await startReady();
    const ten = await Promise.all(Array.from({ length: 10 }, () => RawConnection.open(vmm.sock)));
    try {
      // A reply on each proves the VMM has accepted all ten.
      for (const c of ten) {
        await c.write(PING);
        expect((await c.nextResponse()).status).toBe(200);
      }
      const eleventh = await RawConnection.open(vmm.sock);
      const r = await eleventh.nextResponse();
      expect(r.head.startsWith('HTTP/1.1 503\r\n')).toBe(true);
      expect(r.body).toBe('{ "error": "Too many open connections" }');
      await eleventh.waitClosed();

      // A freed slot is usable again (once the VMM has seen the close).
      ten.shift()?.close();
      const statuses: number[] = [];
      while (statuses.at(-1) !== 200 && statuses.length < 100) {
        statuses.push((await api(vmm, 'GET', 'vmm.ping')).status);
      }
      expect(statuses.at(-1)).toBe(200);
      expect(statuses.every((s) => s === 503 || s === 200)).toBe(true);
    } finally {
      for (const c of ten) c.close();
    }
  });
});

describe('VM lifecycle', () => {
  it('moves through Created, Running, Paused, Running, Created again after vm.shutdown, and delete', async () => {
    const vmm = await startReady();
    // CH v53 maps VmError::VmNotCreated to 404 (api/http/mod.rs api_error_status_code).
    const noVm = await api(vmm, 'GET', 'vm.info');
    expect(noVm.status).toBe(404);
    expect(JSON.parse(noVm.body)).toEqual(['Error from API', 'The VM info is not available', 'VM is not created']);
    expect(JSON.parse((await api(vmm, 'PUT', 'vm.resume')).body)).toEqual([
      'Error from API',
      'The VM could not resume',
      'VM is not running',
    ]);

    expect((await api(vmm, 'PUT', 'vm.create', GUEST_VM)).status).toBe(204);
    expect(await info(vmm)).toEqual({
      config: JSON.parse(GUEST_VM),
      state: 'Created',
      memory_actual_size: 536870912,
    });
    const again = await api(vmm, 'PUT', 'vm.create', '{}');
    expect(again.status).toBe(500);
    expect(JSON.parse(again.body)).toEqual(['Error from API', 'The VM could not be created', 'VM is already created']);

    expect((await api(vmm, 'PUT', 'vm.boot')).status).toBe(204);
    expect((await info(vmm)).state).toBe('Running');
    const notPaused = await api(vmm, 'PUT', 'vm.resume');
    expect(notPaused.status).toBe(500);
    expect(JSON.parse(notPaused.body)).toEqual([
      'Error from API',
      'The VM could not resume',
      'Cannot resume VM',
      'Failed to resume migratable component',
      'Invalid transition: InvalidStateTransition(Running, Running)',
    ]);

    expect((await api(vmm, 'PUT', 'vm.pause')).status).toBe(204);
    expect((await info(vmm)).state).toBe('Paused');
    expect((await api(vmm, 'PUT', 'vm.resume')).status).toBe(204);
    expect((await info(vmm)).state).toBe('Running');
    expect((await api(vmm, 'PUT', 'vm.shutdown')).status).toBe(204);
    // CH drops the Vm on shutdown and keeps the config: the state is Created, and it can boot again.
    expect((await info(vmm)).state).toBe('Created');
    expect((await api(vmm, 'PUT', 'vm.shutdown')).status).toBe(500);
    expect((await api(vmm, 'PUT', 'vm.delete')).status).toBe(204);
    expect((await api(vmm, 'GET', 'vm.info')).status).toBe(404);
  });

  it("fails vm.boot like CH for no kernel, a missing one and one that is not an ELF", async () => {
    const vmm = await startReady();
    const bad = path.join(vmm.dir, 'not-a-kernel');
    fs.writeFileSync(bad, 'not a kernel\n');
    const cases: Array<[unknown, string[]]> = [
      [{}, ['Failed to validate config', 'Payload configuration is not bootable', 'No bootitem provided: neither firmware nor kernel']],
      [{ payload: { kernel: `${vmm.dir}/missing` } }, ['Cannot open kernel file', 'No such file or directory (os error 2)']],
      [
        { payload: { kernel: bad } },
        [
          'Cannot load the kernel into memory',
          'Kernel Loader: failed to load bzImage kernel image: Kernel Loader: Invalid bzImage',
          'Kernel Loader: Invalid bzImage',
        ],
      ],
    ];
    for (const [config, chain] of cases) {
      expect((await api(vmm, 'PUT', 'vm.create', JSON.stringify(config))).status).toBe(204);
      const r = await api(vmm, 'PUT', 'vm.boot');
      expect({ status: r.status, chain: JSON.parse(r.body) }).toEqual({ status: 500, chain: ['Error from API', 'The VM could not boot', ...chain] });
      expect((await info(vmm)).state).toBe('Created');
      expect((await api(vmm, 'PUT', 'vm.delete')).status).toBe(204);
    }
  });

  it('snapshots only a paused VM, into an existing file:// directory', async () => {
    const vmm = await startReady();
    const dest = path.join(vmm.dir, 'snapshot-dest');
    fs.mkdirSync(dest);
    const body = JSON.stringify({ destination_url: `file://${dest}` });
    expect((await api(vmm, 'PUT', 'vm.snapshot', body)).status).toBe(500);
    await api(vmm, 'PUT', 'vm.create', GUEST_VM);
    await api(vmm, 'PUT', 'vm.boot');
    const running = await api(vmm, 'PUT', 'vm.snapshot', body);
    expect(JSON.parse(running.body)).toContain('Trying to snapshot while VM is running');
    await api(vmm, 'PUT', 'vm.pause');
    expect((await api(vmm, 'PUT', 'vm.snapshot', body)).status).toBe(204);
    expect(fs.readdirSync(dest).sort()).toEqual(['config.json', 'memory-ranges', 'state.json']);
    // CH creates each file with create_new: a second snapshot into the same directory fails.
    expect(JSON.parse((await api(vmm, 'PUT', 'vm.snapshot', body)).body)).toEqual([
      'Error from API',
      'The VM could not be snapshotted',
      'Cannot send VM snapshot',
      'Failed to send migratable component snapshot',
      'Error creating VM config snapshot file',
      'File exists (os error 17)',
    ]);
    const missing = JSON.stringify({ destination_url: `file://${dest}/missing` });
    expect((await api(vmm, 'PUT', 'vm.snapshot', missing)).status).toBe(500);
    expect((await api(vmm, 'PUT', 'vm.snapshot', '{}')).status).toBe(400);
  });
});

describe('vm.restore', () => {
  it('restores Paused by default (Copy) and reads the snapshot config', async () => {
    const vmm = await startReady();
    const dir = await snapshotDir(vmm, { memoryMib: 256 });
    const r = await api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: `file://${dir}` }));
    expect(r.raw).toBe('HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n');
    expect(await info(vmm)).toEqual({
      config: JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')),
      state: 'Paused',
      memory_actual_size: 268435456,
    });
    expect((await api(vmm, 'PUT', 'vm.resume')).status).toBe(204);
    expect((await info(vmm)).state).toBe('Running');
  });

  it('restores Running with OnDemand and resume: true; ignores unknown fields and net_fds', async () => {
    const vmm = await startReady();
    const body = JSON.stringify({
      source_url: `file://${await snapshotDir(vmm)}`,
      memory_restore_mode: 'OnDemand',
      resume: true,
      prefault: false,
      net_fds: [{ id: 'net0', num_fds: 1 }],
      some_future_field: { x: [1, 2, 3] },
    });
    expect((await api(vmm, 'PUT', 'vm.restore', body)).status).toBe(204);
    expect(await info(vmm)).toMatchObject({ config: {}, state: 'Running' });
  });

  it('accepts Copy with prefault: true', async () => {
    const vmm = await startReady();
    const body = JSON.stringify({ source_url: `file://${await snapshotDir(vmm)}`, memory_restore_mode: 'Copy', prefault: true });
    expect((await api(vmm, 'PUT', 'vm.restore', body)).status).toBe(204);
    expect((await info(vmm)).state).toBe('Paused');
  });

  it('rejects OnDemand with prefault: true with a 500 chain and leaves no VM', async () => {
    const vmm = await startReady();
    const body = { source_url: `file://${await snapshotDir(vmm)}`, memory_restore_mode: 'OnDemand', prefault: true };
    const r = await api(vmm, 'PUT', 'vm.restore', JSON.stringify(body));
    expect(r.status).toBe(500);
    // RestoreConfig::validate, once config.json is read (CH v53 lib.rs:2354-2359, config.rs:2882-2885).
    expect(JSON.parse(r.body)).toEqual([
      'Error from API',
      'The VM could not be restored',
      'Failed to validate config',
      "'prefault' cannot be combined with 'memory_restore_mode=ondemand'",
    ]);
    expect((await api(vmm, 'GET', 'vm.info')).status).toBe(404);
  });

  it('rejects a memory_restore_mode of the wrong case with 400 like a serde error', async () => {
    const vmm = await startReady();
    const dir = await snapshotDir(vmm);
    for (const mode of ['ondemand', 'copy', 'Lazy']) {
      const body = JSON.stringify({ source_url: `file://${dir}`, memory_restore_mode: mode });
      const r = await api(vmm, 'PUT', 'vm.restore', body);
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body)).toEqual([
        'Failed to deserialize JSON',
        `unknown variant \`${mode}\`, expected \`Copy\` or \`OnDemand\``,
      ]);
    }
    const wrongType = await api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: `file://${dir}`, resume: 'yes' }));
    expect(wrongType.status).toBe(400);
    expect((await api(vmm, 'PUT', 'vm.restore', '{"source_url": ')).status).toBe(400);
    expect((await api(vmm, 'PUT', 'vm.restore')).status).toBe(400);
  });

  it('fails with CH\'s 500 chain for a missing directory or a non-file URL, and the VMM stays up', async () => {
    const vmm = await startReady();
    const send = ['Error from API', 'The VM could not be restored', 'Cannot restore VM', 'Failed to send migratable component snapshot'];
    const absent = `${vmm.dir}/no-such-snapshot`;
    const missing = await api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: `file://${absent}` }));
    expect(missing.status).toBe(500);
    expect(JSON.parse(missing.body)).toEqual([...send, `Destination is not a directory: "${absent}"`]);
    const notFile = await api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: `http://example${vmm.dir}` }));
    expect(notFile.status).toBe(500);
    expect(JSON.parse(notFile.body)).toEqual([...send, `Could not extract path from URL: http://example${vmm.dir}`]);
    expect((await api(vmm, 'GET', 'vm.info')).status).toBe(404);
    expect((await api(vmm, 'GET', 'vmm.ping')).status).toBe(200);
  });

  it('is as strict as CH about the snapshot: each missing or broken file fails with CH\'s chain and leaves no VM', async () => {
    const vmm = await startReady();
    const good = await snapshotDir(vmm);
    const files = ['config.json', 'state.json', 'memory-ranges'];
    /** A copy of the good snapshot without `omit`, and with `write` files replaced. */
    const variant = (name: string, omit: string[], write: Record<string, string> = {}) => {
      const dir = path.join(vmm.dir, name);
      fs.mkdirSync(dir);
      for (const f of files) if (!omit.includes(f)) fs.copyFileSync(path.join(good, f), path.join(dir, f));
      for (const [f, text] of Object.entries(write)) fs.writeFileSync(path.join(dir, f), text);
      return dir;
    };
    const recv = ['Error from API', 'The VM could not be restored', 'Cannot restore VM', 'Failed to receive migratable component snapshot'];
    const enoent = 'No such file or directory (os error 2)';
    const empty = variant('empty', files);
    const noState = variant('no-state', ['state.json']);
    const cases: Array<[string, string[]]> = [
      [empty, [...recv, `Error opening VM config snapshot file "${empty}/config.json"`, enoent]],
      [noState, [...recv, `Error opening VM state snapshot file "${noState}/state.json"`, enoent]],
      [variant('no-memory', ['memory-ranges']), ['Error from API', 'The VM could not be restored', 'Memory manager error', 'Error opening snapshot file', enoent]],
      [variant('bad-config', [], { 'config.json': '{not json' }), [...recv, 'Error deserialising VM config snapshot', 'key must be a string at line 1 column 2']],
      [variant('bad-state', [], { 'state.json': '{}' }), [...recv, 'Error deserialising VM state snapshot', 'missing field `snapshots` at line 1 column 2']],
      [variant('no-payload', [], { 'config.json': '{}' }),
        ['Error from API', 'The VM could not be restored', 'Failed to validate config', 'Payload configuration is not bootable', 'No bootitem provided: neither firmware nor kernel']],
    ];
    for (const [dir, chain] of cases) {
      const r = await api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: `file://${dir}` }));
      expect({ dir, status: r.status, chain: JSON.parse(r.body) }).toEqual({ dir, status: 500, chain });
      expect((await api(vmm, 'GET', 'vm.info')).status).toBe(404);
    }
    // The complete snapshot still restores in the same VMM.
    expect((await api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: `file://${good}` }))).status).toBe(204);
  });

  it('refuses to restore over an existing VM', async () => {
    const vmm = await startReady();
    await api(vmm, 'PUT', 'vm.create', '{}');
    const r = await api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: `file://${await snapshotDir(vmm)}` }));
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toEqual(['Error from API', 'The VM could not be restored', 'VM is already created']);
  });

  it('fails with the standin.restore_error text', async () => {
    const text = 'Failed to open memory file "mémoire": Permission denied (os error 13)';
    const vmm = await startReady({ knobs: [`standin.restore_error=${text}`] });
    const r = await api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: `file://${await snapshotDir(vmm)}` }));
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toEqual(['Error from API', 'The VM could not be restored', text]);
    expect((await api(vmm, 'GET', 'vm.info')).status).toBe(404);
  });

  it('records the last restore request and counts attempts in standin.inspect', async () => {
    const vmm = await startReady();
    expect(await inspect(vmm)).toMatchObject({ last_restore: null, restore_count: 0, state: null });
    await api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: 'file:///nonexistent' }));
    const body = {
      source_url: `file://${await snapshotDir(vmm)}`,
      memory_restore_mode: 'OnDemand',
      resume: true,
      note: 'naïve "quoted" \\ text',
    };
    await api(vmm, 'PUT', 'vm.restore', `  ${JSON.stringify(body, null, 2)}\n`);
    expect(await inspect(vmm)).toMatchObject({ last_restore: body, restore_count: 2, state: 'Running' });
  });

  it('blocks the single control loop: a ping waits behind a slow restore', async () => {
    const vmm = await startReady({ knobs: ['standin.restore_delay_ms=300'] });
    const order: string[] = [];
    const t0 = Date.now();
    const restore = api(vmm, 'PUT', 'vm.restore', JSON.stringify({ source_url: `file://${await snapshotDir(vmm)}` })).then((r) => {
      order.push('restore');
      return r;
    });
    await sleep(30);
    const ping = api(vmm, 'GET', 'vmm.ping').then((r) => {
      order.push('ping');
      return r;
    });
    const [restored, pong] = await Promise.all([restore, ping]);
    expect(restored.status).toBe(204);
    expect(pong.status).toBe(200);
    expect(order).toEqual(['restore', 'ping']);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it('delays ping by standin.ping_delay_ms', async () => {
    const vmm = await startReady({ knobs: ['standin.ping_delay_ms=150'] });
    const t0 = Date.now();
    expect((await api(vmm, 'GET', 'vmm.ping')).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  });
});

describe('signals and shutdown', () => {
  it('on SIGTERM removes its socket (keeps the lock file) and exits 0', async () => {
    const vmm = await startReady();
    await api(vmm, 'PUT', 'vm.create', '{}');
    await api(vmm, 'PUT', 'vm.boot');
    vmm.child.kill('SIGTERM');
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(vmm.sock)).toBe(false);
    expect(fs.existsSync(`${vmm.sock}.lock`)).toBe(true);
    expect(vmm.stdout()).toBe('');
    expect(vmm.stderr()).toBe('');
  });

  it('on SIGINT does the same', async () => {
    const vmm = await startReady();
    vmm.child.kill('SIGINT');
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(vmm.sock)).toBe(false);
  });

  it('keeps a SIGTERM that arrives during start-up and exits 0 without ever binding', async () => {
    const vmm = start({ knobs: ['standin.socket_delay_ms=5000'] });
    // Any earlier and SIGTERM's default action would kill it, as it would kill CH.
    await waitFor('SIGTERM to be blocked', () => signalsBlocked(vmm.pid));
    vmm.child.kill('SIGTERM');
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(vmm.sock)).toBe(false);
  });

  it('binds only after standin.socket_delay_ms', async () => {
    const t0 = Date.now();
    const vmm = start({ knobs: ['standin.socket_delay_ms=200'] });
    await waitReady(vmm);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
  });

  it('with standin.sigterm_delay_ms keeps serving for that long after SIGTERM, then exits 0', async () => {
    const vmm = await startReady({ knobs: ['standin.sigterm_delay_ms=300'] });
    const t0 = Date.now();
    vmm.child.kill('SIGTERM');
    await sleep(50);
    expect((await api(vmm, 'GET', 'vmm.ping')).status).toBe(200);
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(fs.existsSync(vmm.sock)).toBe(false);
  });

  it('with standin.ignore_sigterm survives SIGTERM; SIGKILL leaves the socket behind', async () => {
    const vmm = await startReady({ knobs: ['standin.ignore_sigterm=1'] });
    vmm.child.kill('SIGTERM');
    await waitFor('the warning', () => /ignoring/.test(vmm.stderr()));
    vmm.child.kill('SIGINT');
    await waitFor('the second warning', () => vmm.stderr().split('\n').filter((l) => /ignoring/.test(l)).length === 2);
    expect((await api(vmm, 'GET', 'vmm.ping')).status).toBe(200);
    expect(vmm.running()).toBe(true);
    vmm.child.kill('SIGKILL');
    expect(await vmm.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(fs.existsSync(vmm.sock)).toBe(true);
  });

  it('vmm.shutdown replies 200 with an empty body, removes the socket and exits 0', async () => {
    const vmm = await startReady();
    const r = await api(vmm, 'PUT', 'vmm.shutdown');
    expect(r.raw).toBe(
      'HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n' +
        'Content-Type: application/json\r\nContent-Length: 0\r\n\r\n',
    );
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(vmm.sock)).toBe(false);
  });

  it('with standin.shutdown_no_reply exits 0 on vmm.shutdown without replying', async () => {
    const vmm = await startReady({ knobs: ['standin.shutdown_no_reply=1'] });
    const c = await RawConnection.open(vmm.sock);
    await c.write(buildRequest('PUT', '/api/v1/vmm.shutdown'));
    await c.waitClosed();
    expect(c.pendingBytes).toBe(0);
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(vmm.sock)).toBe(false);
  });
});

describe('crashes and start-up failures', () => {
  it('standin.crash_after_ms exits with standin.crash_exit_code and an error chain, leaving the socket', async () => {
    const t0 = Date.now();
    const vmm = start({ knobs: ['standin.crash_after_ms=100', 'standin.crash_exit_code=3'] });
    expect(await vmm.exited).toEqual({ code: 3, signal: null });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(95);
    expect(vmm.stderr()).toContain(CHAIN_HEADER);
    expect(vmm.stderr()).toMatch(/^ {2}0: .+\n {2}1: .*standin\.crash_after_ms/m);
    expect(fs.existsSync(vmm.sock)).toBe(true);
  });

  it('standin.crash_after_ms exits 1 by default', async () => {
    const vmm = start({ knobs: ['standin.crash_after_ms=0'] });
    expect(await vmm.exited).toEqual({ code: 1, signal: null });
  });

  it.each(['SIGSEGV', 'SIGABRT', 'SIGKILL'] as const)('standin.crash_signal=%s kills it with that signal', async (signal) => {
    const vmm = start({ knobs: ['standin.crash_after_ms=50', `standin.crash_signal=${signal}`] });
    expect(await vmm.exited).toEqual({ code: null, signal });
    expect(fs.existsSync(vmm.sock)).toBe(true);
  });

  it('standin.exit_before_socket exits with that code and a CH error chain, before any socket exists', async () => {
    const vmm = start({ knobs: ['standin.exit_before_socket=4'] });
    expect(await vmm.exited).toEqual({ code: 4, signal: null });
    expect(vmm.stderr()).toBe(
      `${CHAIN_HEADER}\n  0: Error creating hypervisor\n  1: Failed to open /dev/kvm (standin.exit_before_socket)\n`,
    );
    expect(fs.existsSync(vmm.sock)).toBe(false);
    expect(fs.existsSync(`${vmm.sock}.lock`)).toBe(false);
  });

  it('standin.no_socket stays alive without a socket and still exits 0 on SIGTERM', async () => {
    const vmm = start({ knobs: ['standin.no_socket=1'] });
    // Nothing to wait for (the point is that nothing happens): give it well over its normal start-up time.
    await sleep(150);
    expect(vmm.running()).toBe(true);
    expect(fs.existsSync(vmm.sock)).toBe(false);
    vmm.child.kill('SIGTERM');
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
  });

  it('writes standin.stderr_lines numbered lines to stderr', async () => {
    const vmm = await startReady({ knobs: ['standin.stderr_lines=3'] });
    vmm.child.kill('SIGTERM');
    await vmm.exited;
    expect(vmm.stderr()).toBe(
      'standin-vmm: stderr line 1 of 3\nstandin-vmm: stderr line 2 of 3\nstandin-vmm: stderr line 3 of 3\n',
    );
  });

  it('warns once per unknown or invalid knob and ignores binary garbage', async () => {
    // Deterministic pseudo-random bytes, as in the superblock area of a real ext4 image.
    let seed = 12345;
    const next = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    const garbage = Buffer.alloc(4096, 0).map((_, i) => (i < 1024 ? 0 : next()));
    const knobFile = Buffer.concat([
      garbage,
      Buffer.from(
        '\n# a comment\n\nnot.a.knob=1\nstandin.bogus=1\nstandin.ping_delay_ms=soon\n  standin.version = 53.0.0 \r\n',
      ),
    ]);
    const vmm = await startReady({ knobFile });
    expect(JSON.parse((await api(vmm, 'GET', 'vmm.ping')).body).version).toBe('53.0.0');
    vmm.child.kill('SIGTERM');
    await vmm.exited;
    const lines = vmm.stderr().trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/warning: unknown knob standin\.bogus/);
    expect(lines[1]).toMatch(/warning: invalid value 'soon' for knob standin\.ping_delay_ms/);
  });
});

describe('API socket ownership', () => {
  it('replaces a stale socket whose owner was SIGKILLed (lock not held)', async () => {
    const first = await startReady();
    first.child.kill('SIGKILL');
    await first.exited;
    expect(fs.existsSync(first.sock)).toBe(true);
    const second = await startReady({ dir: first.dir });
    expect(JSON.parse((await api(second, 'GET', 'vmm.ping')).body).pid).toBe(second.pid);
  });

  it('replaces a stale socket that has no lock file at all', async () => {
    const first = await startReady();
    first.child.kill('SIGKILL');
    await first.exited;
    fs.rmSync(`${first.sock}.lock`);
    const second = await startReady({ dir: first.dir });
    expect(JSON.parse((await api(second, 'GET', 'vmm.ping')).body).pid).toBe(second.pid);
  });

  it('a second instance on a live socket exits 1 with "already in use"; the first is untouched', async () => {
    const first = await startReady();
    const second = start({ dir: first.dir });
    expect(await second.exited).toEqual({ code: 1, signal: null });
    expect(second.stderr()).toContain(CHAIN_HEADER);
    expect(second.stderr()).toContain(`API socket ${first.sock} is already in use by another running instance`);
    expect(JSON.parse((await api(first, 'GET', 'vmm.ping')).body).pid).toBe(first.pid);
  });

  it('a socket path over 107 bytes exits 1 with an error chain and creates nothing', async () => {
    const dir = tempDir();
    const sock = path.join(dir, `${'x'.repeat(108 - dir.length - 1)}.sock`);
    expect(Buffer.byteLength(sock)).toBeGreaterThan(107);
    const vmm = start({ dir, sock });
    expect(await vmm.exited).toEqual({ code: 1, signal: null });
    expect(vmm.stderr()).toContain(CHAIN_HEADER);
    expect(vmm.stderr()).toContain('path must be shorter than SUN_LEN');
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('a socket path of exactly 107 bytes works', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 'y'.repeat(107 - dir.length - 1));
    expect(Buffer.byteLength(sock)).toBe(107);
    const vmm = await startReady({ dir, sock });
    expect((await api(vmm, 'GET', 'vmm.ping')).status).toBe(200);
  });
});

describe('command line', () => {
  it('accepts --api-socket as a bare path and as --api-socket=path=...', async () => {
    const dir = tempDir();
    const bareSock = path.join(dir, 'bare.sock');
    const bare = await startReady({ dir, sock: bareSock, args: ['--api-socket', bareSock] });
    expect((await api(bare, 'GET', 'vmm.ping')).status).toBe(200);
    const sock = path.join(dir, 'eq.sock');
    const eq = await startReady({ dir, sock, args: ['-v', `--api-socket=path=${sock}`] });
    expect((await api(eq, 'GET', 'vmm.ping')).status).toBe(200);
  });

  it('accepts --api-socket fd=N, a listening socket inherited from the parent', async () => {
    const dir = tempDir();
    const bound = path.join(dir, 'bound.sock');
    const alias = path.join(dir, 'alias.sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(bound, resolve));
    const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    const vmm = start({ dir, sock: alias, args: ['--api-socket', 'fd=3'], stdio: ['ignore', 'pipe', 'pipe', fd] });
    // Node must stop accepting on the socket, and closing its server unlinks the path: keep a hard link.
    fs.linkSync(bound, alias);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await waitReady(vmm);
    expect(await inspect(vmm)).toMatchObject({ api_socket: null, api_socket_fd: 3 });
    vmm.child.kill('SIGTERM');
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(alias)).toBe(true); // not its path to remove
  });

  it('prints the build version and migration protocols for -V and --version (features with -v) and exits 0', async () => {
    // Byte for byte what CH v53.0 prints (cloud-hypervisor/src/main.rs:921-931).
    for (const flag of ['-V', '--version']) {
      const vmm = start({ args: [flag] });
      expect(await vmm.exited).toEqual({ code: 0, signal: null });
      expect(vmm.stdout()).toBe('cloud-hypervisor v53.0\nMigration Protocol Versions: 0\n');
    }
    const verbose = start({ args: ['-v', '--version'] });
    expect(await verbose.exited).toEqual({ code: 0, signal: null });
    expect(verbose.stdout()).toBe('cloud-hypervisor v53.0\nMigration Protocol Versions: 0\nEnabled features: ["io_uring", "kvm"]\n');
    const custom = start({ args: ['-V'], knobs: ['standin.version=52.0.0'] });
    await custom.exited;
    expect(custom.stdout()).toBe('cloud-hypervisor v52.0\nMigration Protocol Versions: 0\n');
    // clap rejects the whole command line before --version is looked at.
    const bad = start({ args: ['--version', '--bogus'] });
    expect(await bad.exited).toEqual({ code: 2, signal: null });
    expect(bad.stdout()).toBe('');
  });

  it('prints usage for -h and --help and exits 0', async () => {
    for (const flag of ['-h', '--help']) {
      const vmm = start({ args: [flag] });
      expect(await vmm.exited).toEqual({ code: 0, signal: null });
      expect(vmm.stdout()).toMatch(/Usage: .*\n[\s\S]*--api-socket/);
    }
  });

  it.each([
    [['--bogus']],
    [[]],
    [['--api-socket']],
    [['--api-socket', '']],
    [['--api-socket', '/tmp/a.sock', '--api-socket', '/tmp/b.sock']],
    [['extra-positional']],
  ])('exits 2 with usage on stderr for %j', async (args) => {
    const vmm = start({ args });
    expect(await vmm.exited).toEqual({ code: 2, signal: null });
    expect(vmm.stderr()).toMatch(/^error: /);
    expect(vmm.stderr()).toContain('Usage:');
    expect(vmm.stdout()).toBe('');
  });

  it('exits 1 with an error chain for an unparseable fd=', async () => {
    const vmm = start({ args: ['--api-socket', 'fd=three'] });
    expect(await vmm.exited).toEqual({ code: 1, signal: null });
    expect(vmm.stderr()).toContain(CHAIN_HEADER);
  });
});

describe('standin.inspect', () => {
  it('reports process, namespace, sandbox and symlink facts', async () => {
    const dir = tempDir();
    const vmm = await startReady({ dir, knobs: ['standin.version=54.0.0'], detached: true });
    const sandbox = path.join(dir, 'sandbox');
    fs.symlinkSync('/boot/vmlinux-does-not-need-to-exist', path.join(sandbox, 'vmlinux'));
    const facts = await inspect(vmm);
    expect(facts).toEqual({
      pid: vmm.pid,
      ppid: process.pid,
      pgid: vmm.pid, // detached: its own process group and session
      sid: vmm.pid,
      netns: fs.readlinkSync('/proc/self/ns/net'),
      mntns: fs.readlinkSync('/proc/self/ns/mnt'),
      sandbox_dir: sandbox,
      sandbox_fstype: null, // a plain directory, not a mount point
      links: { vmlinux: '/boot/vmlinux-does-not-need-to-exist', 'rootfs.ext4': path.join(dir, 'knobs.txt') },
      files: { vmlinux: null, 'rootfs.ext4': path.join(dir, 'knobs.txt') },
      last_restore: null,
      restore_count: 0,
      argv: [BIN, '--api-socket', `path=${vmm.sock}`],
      state: null,
      api_socket: vmm.sock,
      api_socket_fd: null,
      version: '54.0.0',
    });
    expect(facts.netns).toMatch(/^net:\[\d+\]$/);
  });

  it('reports the fstype of a sandbox dir that is a mount point, and nulls without a sandbox', async () => {
    const inProc = await startReady({ sandboxDir: '/proc' });
    expect(await inspect(inProc)).toMatchObject({ sandbox_dir: '/proc', sandbox_fstype: 'proc' });
    const bare = await startReady();
    expect(await inspect(bare)).toMatchObject({
      sandbox_dir: null,
      sandbox_fstype: null,
      links: { vmlinux: null, 'rootfs.ext4': null },
    });
  });

  it('escapes strings so odd paths in argv stay valid JSON', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 'we"ird\\na\nme-é-☃.sock');
    const vmm = await startReady({ dir, sock });
    const facts = await inspect(vmm);
    expect(facts.argv).toEqual([BIN, '--api-socket', `path=${sock}`]);
    expect(facts.api_socket).toBe(sock);
  });
});
