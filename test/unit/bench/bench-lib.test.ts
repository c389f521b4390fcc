/**
 * The benchmarks' own helpers: the raw REST call every VM baseline is made of, and the section
 * update that lets `npm run bench` and `npm run bench:vm` share BENCHMARKS.md.
 */
import { afterEach, beforeEach, expect, it } from '@jest/globals';
import { readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { rawCall } from '../../../bench/lib/raw-ch.js';
import { updateSection } from '../../../bench/lib/report.js';
import { chBytes, makeTempDir, startFakeVmm, type FakeVmm } from '../vmm/fake-vmm.js';

let dir: string;
let cleanup: () => Promise<void>;
let fake: FakeVmm | undefined;

beforeEach(async () => ({ dir, cleanup } = await makeTempDir()));
afterEach(async () => {
  await fake?.close();
  fake = undefined;
  await cleanup();
});

it('rawCall sends one request with its JSON body and resolves on a 204 or a whole Content-Length body', async () => {
  const answers = [chBytes.noContent(), chBytes.json(200, { state: 'Running' })];
  fake = await startFakeVmm(path.join(dir, 'api.sock'), (_request, socket) => socket.write(answers.shift()!));
  await expect(rawCall(fake.socketPath, 'PUT', 'vm.snapshot', { destination_url: 'file:///s' })).resolves.toEqual({ status: 204, body: '' });
  await expect(rawCall(fake.socketPath, 'GET', 'vm.info')).resolves.toEqual({ status: 200, body: '{"state":"Running"}' });
  expect(fake.requests.map((r) => [r.method, r.path, r.body])).toEqual([
    ['PUT', '/api/v1/vm.snapshot', '{"destination_url":"file:///s"}'],
    ['GET', '/api/v1/vm.info', ''],
  ]);
});

it("rawCall rejects a non-2xx answer with the VMM's body, and a refused socket", async () => {
  fake = await startFakeVmm(path.join(dir, 'api.sock'), (_request, socket) => socket.write(chBytes.json(500, ['Error from API', 'The VM could not be paused'])));
  await expect(rawCall(fake.socketPath, 'PUT', 'vm.pause')).rejects.toThrow('PUT vm.pause: HTTP 500 ["Error from API","The VM could not be paused"]');
  await expect(rawCall(path.join(dir, 'none.sock'), 'PUT', 'vm.pause')).rejects.toThrow('ENOENT');
});

it('updateSection replaces its own section in place and keeps every other; a new one goes at the end', async () => {
  const file = path.join(dir, 'BENCHMARKS.md');
  await writeFile(file, '# Benchmarks\n\n<!-- section: a -->\nold a\n<!-- end section: a -->\n\nby hand\n');
  await updateSection(file, 'b', 'first b');
  await updateSection(file, 'a', 'new a');
  await updateSection(file, 'b', 'second b');
  expect(await readFile(file, 'utf8')).toBe(
    '# Benchmarks\n\n<!-- section: a -->\nnew a\n<!-- end section: a -->\n\nby hand\n\n<!-- section: b -->\nsecond b\n<!-- end section: b -->\n',
  );
});
