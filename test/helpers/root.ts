import { describe } from '@jest/globals';

/**
 * Suites that need root (mount and network namespaces) run only as root. Elsewhere they are
 * skipped loudly; with VMPROCD_REQUIRE_ROOT_TESTS=1 (set by CI) skipping is a failure instead.
 */
export const isRoot = process.getuid?.() === 0;

export function describeAsRoot(name: string, body: () => void): void {
  if (isRoot) {
    describe(name, body);
    return;
  }
  if (process.env.VMPROCD_REQUIRE_ROOT_TESTS === '1') {
    throw new Error(`"${name}" needs root, and VMPROCD_REQUIRE_ROOT_TESTS=1 forbids skipping it`);
  }
  process.stderr.write(`\n*** SKIPPED (needs root): ${name} ***\n\n`);
  describe.skip(name, body);
}
