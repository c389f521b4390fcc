// Regenerates gen/ (the TS and the Go module gen/go) into a scratch directory and fails when it
// differs from the committed tree: generated code is never edited by hand and must match proto/
// and the pinned generators exactly.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateGo } from './generate-go.mjs';

const scratch = mkdtempSync(join(tmpdir(), 'vmprocd-gen-'));
try {
  execFileSync('buf', ['generate', '--output', scratch], { stdio: 'inherit' });
  generateGo(scratch);
  execFileSync('diff', ['-r', '-u', 'gen', join(scratch, 'gen')], { stdio: 'inherit' });
  console.log('gen/ matches proto/');
} catch (error) {
  console.error(`gen/ is out of date with proto/ (${error.message.split('\n')[0]}): run \`npm run generate\` and commit the result`);
  process.exitCode = 1;
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
