/**
 * The stand-in VMM's `--event-monitor` against Cloud Hypervisor v53's (event_monitor/src/lib.rs, the
 * `event!` calls in vmm/src/lib.rs and vm.rs, devices/src/pvpanic.rs): each event is serde_json's
 * to_string_pretty of {timestamp: {secs, nanos}, source, event, properties} followed by "\n\n", in the
 * order CH emits them for each API call, signal and guest action. The expected sequences were checked
 * against a real CH v53 driving the tiny guest.
 *
 * Build first: npm run build:native
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { rawRequest, type RawResponse } from './raw-http.js';

const BIN = fileURLToPath(new URL('../../build/native/standin-vmm', import.meta.url));
const GUEST = fileURLToPath(new URL('../../build/native/tiny-guest.elf', import.meta.url));

interface Event {
  timestamp: { secs: number; nanos: number };
  source: string;
  event: string;
  properties: Record<string, string> | null;
}

interface Vmm {
  child: ChildProcess;
  dir: string;
  sock: string;
  events: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
  /** The VMM's stdout: the guest's serial console with serial mode Tty. */
  stdout(): string;
}

const started: Vmm[] = [];

function start(args?: string[], dir = fs.mkdtempSync(path.join(os.tmpdir(), 'standin-events-'))): Vmm {
  const sock = path.join(dir, 'api.sock');
  const events = path.join(dir, 'events');
  const child = spawn(BIN, args ?? ['--api-socket', `path=${sock}`, '--event-monitor', `path=${events}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  const vmm = { child, dir, sock, events, exited, stderr: () => stderr, stdout: () => stdout };
  started.push(vmm);
  return vmm;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function startReady(args?: string[]): Promise<Vmm> {
  const vmm = start(args);
  for (let i = 0; i < 600; i++) {
    try {
      if ((await rawRequest(vmm.sock, 'GET', 'vmm.ping')).status === 200) return vmm;
    } catch {
      // not bound yet
    }
    await sleep(5);
  }
  throw new Error(`stand-in not ready; stderr: ${vmm.stderr()}`);
}

function api(vmm: Vmm, method: string, endpoint: string, body?: unknown): Promise<RawResponse> {
  return rawRequest(vmm.sock, method, endpoint, body === undefined ? undefined : JSON.stringify(body));
}

/** Splits the monitor's byte stream into events, checking each one's exact pretty-printed bytes. */
function parseEvents(text: string): Event[] {
  expect(text.endsWith('}\n\n')).toBe(true);
  return text
    .slice(0, -2)
    .split('}\n\n{')
    .map((chunk, i, all) => {
      const json = `${i === 0 ? '' : '{'}${chunk}${i === all.length - 1 ? '' : '}'}`;
      const event = JSON.parse(json) as Event;
      // serde_json::to_string_pretty: two-space indent, "key": value, fields in declaration order.
      const properties =
        event.properties === null
          ? 'null'
          : `{\n${Object.entries(event.properties).map(([k, v]) => `    ${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(',\n')}\n  }`;
      expect(json).toBe(
        `{\n  "timestamp": {\n    "secs": ${event.timestamp.secs},\n    "nanos": ${event.timestamp.nanos}\n  },\n` +
          `  "source": ${JSON.stringify(event.source)},\n  "event": ${JSON.stringify(event.event)},\n  "properties": ${properties}\n}`,
      );
      return event;
    });
}

function eventsOf(vmm: Vmm): Event[] {
  return parseEvents(fs.readFileSync(vmm.events, 'utf8'));
}

const names = (events: Event[]) => events.map((e) => `${e.source}/${e.event}`);

const VM_CONFIG = {
  cpus: { boot_vcpus: 1, max_vcpus: 2 },
  memory: { size: 64 << 20 },
  payload: { kernel: GUEST, cmdline: 'console=ttyS0 tick_ms=50' },
  serial: { mode: 'Null' },
  console: { mode: 'Off' },
};

/** The tiny guest on the serial console (stdout), with these cmdline options. */
const ttyGuest = (options: string, extra: object = {}) => ({
  ...VM_CONFIG,
  payload: { kernel: GUEST, cmdline: `console=ttyS0 tick_ms=50 ${options}`.trim() },
  serial: { mode: 'Tty' },
  ...extra,
});

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const ticks = (text: string) => [...text.matchAll(/^tiny-guest: tick (\d+)$/gm)].map((m) => Number(m[1]));

beforeAll(() => {
  for (const file of [BIN, GUEST]) if (!fs.existsSync(file)) throw new Error(`${file} is missing: run npm run build:native`);
});

afterEach(async () => {
  for (const vmm of started.splice(0)) {
    if (vmm.child.exitCode === null && vmm.child.signalCode === null) vmm.child.kill('SIGKILL');
    await vmm.exited;
    fs.rmSync(vmm.dir, { recursive: true, force: true });
  }
});

describe('--event-monitor', () => {
  it('truncates the file, makes it 0600, and writes "vmm"/"starting" before the API socket answers', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'standin-events-'));
    const events = path.join(dir, 'events');
    fs.writeFileSync(events, 'old content that must go\n'.repeat(100));
    start(['--api-socket', `path=${dir}/api.sock`, `--event-monitor=path=${events}`], dir);
    for (let i = 0; i < 600 && !fs.existsSync(`${dir}/api.sock`); i++) await sleep(5);
    expect(fs.readFileSync(events, 'utf8')).toMatch(
      /^\{\n {2}"timestamp": \{\n {4}"secs": 0,\n {4}"nanos": \d+\n {2}\},\n {2}"source": "vmm",\n {2}"event": "starting",\n {2}"properties": null\n\}\n\n$/,
    );
    // Created like CH creates it: mode 0666 under its umask 077.
    const fresh = await startReady();
    expect(fs.statSync(fresh.events).mode & 0o777).toBe(0o600);
  });

  it("emits CH's events, in CH's order, for every lifecycle call and refusal", async () => {
    const vmm = await startReady();
    const snap = path.join(vmm.dir, 'snap');
    fs.mkdirSync(snap);
    const steps: Array<[string, string, unknown, number]> = [
      ['PUT', 'vm.boot', undefined, 404], // no config: "booting", then "VM config is missing"
      ['PUT', 'vm.create', VM_CONFIG, 204], // nothing
      ['PUT', 'vm.pause', undefined, 500], // not booted: nothing
      ['PUT', 'vm.boot', undefined, 204],
      ['PUT', 'vm.boot', undefined, 500], // already booted: nothing
      ['PUT', 'vm.snapshot', { destination_url: `file://${snap}` }, 500], // "snapshotting", then refused while running
      ['PUT', 'vm.pause', undefined, 204],
      ['PUT', 'vm.pause', undefined, 500], // "pausing", then the invalid transition
      ['PUT', 'vm.snapshot', { destination_url: `file://${snap}` }, 204],
      ['PUT', 'vm.resume', undefined, 204],
      ['PUT', 'vm.resume', undefined, 500], // "resuming", then the invalid transition
      ['PUT', 'vm.reboot', undefined, 204],
      ['PUT', 'vm.shutdown', undefined, 204],
      ['PUT', 'vm.shutdown', undefined, 500], // nothing
      ['PUT', 'vm.boot', undefined, 204], // boots again from the kept config
      ['PUT', 'vm.delete', undefined, 204], // shuts the VM down first
      ['PUT', 'vm.delete', undefined, 204], // no VM: nothing
      ['PUT', 'vm.reboot', undefined, 404], // "rebooting", then "VM is not created"
      ['PUT', 'vmm.shutdown', undefined, 200],
    ];
    for (const [method, endpoint, body, status] of steps) {
      const r = await api(vmm, method, endpoint, body);
      expect({ endpoint, status: r.status, body: r.body }).toEqual({ endpoint, status, body: expect.any(String) });
    }
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    const events = eventsOf(vmm);
    expect(names(events)).toEqual([
      'vmm/starting',
      'vm/booting',
      'vm/booting',
      'vm/booted',
      'vm/snapshotting',
      'vm/pausing',
      'vm/paused',
      'vm/pausing',
      'vm/snapshotting',
      'vm/snapshotted',
      'vm/resuming',
      'vm/resumed',
      'vm/resuming',
      'vm/rebooting',
      'vm/rebooted',
      'vm/shutdown',
      'vm/booting',
      'vm/booted',
      'vm/shutdown',
      'vm/deleted',
      'vm/rebooting',
      'vmm/shutdown',
    ]);
    expect(events.every((e) => e.properties === null)).toBe(true);
    const ns = events.map((e) => e.timestamp.secs * 1e9 + e.timestamp.nanos);
    expect(ns).toEqual([...ns].sort((a, b) => a - b));
    expect(events.every((e) => e.timestamp.nanos >= 0 && e.timestamp.nanos < 1e9)).toBe(true);
  });

  it('restore is "restoring", "restored", then "resuming", "resumed" when resume is true', async () => {
    const first = await startReady();
    const snap = path.join(first.dir, 'snap');
    fs.mkdirSync(snap);
    await api(first, 'PUT', 'vm.create', VM_CONFIG);
    await api(first, 'PUT', 'vm.boot');
    await api(first, 'PUT', 'vm.pause');
    expect((await api(first, 'PUT', 'vm.snapshot', { destination_url: `file://${snap}` })).status).toBe(204);

    const paused = await startReady();
    expect((await api(paused, 'PUT', 'vm.restore', { source_url: `file://${snap}` })).status).toBe(204);
    expect(names(eventsOf(paused))).toEqual(['vmm/starting', 'vm/restoring', 'vm/restored']);

    const resumed = await startReady();
    expect((await api(resumed, 'PUT', 'vm.restore', { source_url: `file://${snap}`, resume: true })).status).toBe(204);
    expect(names(eventsOf(resumed))).toEqual(['vmm/starting', 'vm/restoring', 'vm/restored', 'vm/resuming', 'vm/resumed']);

    // A restore that fails before CH reads the config emits nothing.
    const failed = await startReady();
    expect((await api(failed, 'PUT', 'vm.restore', { source_url: `file://${first.dir}/none` })).status).toBe(500);
    expect(names(eventsOf(failed))).toEqual(['vmm/starting']);
  });

  it('SIGTERM shuts the VM down, deletes it, then the VMM: exit 0', async () => {
    const vmm = await startReady();
    await api(vmm, 'PUT', 'vm.create', VM_CONFIG);
    await api(vmm, 'PUT', 'vm.boot');
    vmm.child.kill('SIGTERM');
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    expect(names(eventsOf(vmm))).toEqual(['vmm/starting', 'vm/booting', 'vm/booted', 'vm/shutdown', 'vm/deleted', 'vmm/shutdown']);

    const bare = await startReady();
    bare.child.kill('SIGINT');
    await bare.exited;
    expect(names(eventsOf(bare))).toEqual(['vmm/starting', 'vmm/shutdown']);
  });

  it('fd=N writes to an inherited descriptor', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'standin-events-fd-'));
    const file = path.join(dir, 'events');
    const fd = fs.openSync(file, 'w');
    try {
      const sock = path.join(dir, 'api.sock');
      const child = spawn(BIN, ['--api-socket', `path=${sock}`, '--event-monitor', 'fd=3'], { stdio: ['ignore', 'ignore', 'pipe', fd] });
      const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
      for (let i = 0; i < 600 && !fs.existsSync(sock); i++) await sleep(5);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(names(parseEvents(fs.readFileSync(file, 'utf8')))).toEqual(['vmm/starting', 'vmm/shutdown']);
    } finally {
      fs.closeSync(fd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ['bogus', ['  0: Error parsing --event-monitor', '  1: unknown option: bogus']],
    ['path', ['  0: Error parsing --event-monitor', '  1: invalid syntax: path']],
    ['fd=abc', ['  0: Error parsing --event-monitor', '  1: unable to convert abc for fd']],
    ['fd=77', ['  0: Error doing event monitor I/O', '  1: Bad file descriptor (os error 9)']],
    ['path=/nonexistent/dir/events', ['  0: Error doing event monitor I/O', '  1: No such file or directory (os error 2)']],
  ])('--event-monitor %s exits 1 with CH error chain before any socket exists', async (value, lines) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'standin-events-'));
    const vmm = start(['--api-socket', `path=${dir}/api.sock`, '--event-monitor', value], dir);
    expect(await vmm.exited).toEqual({ code: 1, signal: null });
    expect(vmm.stderr()).toBe(`Error: Cloud Hypervisor exited with the following chain of errors:\n${lines.join('\n')}\n`);
    expect(fs.readdirSync(vmm.dir)).toEqual([]);
  });

  it('an empty --event-monitor value is "path or fd required", a single error', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'standin-events-'));
    const vmm = start(['--api-socket', `path=${dir}/api.sock`, '--event-monitor', ''], dir);
    expect(await vmm.exited).toEqual({ code: 1, signal: null });
    expect(vmm.stderr()).toBe('Error: Cloud Hypervisor exited with the following error:\n  Error parsing --event-monitor: path or fd required\n');
  });

  it('a guest reboot (reboot_after) is "rebooting", "rebooted": a new boot line and the count from 1', async () => {
    const vmm = await startReady();
    await api(vmm, 'PUT', 'vm.create', ttyGuest('reboot_after=2'));
    await api(vmm, 'PUT', 'vm.boot');
    await until('two reboots', () => (vmm.stdout().match(/tiny-guest: reboot\n/g) ?? []).length >= 2);
    const lines = vmm.stdout().split('\n');
    const boot = 'tiny-guest: boot cmdline=console=ttyS0 tick_ms=50 reboot_after=2 tsc_khz=';
    expect(lines[0]!.startsWith(boot)).toBe(true);
    expect(lines.slice(1, 4)).toEqual(['tiny-guest: tick 1', 'tiny-guest: tick 2', 'tiny-guest: reboot']);
    expect(lines[4]!.startsWith(boot)).toBe(true);
    expect(lines.slice(5, 8)).toEqual(['tiny-guest: tick 1', 'tiny-guest: tick 2', 'tiny-guest: reboot']);
    expect(names(eventsOf(vmm)).slice(0, 7)).toEqual([
      'vmm/starting',
      'vm/booting',
      'vm/booted',
      'vm/rebooting',
      'vm/rebooted',
      'vm/rebooting',
      'vm/rebooted',
    ]);
  });

  it('a guest power-off (poweroff_after) is vm shutdown, vm deleted, vmm shutdown, and the VMM exits 0', async () => {
    const vmm = await startReady();
    await api(vmm, 'PUT', 'vm.create', ttyGuest('poweroff_after=3'));
    await api(vmm, 'PUT', 'vm.boot');
    expect(await vmm.exited).toEqual({ code: 0, signal: null });
    expect(vmm.stdout().split('\n').slice(1)).toEqual(['tiny-guest: tick 1', 'tiny-guest: tick 2', 'tiny-guest: tick 3', 'tiny-guest: poweroff', '']);
    expect(names(eventsOf(vmm))).toEqual(['vmm/starting', 'vm/booting', 'vm/booted', 'vm/shutdown', 'vm/deleted', 'vmm/shutdown']);
    expect(fs.existsSync(vmm.sock)).toBe(false);
  });

  it('a guest panic (panic_after, pvpanic) is "guest"/"panic" with properties {event: panic}; the VM stays Running', async () => {
    const vmm = await startReady();
    await api(vmm, 'PUT', 'vm.create', ttyGuest('panic_after=2', { pvpanic: true }));
    await api(vmm, 'PUT', 'vm.boot');
    await until('the panic line', () => vmm.stdout().includes('tiny-guest: panic'));
    await sleep(150);
    expect(vmm.stdout().split('\n').slice(1)).toEqual(['tiny-guest: tick 1', 'tiny-guest: tick 2', 'tiny-guest: panic pvpanic=0xe7fffff0', '']);
    const events = eventsOf(vmm);
    expect(names(events)).toEqual(['vmm/starting', 'vm/booting', 'vm/booted', 'guest/panic']);
    expect(events[3]!.properties).toEqual({ event: 'panic' });
    expect(JSON.parse((await api(vmm, 'GET', 'vm.info')).body).state).toBe('Running');

    // Without a pvpanic device the guest says so and halts, and CH sees nothing.
    const plain = await startReady();
    await api(plain, 'PUT', 'vm.create', ttyGuest('panic_after=1'));
    await api(plain, 'PUT', 'vm.boot');
    await until('the panic line', () => plain.stdout().includes('tiny-guest: panic'));
    expect(plain.stdout()).toContain('tiny-guest: tick 1\ntiny-guest: panic pvpanic=none\n');
    expect(names(eventsOf(plain))).toEqual(['vmm/starting', 'vm/booting', 'vm/booted']);
  });
});

describe('the modelled tiny guest', () => {
  it('prints nothing while paused and carries on from the next number after resume', async () => {
    const vmm = await startReady();
    await api(vmm, 'PUT', 'vm.create', ttyGuest(''));
    await api(vmm, 'PUT', 'vm.boot');
    await until('tick 3', () => ticks(vmm.stdout()).length >= 3);
    await api(vmm, 'PUT', 'vm.pause');
    const paused = ticks(vmm.stdout()).at(-1)!;
    await sleep(250);
    expect(ticks(vmm.stdout()).at(-1)).toBe(paused);
    await api(vmm, 'PUT', 'vm.resume');
    await until('the next tick', () => ticks(vmm.stdout()).at(-1)! > paused);
    expect(ticks(vmm.stdout())).toEqual(Array.from({ length: ticks(vmm.stdout()).length }, (_, i) => i + 1));
  });

  it('writes serial mode File to serial.file, truncated at vm.create and again at each boot', async () => {
    const vmm = await startReady();
    const file = path.join(vmm.dir, 'serial.log');
    fs.writeFileSync(file, 'old\n');
    await api(vmm, 'PUT', 'vm.create', { ...VM_CONFIG, serial: { mode: 'File', file } });
    expect(fs.readFileSync(file, 'utf8')).toBe('');
    await api(vmm, 'PUT', 'vm.boot');
    await until('tick 3', () => ticks(fs.readFileSync(file, 'utf8')).length >= 3);
    await api(vmm, 'PUT', 'vm.shutdown');
    await api(vmm, 'PUT', 'vm.boot');
    await until('tick 1 again', () => ticks(fs.readFileSync(file, 'utf8')).length >= 1);
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^tiny-guest: boot cmdline=console=ttyS0 tick_ms=50 tsc_khz=\d+\ntiny-guest: tick 1\n/);
    expect(vmm.stdout()).toBe('');
  });

  it.each(['Copy', 'OnDemand'])('a snapshot restores (%s) in another VMM, paused, and carries on from the next number', async (mode) => {
    const first = await startReady();
    await api(first, 'PUT', 'vm.create', ttyGuest(''));
    await api(first, 'PUT', 'vm.boot');
    await until('tick 4', () => ticks(first.stdout()).length >= 4);
    await api(first, 'PUT', 'vm.pause');
    const snap = path.join(first.dir, 'snap');
    fs.mkdirSync(snap);
    expect((await api(first, 'PUT', 'vm.snapshot', { destination_url: `file://${snap}` })).status).toBe(204);
    const at = ticks(first.stdout()).at(-1)!;
    first.child.kill('SIGKILL');
    expect(fs.readdirSync(snap).sort()).toEqual(['config.json', 'memory-ranges', 'state.json']);
    expect(fs.statSync(path.join(snap, 'memory-ranges')).size).toBe(64 << 20);
    expect(JSON.parse(fs.readFileSync(path.join(snap, 'config.json'), 'utf8'))).toEqual(ttyGuest(''));
    expect(Object.keys(JSON.parse(fs.readFileSync(path.join(snap, 'state.json'), 'utf8')).snapshots).sort()).toEqual([
      'cpu-manager',
      'device-manager',
      'memory-manager',
    ]);

    const second = await startReady();
    expect((await api(second, 'PUT', 'vm.restore', { source_url: `file://${snap}`, memory_restore_mode: mode })).status).toBe(204);
    await sleep(150);
    expect(second.stdout()).toBe('');
    await api(second, 'PUT', 'vm.resume');
    await until('a tick', () => ticks(second.stdout()).length >= 2);
    expect(second.stdout()).not.toContain('tiny-guest: boot');
    expect(ticks(second.stdout()).slice(0, 2)).toEqual([at + 1, at + 2]);
  });
});
