import { execa } from 'execa';
import { join } from 'node:path';
import { packageRoot } from '../../src/package-paths.js';

/**
 * Go for the suites that build Go code (examples/go-control-plane) or use the pinned Go tools
 * (scripts/go-tools.mjs). Module downloads go through the Go proxy; go.mod and go.sum are never
 * changed (-mod=readonly): what is committed must build as it is.
 */
export const GO_EXAMPLE_DIR = join(packageRoot, 'examples', 'go-control-plane');

let environment: Promise<NodeJS.ProcessEnv> | undefined;

/** The environment for `go`: its own GOFLAGS (from `go env`, which reads its config file too) plus -mod=readonly. */
export function goEnv(): Promise<NodeJS.ProcessEnv> {
  environment ??= (async () => {
    const { stdout } = await execa('go', ['env', 'GOFLAGS']).catch((error: unknown) => {
      throw new Error(`\`go\` is needed to build examples/go-control-plane and the Go tools (Go 1.26 or later): ${String(error)}`);
    });
    const flags = stdout.trim().split(/\s+/).filter((flag) => flag && !flag.startsWith('-mod='));
    return { ...process.env, GOFLAGS: [...flags, '-mod=readonly'].join(' '), GOWORK: 'off' };
  })();
  return environment;
}

/** Runs `go ARGS` in `cwd`; a failure carries go's whole output. */
export async function go(args: readonly string[], cwd = GO_EXAMPLE_DIR): Promise<string> {
  const result = await execa('go', args, { cwd, env: await goEnv(), all: true, reject: false });
  if (result.exitCode !== 0) throw new Error(`go ${args.join(' ')} (in ${cwd}) failed with ${result.exitCode}:\n${result.all}`);
  return result.all ?? '';
}

/** Builds a pinned Go tool into .tools/bin if it is not there at its version; returns its path. */
export async function goTool(name: 'grpcurl' | 'protoc-gen-go' | 'protoc-gen-go-grpc'): Promise<string> {
  const env = { ...(await goEnv()) };
  delete env.NODE_OPTIONS; // jest's, not the script's business
  const result = await execa(process.execPath, [join(packageRoot, 'scripts', 'go-tools.mjs'), name], { env, all: true, reject: false });
  if (result.exitCode !== 0) throw new Error(`installing ${name} failed:\n${result.all}`);
  return join(packageRoot, '.tools', 'bin', name);
}
