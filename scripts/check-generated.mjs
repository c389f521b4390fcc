// Regenerates gen/ into a scratch directory and fails when it differs from the committed tree:
// generated code is never edited by hand and must match proto/ exactly.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const scratch = mkdtempSync(join(tmpdir(), 'vmprocd-gen-'));
try {
  execFileSync('buf', ['generate', '--output', scratch], { stdio: 'inherit' });
  execFileSync('diff', ['-r', '-u', 'gen', join(scratch, 'gen')], { stdio: 'inherit' });
  console.log('gen/ matches proto/');
} catch (error) {
  console.error('gen/ is out of date with proto/: run `npm run generate` and commit the result');
  process.exitCode = 1;
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
