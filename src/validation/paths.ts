import { posix } from 'node:path';
import { VmprocError } from '../errors.js';

export { MAX_SOCKET_PATH_BYTES } from '../unix-socket-path.js';

const MAX_PATH_BYTES = 4095;

/**
 * Characters a path may contain. An allow-list rather than a deny-list: spaces, quotes, `$`,
 * backticks, `;`, `|`, `&`, globs and control characters never reach a command line, even
 * though the launch passes values as arguments and would not interpret them anyway.
 */
const PATH_CHARACTERS = /^[A-Za-z0-9._@+:=,/-]+$/;

export interface PathRules {
  /** Extra characters this path must not contain, with the reason (e.g. `,` splits VMM options). */
  readonly forbidden?: { readonly characters: string; readonly why: string };
}

/** Returns the normalised absolute path, or throws `invalid-argument` naming the field. */
export function validatePath(field: string, value: string, rules: PathRules = {}): string {
  if (value.includes('\0')) throw invalid(field, value, 'contains a NUL byte');
  if (/[\r\n]/.test(value)) throw invalid(field, value, 'contains a newline');
  if (!value.startsWith('/')) throw invalid(field, value, 'must be an absolute path');
  if (Buffer.byteLength(value) > MAX_PATH_BYTES) throw invalid(field, value, `is longer than ${MAX_PATH_BYTES} bytes`);
  if (!PATH_CHARACTERS.test(value)) {
    throw invalid(field, value, 'may only contain letters, digits and . _ @ + : = , / -');
  }
  const forbidden = rules.forbidden;
  if (forbidden && [...forbidden.characters].some((c) => value.includes(c))) {
    throw invalid(field, value, `must not contain ${[...forbidden.characters].join(' or ')} (${forbidden.why})`);
  }
  const normalised = posix.normalize(value);
  const trimmed = normalised.length > 1 && normalised.endsWith('/') ? normalised.slice(0, -1) : normalised;
  if (trimmed === '/') throw invalid(field, value, 'must not be the root directory');
  return trimmed;
}

/** True when `path` is `dir` itself or lies below it (both normalised). */
export function isSameOrUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === '/' ? '/' : `${dir}/`);
}

function invalid(field: string, value: string, problem: string): VmprocError {
  return new VmprocError('invalid-argument', `${field} ${JSON.stringify(value)} ${problem}`);
}
