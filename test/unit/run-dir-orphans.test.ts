/**
 * The run dir's orphan launch files, on a temp dir (no root): the status paths recovery would
 * sweep are reported first, so an exit whose clean-up a killed daemon left unfinished can have its
 * socket files released before its status file goes.
 */
import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunDirLayout } from '../../src/host/run-dir-layout.js';

let runDir: string;

beforeAll(async () => {
  runDir = await mkdtemp(join(tmpdir(), 'vmprocd-orphans-'));
  await mkdir(join(runDir, 'exits'));
  for (const name of ['a.1.status', 'a.1.status.pids', 'b.2.status', 'b.2.status.tmp', 'c.3.status']) await writeFile(join(runDir, 'exits', name), '');
});

afterAll(async () => {
  await rm(runDir, { recursive: true, force: true });
});

it('reports each orphan launch once, by its status path, then removes exactly those', async () => {
  const layout = new RunDirLayout(runDir);
  const kept = [{ logPath: join(runDir, 'logs/c.log'), statusPath: join(runDir, 'exits/c.3.status') }];
  expect([...(await layout.orphanStatusPaths(kept))].sort()).toEqual([join(runDir, 'exits/a.1.status'), join(runDir, 'exits/b.2.status')]);
  await layout.removeOrphanLaunchFiles(kept);
  expect(await readdir(join(runDir, 'exits'))).toEqual(['c.3.status']);
});
