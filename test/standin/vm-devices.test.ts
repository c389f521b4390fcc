/**
 * The stand-in VMM's host-side devices against Cloud Hypervisor v53's: the advisory OFD locks on disk
 * images (virtio-devices/src/block.rs try_lock_image, taken by Vm::boot and Vm::restore), the disks
 * opened by Vm::new, and the TAPs it attaches to (net_util's Tap::open_named: TUNSETIFF). Every chain and status below was read off a real CH v53.0 driving the tiny guest with
 * the same requests.
 *
 * Build first: npm run build:native
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { nativeBin } from '../../src/package-paths.js';
import { describeAsRoot } from '../helpers/root.js';
import { startStandin, type StandinProcess } from '../helpers/standin-process.js';

const started: StandinProcess[] = [];
const dirs: string[] = [];

function scratch(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'standin-dev-'));
  dirs.push(dir);
  return dir;
}

async function vmm(dir: string): Promise<StandinProcess> {
  const v = await startStandin({ dir });
  started.push(v);
  return v;
}

afterEach(async () => {
  await Promise.all(started.splice(0).map((v) => v.kill()));
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A sparse 1 MiB image, like the fixtures' rootfs files. */
function image(dir: string, name = 'disk.img'): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, 1 << 20);
  return p;
}

function guestVm(disks: object[], net?: object[]): object {
  return { payload: { kernel: nativeBin('tiny-guest.elf'), cmdline: 'console=ttyS0' }, disks, ...(net ? { net } : {}), serial: { mode: 'Null' } };
}

async function createAndBoot(v: StandinProcess, disks: object[], net?: object[]): Promise<{ status: number; body: string }> {
  expect((await v.api('PUT', 'vm.create', guestVm(disks, net))).status).toBe(204);
  const r = await v.api('PUT', 'vm.boot');
  return { status: r.status, body: r.body };
}

const lockChain = (type: 'Write' | 'Read', p: string, head = 'The VM could not boot') =>
  JSON.stringify([
    'Error from API',
    head,
    'Error locking disk images: Another instance likely holds a lock',
    'Cannot lock images of all block devices',
    `Failed to get ${type} lock for disk image: ${p}`,
    'The file is already locked',
  ]);

/** The OFD locks /proc/locks lists for the file at p: [type, start, end]. */
function locksOn(p: string): string[][] {
  const ino = fs.statSync(p).ino;
  return fs
    .readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f[1] === 'OFDLCK' && f[5]?.split(':')[2] === String(ino))
    .map((f) => [f[3]!, f[6]!, f[7]!]);
}

describe('disk image locks', () => {
  it('a second VMM booting the same read-write image fails at vm.boot with CH\'s chain; its Vm stays', async () => {
    const dir = scratch();
    const disk = image(dir);
    const [a, b] = [await vmm(dir), await vmm(dir)];
    expect(await createAndBoot(a, [{ path: disk }])).toEqual({ status: 204, body: '' });
    // CH's byte-range lock over [0, max(size, allocated)): 0..1048575 for a sparse 1 MiB file.
    expect(locksOn(disk)).toEqual([['WRITE', '0', '1048575']]);
    expect(await createAndBoot(b, [{ path: disk }])).toEqual({ status: 500, body: lockChain('Write', disk) });
    expect(JSON.parse((await b.api('GET', 'vm.info')).body).state).toBe('Created');
    // Vm::boot failed after Vm::new, and CH keeps that Vm: booting again is "already created".
    expect((await b.api('PUT', 'vm.boot')).body).toBe('["Error from API","The VM could not boot","VM is already created"]');
    expect(locksOn(disk)).toEqual([['WRITE', '0', '1048575']]);
  });

  it('shares read locks between read-only disks, and a write lock waits for both to go', async () => {
    const dir = scratch();
    const disk = image(dir);
    const [ro1, ro2, rw] = [await vmm(dir), await vmm(dir), await vmm(dir)];
    expect((await createAndBoot(ro1, [{ path: disk, readonly: true }])).status).toBe(204);
    expect((await createAndBoot(ro2, [{ path: disk, readonly: true }])).status).toBe(204);
    expect(locksOn(disk)).toEqual([['READ', '0', '1048575'], ['READ', '0', '1048575']]);
    expect(await createAndBoot(rw, [{ path: disk }])).toEqual({ status: 500, body: lockChain('Write', disk) });

    // vm.shutdown drops the Vm and with it the lock; then the writer wins and a reader is refused.
    expect((await ro1.api('PUT', 'vm.shutdown')).status).toBe(204);
    expect((await ro2.api('PUT', 'vm.shutdown')).status).toBe(204);
    expect(locksOn(disk)).toEqual([]);
    expect((await rw.api('PUT', 'vm.delete')).status).toBe(204);
    expect((await createAndBoot(rw, [{ path: disk }])).status).toBe(204);
    expect((await ro1.api('PUT', 'vm.boot')).body).toBe(lockChain('Read', disk));
  });

  it('releases the lock on vm.delete and when the VMM dies', async () => {
    const dir = scratch();
    const disk = image(dir);
    const a = await vmm(dir);
    expect((await createAndBoot(a, [{ path: disk }])).status).toBe(204);
    expect((await a.api('PUT', 'vm.delete')).status).toBe(204);
    expect(locksOn(disk)).toEqual([]);
    expect((await createAndBoot(a, [{ path: disk }])).status).toBe(204);
    await a.kill();
    expect(locksOn(disk)).toEqual([]);
    const b = await vmm(dir);
    expect((await createAndBoot(b, [{ path: disk }])).status).toBe(204);
  });

  it('locks the whole file for lock_granularity Full', async () => {
    const dir = scratch();
    const disk = image(dir);
    const a = await vmm(dir);
    expect((await createAndBoot(a, [{ path: disk, lock_granularity: 'Full' }])).status).toBe(204);
    expect(locksOn(disk)).toEqual([['WRITE', '0', 'EOF']]);
  });

  it('fails vm.boot with "Cannot open disk path" for a missing image and makes no Vm', async () => {
    const dir = scratch();
    const missing = path.join(dir, 'nope.img');
    const a = await vmm(dir);
    const chain = JSON.stringify([
      'Error from API',
      'The VM could not boot',
      'Error from device manager',
      'Cannot open disk path',
      `I/O error (path=${missing} op=open)`,
      'No such file or directory (os error 2)',
    ]);
    expect(await createAndBoot(a, [{ path: missing }])).toEqual({ status: 500, body: chain });
    expect(JSON.parse((await a.api('GET', 'vm.info')).body).state).toBe('Created');
    // No Vm was made, so the next boot tries again (and fails the same way).
    expect((await a.api('PUT', 'vm.boot')).body).toBe(chain);
  });

  it('a restore takes the snapshot\'s disk locks: it fails while another VMM holds the image and leaves no VM', async () => {
    const dir = scratch();
    const disk = image(dir);
    const snap = path.join(dir, 'snap');
    fs.mkdirSync(snap);
    const a = await vmm(dir);
    expect((await createAndBoot(a, [{ path: disk }])).status).toBe(204);
    expect((await a.api('PUT', 'vm.pause')).status).toBe(204);
    expect((await a.api('PUT', 'vm.snapshot', { destination_url: `file://${snap}` })).status).toBe(204);

    const b = await vmm(dir);
    const r = await b.api('PUT', 'vm.restore', { source_url: `file://${snap}` });
    expect({ status: r.status, body: r.body }).toEqual({ status: 500, body: lockChain('Write', disk, 'The VM could not be restored') });
    expect((await b.api('GET', 'vm.info')).status).toBe(404);

    // Once the first VMM is gone the same restore works, and holds the lock itself.
    await a.kill();
    expect((await b.api('PUT', 'vm.restore', { source_url: `file://${snap}` })).status).toBe(204);
    expect(locksOn(disk)).toEqual([['WRITE', '0', '1048575']]);
  });
});

describeAsRoot('TAPs', () => {
  const taps: string[] = [];
  /** A TAP name of our own in the host's network namespace (removed after the test). */
  const tapName = () => {
    const name = `sftap${process.pid % 10000}${taps.length}`;
    taps.push(name);
    return name;
  };
  afterEach(async () => {
    await Promise.all(started.splice(0).map((v) => v.kill()));
    for (const tap of taps.splice(0)) await execa('ip', ['link', 'del', tap], { reject: false });
  });

  const busyChain = JSON.stringify([
    'Error from API',
    'The VM could not boot',
    'Error from device manager',
    'Cannot create virtio-net device',
    'Failed to open taps',
    'Open tap device failed',
    'Unable to configure tap interface',
    'Device or resource busy (os error 16)',
  ]);

  it('a TAP another VMM holds is busy: vm.boot fails with CH\'s EBUSY chain, and CH\'s config loses its net', async () => {
    const tap = tapName();
    await execa('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    const dir = scratch();
    const [a, b] = [await vmm(dir), await vmm(dir)];
    const net = [{ tap, mac: '52:54:00:12:34:56' }];
    expect(await createAndBoot(a, [], net)).toEqual({ status: 204, body: '' });
    expect(await createAndBoot(b, [], net)).toEqual({ status: 500, body: busyChain });
    // Vm::new failed, so there is no Vm; and CH took `net` out of the config to build the devices
    // and never put it back: the retry boots a VM without a network.
    const info = JSON.parse((await b.api('GET', 'vm.info')).body);
    expect(info.state).toBe('Created');
    expect(info.config.net).toBeUndefined();
    expect((await b.api('PUT', 'vm.boot')).status).toBe(204);

    // Once the holder's VM is shut down the TAP is free again.
    expect((await a.api('PUT', 'vm.shutdown')).status).toBe(204);
    const c = await vmm(dir);
    expect((await createAndBoot(c, [], net)).status).toBe(204);
  });

  it('attaches to a TAP that does not exist by creating it, for as long as the VM lives', async () => {
    const tap = tapName();
    const a = await vmm(scratch());
    expect((await createAndBoot(a, [], [{ tap }])).status).toBe(204);
    expect(fs.existsSync(`/sys/class/net/${tap}`)).toBe(true);
    expect((await a.api('PUT', 'vm.delete')).status).toBe(204);
    expect(fs.existsSync(`/sys/class/net/${tap}`)).toBe(false);
  });
});
