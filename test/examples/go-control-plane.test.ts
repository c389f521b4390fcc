/**
 * examples/go-control-plane, the Go control plane: go vet, its own Go tests, go build, then the
 * binary against a real daemon (stand-in VMM) driving a VM through its life (boot, pause, resume,
 * hibernate, restore in another sandbox and network namespace, stop), checking each step's events,
 * the snapshot's files, the guest's console and the restored VM's config; checked from the daemon's
 * side too. And how it fails: a refused start, an unreachable daemon, a usage error, and a run
 * that fails half-way, which stops what it started.
 */
import { afterAll, afterEach, beforeAll, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitReason, LaunchMode, ProcessState } from '../../gen/vmprocess/v1/vmprocess_pb.js';
import { nativeBin } from '../../src/package-paths.js';
import { useGrpcSuite } from '../grpc/support.js';
import { go } from '../helpers/go.js';
import { addTap, createTestNetns, type TestNetns } from '../helpers/netns.js';
import { describeAsRoot } from '../helpers/root.js';

/** A cold module cache and build cache (a fresh CI machine) download and compile grpc-go: minutes. */
const BUILD_MS = 10 * 60_000;
const RUN_MS = 120_000;

describeAsRoot('examples/go-control-plane against a real daemon', () => {
  let binDir: string;
  let binary: string;
  let other: TestNetns;
  let kernelPath: string;
  let vetOutput: string;

  beforeAll(async () => {
    binDir = await mkdtemp(join(tmpdir(), 'vmpt-go-'));
    binary = join(binDir, 'go-control-plane');
    vetOutput = await go(['vet', './...', 'github.com/vmprocd/vmprocd/gen/go/...']);
    await go(['build', '-o', binary, '.']);
  }, BUILD_MS);
  afterAll(async () => {
    await other?.remove();
    if (binDir) await rm(binDir, { recursive: true, force: true });
  });

  const s = useGrpcSuite(async (fixture) => {
    await mkdir(join(fixture.root, 'snaps'));
    kernelPath = join(fixture.root, 'tiny-guest.elf');
    await copyFile(nativeBin('tiny-guest.elf'), kernelPath);
    return {};
  });
  beforeAll(async () => {
    await addTap(s.netns);
    other = await createTestNetns('vmpo');
    await addTap(other);
  });
  // Every VM here uses tap0 of the same namespaces: a test that fails half-way must not leave one.
  afterEach(() => s.stopLive());

  const snapsDir = () => join(s.fixture.root, 'snaps');
  async function controlPlane(sandbox: string, extra: string[] = [], rootfsKnobs = {}) {
    const args = [
      '-address', s.harness.address,
      '-kernel', kernelPath,
      '-rootfs', await s.fixture.rootfs(sandbox, rootfsKnobs),
      '-netns', s.netns.name,
      '-restore-netns', other.name,
      '-snapshots', snapsDir(),
      '-sandbox', sandbox,
      '-timeout', '90s',
      ...extra,
    ];
    return execa(binary, args, { reject: false, timeout: RUN_MS });
  }
  const noneLive = async () =>
    (await s.client.listProcesses({ states: [ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING] })).processes.map((p) => p.sandboxId);

  it('go vet finds nothing, and its own Go tests pass (reconnecting watches, resync, flags)', async () => {
    expect(vetOutput).toBe('');
    const out = await go(['test', '-count=1', './...']);
    expect(out).toMatch(/^ok\s+github\.com\/vmprocd\/vmprocd\/examples\/go-control-plane\s/m);
  }, BUILD_MS);

  it('boots a VM, pauses and resumes it, hibernates it, restores it in another sandbox and network namespace, and stops it', async () => {
    const id = s.id('go');
    const restored = `${id}-restored`;
    const run = await controlPlane(id);
    expect({ exitCode: run.exitCode, stderr: run.stderr }).toEqual({ exitCode: 0, stderr: '' });

    // What it says it did, step by step, in order.
    const steps = [
      `booted ${id}: pid `,
      `events of ${id} (boot): #`,
      `console of ${id}: tiny-guest: tick `,
      `paused ${id}: GetVmInfo says VM_STATE_PAUSED`,
      `resumed ${id}`,
      `events of ${id} (pause and resume): #`,
      `hibernated ${id} into file://${snapsDir()}/${id}-`,
      `: [config.json state.json memory-ranges] there`,
      `of ${id} on the stream: EXIT_REASON_STOPPED, snapshot file://`,
      `events of ${id} (hibernate): #`,
      `events of ${restored} (restore): #`,
      `restored ${restored} from file://${snapsDir()}/${id}-`,
      `with the snapshot's config; the guest carries on at tick `,
      `stopped ${restored}; exit #`,
      `events of ${restored} (stop): #`,
      `done: ${id} booted, paused, resumed and hibernated`,
    ];
    expect(stepMissing(run.stdout, steps)).toBeUndefined();

    // What the daemon saw: the hibernation's exit names the snapshot; the restore ran in the other
    // network namespace; both ended with STOPPED; nothing is left live.
    const hibernated = await s.recorder.exitOf(id);
    expect(hibernated.reason).toBe(ExitReason.STOPPED);
    expect(hibernated.snapshotUrl).toMatch(new RegExp(`^file://${snapsDir()}/${id}-`));
    expect(hibernated.message).toContain(`after a snapshot to ${hibernated.snapshotUrl}`);
    expect(existsSync(hibernated.snapshotUrl.slice('file://'.length))).toBe(true);
    expect(await readdir(snapsDir())).toContain(hibernated.snapshotUrl.slice(`file://${snapsDir()}/`.length));
    const restoredExit = await s.recorder.exitOf(restored);
    expect({ reason: restoredExit.reason, after: restoredExit.sequence > hibernated.sequence }).toEqual({ reason: ExitReason.STOPPED, after: true });
    expect(run.stdout).toContain(`(exits #${hibernated.sequence} and #${restoredExit.sequence})`);
    const p = (await s.client.getProcess({ sandboxId: restored })).process!;
    expect({ mode: p.mode, netns: p.networkNamespace, state: p.state }).toEqual({ mode: LaunchMode.RESTORE, netns: other.name, state: ProcessState.EXITED });
    expect(await noneLive()).toEqual([]);
  }, RUN_MS);

  it('a start the daemon refuses ends the run with its status code and message: exit 1', async () => {
    const id = s.id('go-notap');
    const run = await controlPlane(id, ['-tap', 'tap9']);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain(`go-control-plane: StartProcess ${id}: FAILED_PRECONDITION: `);
    expect(run.stderr).toContain('TAP device tap9 does not exist');
    expect((await s.recorder.exitOf(id)).reason).toBe(ExitReason.START_FAILED);
    expect(await noneLive()).toEqual([]);
  }, RUN_MS);

  it('a run that fails half-way stops the VM it started', async () => {
    const id = s.id('go-halfway');
    // Under /etc, outside the daemon's image roots: SnapshotVm is PERMISSION_DENIED, after the boot.
    const run = await controlPlane(id, ['-snapshots', '/etc']);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain(`go-control-plane: SnapshotVm ${id}: PERMISSION_DENIED: `);
    expect(run.stdout).toContain(`resumed ${id}`);
    expect(run.stdout).toContain(`cleaning up: stopped ${id}`);
    expect((await s.recorder.exitOf(id)).reason).toBe(ExitReason.STOPPED);
    expect(await noneLive()).toEqual([]);
  }, RUN_MS);

  it('a daemon it cannot reach: UNAVAILABLE, exit 1; a bad command line: exit 2, nothing sent', async () => {
    const unreachable = await execa(binary, ['-address', join(s.fixture.root, 'nobody.sock'), '-kernel', kernelPath, '-rootfs', kernelPath,
      '-netns', s.netns.name, '-restore-netns', other.name, '-snapshots', snapsDir()], { reject: false, timeout: RUN_MS });
    expect(unreachable.exitCode).toBe(1);
    expect(unreachable.stderr).toContain(`cannot reach vmprocd at ${join(s.fixture.root, 'nobody.sock')}: GetLatestSequence: UNAVAILABLE: `);
    const usage = await execa(binary, ['-kernel', kernelPath], { reject: false, timeout: RUN_MS });
    expect({ exitCode: usage.exitCode, stderr: usage.stderr.trim() }).toEqual({ exitCode: 2, stderr: 'go-control-plane: usage: -rootfs is required' });
  }, RUN_MS);
});

/** The first of `steps` that `output` does not have after the previous one, with the output; or undefined. */
function stepMissing(output: string, steps: readonly string[]): string | undefined {
  let from = 0;
  for (const step of steps) {
    const at = output.indexOf(step, from);
    if (at < 0) return `no "${step}" after the previous step in:\n${output}`;
    from = at + step.length;
  }
  return undefined;
}
