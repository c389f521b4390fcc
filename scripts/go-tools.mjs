// The Go tools the repository uses, at pinned versions, built with `go install` into .tools/bin
// (gitignored): the two protoc plugins that generate gen/go, and grpcurl for the README's session.
// A tool already built at its pinned version is not built again.
//
//   node scripts/go-tools.mjs [NAME...]     (npm run tools:go) installs them (default: all)
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = dirname(dirname(fileURLToPath(import.meta.url)));
export const toolsBin = join(repoRoot, '.tools', 'bin');

/** name -> the module it is built from, its package, and the version. Change versions here only. */
export const goTools = {
  'protoc-gen-go': { module: 'google.golang.org/protobuf', pkg: 'google.golang.org/protobuf/cmd/protoc-gen-go', version: 'v1.36.12' },
  'protoc-gen-go-grpc': { module: 'google.golang.org/grpc/cmd/protoc-gen-go-grpc', pkg: 'google.golang.org/grpc/cmd/protoc-gen-go-grpc', version: 'v1.6.2' },
  grpcurl: { module: 'github.com/fullstorydev/grpcurl', pkg: 'github.com/fullstorydev/grpcurl/cmd/grpcurl', version: 'v1.9.4' },
};

/** The module version a Go binary was built from (`go version -m`), or undefined. */
function builtVersion(binary, module) {
  if (!existsSync(binary)) return undefined;
  try {
    const info = execFileSync('go', ['version', '-m', binary], { encoding: 'utf8' });
    const line = info.split('\n').find((l) => l.trim().split(/\s+/)[0] === 'mod' && l.trim().split(/\s+/)[1] === module);
    return line?.trim().split(/\s+/)[2];
  } catch {
    return undefined;
  }
}

function requireGo() {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
  } catch {
    throw new Error('`go` is not on PATH: the Go tools (and gen/go) need Go 1.26 or later, see https://go.dev/doc/install');
  }
}

/** Installs the named tools (default: all) at their pinned versions; returns name -> path. */
export function installGoTools(names = Object.keys(goTools)) {
  requireGo();
  const paths = {};
  for (const name of names) {
    const tool = goTools[name];
    if (!tool) throw new Error(`unknown Go tool ${name}: one of ${Object.keys(goTools).join(', ')}`);
    const binary = join(toolsBin, name);
    if (builtVersion(binary, tool.module) !== tool.version) {
      process.stderr.write(`go install ${tool.pkg}@${tool.version} (into .tools/bin)\n`);
      execFileSync('go', ['install', `${tool.pkg}@${tool.version}`], {
        stdio: ['ignore', 'inherit', 'inherit'],
        env: { ...process.env, GOBIN: toolsBin, GOWORK: 'off' },
      });
      const built = builtVersion(binary, tool.module);
      if (built !== tool.version) throw new Error(`${binary} reports ${built ?? 'no version'} after installing ${tool.version}`);
    }
    paths[name] = binary;
  }
  return paths;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    const paths = installGoTools(process.argv.length > 2 ? process.argv.slice(2) : undefined);
    for (const [name, path] of Object.entries(paths)) console.log(`${name} ${goTools[name].version}: ${path}`);
  } catch (error) {
    console.error(`go-tools: ${error.message}`);
    process.exitCode = 1;
  }
}
