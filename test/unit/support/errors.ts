import { expect } from '@jest/globals';
import { type ErrorCode, VmprocError } from '../../../src/errors.js';

/** Runs `fn` and returns what it threw; fails the test if it returned normally. */
export function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to throw, but it returned');
}

/** Awaits `promise` and returns its rejection reason; fails the test if it resolved. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the promise to reject, but it resolved');
}

/** Asserts `error` is a VmprocError with `code` whose message contains every one of `fragments`. */
export function expectVmprocError(error: unknown, code: ErrorCode, ...fragments: string[]): VmprocError {
  expect(error).toBeInstanceOf(VmprocError);
  const vmprocError = error as VmprocError;
  expect(vmprocError.code).toBe(code);
  for (const fragment of fragments) expect(vmprocError.message).toContain(fragment);
  return vmprocError;
}

/** Asserts `fn` throws a VmprocError with `code` whose message contains every one of `fragments`. */
export function expectThrowsVmprocError(fn: () => unknown, code: ErrorCode, ...fragments: string[]): VmprocError {
  return expectVmprocError(thrownBy(fn), code, ...fragments);
}
