/**
 * The layering the code promises (README, "Where things live"), checked on the import graph:
 * the core reaches the host only through its ports, the core and its adapters know nothing of
 * gRPC or the generated code, and no two modules import each other, even through others.
 */
import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { packageRoot } from '../../src/package-paths.js';

const SRC = join(packageRoot, 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : []);
}

/** Every module's imports: package names as written, project files as paths relative to src/. */
const graph = new Map<string, string[]>(
  sourceFiles(SRC).map((file) => {
    const text = readFileSync(file, 'utf8');
    const specifiers = [...text.matchAll(/^(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)].map((m) => m[1]!);
    const imports = specifiers.map((s) => (s.startsWith('.') ? relative(SRC, resolve(dirname(file), s.replace(/\.js$/, '.ts'))) : s));
    return [relative(SRC, file), imports];
  }),
);

const importsOf = (prefix: string) => [...graph].filter(([file]) => file.startsWith(prefix));

describe('architecture', () => {
  it('reads the import graph (a check of the checks)', () => {
    expect(graph.size).toBeGreaterThan(80);
    expect(graph.get('core/supervisor.ts')).toContain('core/start-process.ts');
    expect(graph.get('daemon/daemon.ts')).toContain('pino');
  });

  it('the core imports no host module: only its ports, its own files, errors, logger and pure validation', () => {
    const allowed = (target: string) =>
      target.startsWith('core/') || ['errors.ts', 'logger.ts', 'api-defaults.ts'].includes(target) || target.startsWith('validation/') || target === 'node:os';
    const offending = importsOf('core/').flatMap(([file, imports]) => imports.filter((t) => !allowed(t)).map((t) => `${file} -> ${t}`));
    // validation/ is pure: it must not reach the host either.
    const impureValidation = importsOf('validation/').flatMap(([file, imports]) =>
      imports.filter((t) => t.startsWith('node:fs') || t.startsWith('launch/') || t.startsWith('vmm/') || t.startsWith('store/')).map((t) => `${file} -> ${t}`));
    expect([...offending, ...impureValidation]).toEqual([]);
  });

  it('the core, launch, vmm, store, host and validation import nothing from grpc-js or gen/', () => {
    const layers = ['core/', 'launch/', 'vmm/', 'store/', 'host/', 'validation/', 'logs/', 'util/'];
    const offending = layers.flatMap((layer) =>
      importsOf(layer).flatMap(([file, imports]) => imports.filter((t) => t.startsWith('@grpc/') || t.startsWith('../gen/') || t.startsWith('gen/') || t.includes('vmprocess_pb')).map((t) => `${file} -> ${t}`)));
    expect(offending).toEqual([]);
  });

  it('has no import cycle', () => {
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (file: string, path: string[]) => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'open') {
        cycles.push([...path.slice(path.indexOf(file)), file].join(' -> '));
        return;
      }
      state.set(file, 'open');
      for (const target of graph.get(file) ?? []) if (graph.has(target)) visit(target, [...path, file]);
      state.set(file, 'done');
    };
    for (const file of graph.keys()) visit(file, []);
    expect(cycles).toEqual([]);
  });
});
