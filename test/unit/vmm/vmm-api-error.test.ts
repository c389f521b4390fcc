import { describe, expect, it } from '@jest/globals';
import { parseErrorChain, VmmApiError } from '../../../src/vmm/vmm-api-error.js';
import { decodePing, decodeVmInfo, toRestoreRequestBody } from '../../../src/vmm/vmm-wire-format.js';

const where = { endpoint: 'PUT vm.resume', socketPath: '/run/x.sock' };

describe('VmmApiError', () => {
  it('joins an error chain with ": " and keeps the raw body', () => {
    const body = '["Error from API","The VM could not resume","VM is not running"]';
    const error = new VmmApiError({ ...where, kind: 'http-status', status: 500, body, requestSent: true });
    expect(error.message).toBe(
      'PUT vm.resume on /run/x.sock failed with HTTP 500: Error from API: The VM could not resume: VM is not running',
    );
    expect(error.errorChain).toEqual(['Error from API', 'The VM could not resume', 'VM is not running']);
    expect(error.body).toBe(body);
    expect(error.name).toBe('VmmApiError');
    expect(error).toBeInstanceOf(Error);
  });

  it('quotes a body that is not a chain, trimmed and bounded', () => {
    const long = new VmmApiError({ ...where, kind: 'http-status', status: 400, body: `  ${'x'.repeat(1000)}\n` });
    expect(long.errorChain).toBeUndefined();
    expect(long.message).toBe(`PUT vm.resume on /run/x.sock failed with HTTP 400: ${'x'.repeat(300)}…`);
    expect(long.body).toHaveLength(1003);
    expect(new VmmApiError({ ...where, kind: 'http-status', status: 400, body: '' }).message).toMatch(/HTTP 400: \(empty body\)$/);
    expect(new VmmApiError({ ...where, kind: 'http-status', status: 500, body: '[]' }).message).toMatch(
      /HTTP 500: \(empty error chain\)$/,
    );
  });

  it('keeps the cause and describes transport failures with their detail', () => {
    const cause = Object.assign(new Error('connect ENOENT /run/x.sock'), { code: 'ENOENT' });
    const error = new VmmApiError({ ...where, kind: 'socket-missing', detail: 'the API socket does not exist (ENOENT)', cause });
    expect(error.message).toBe('PUT vm.resume on /run/x.sock failed: the API socket does not exist (ENOENT)');
    expect(error.cause).toBe(cause);
    expect(error.requestSent).toBe(false);
    expect(error.status).toBeUndefined();
    expect(error.body).toBeUndefined();
  });

  it('recognizes only arrays of strings as chains', () => {
    expect(parseErrorChain('["a","b"]')).toEqual(['a', 'b']);
    expect(parseErrorChain('["a",1]')).toBeUndefined();
    expect(parseErrorChain('{"error":"x"}')).toBeUndefined();
    expect(parseErrorChain('not json')).toBeUndefined();
  });
});

describe('wire format', () => {
  it('writes restore fields in snake_case, omitting an unset memory mode', () => {
    expect(toRestoreRequestBody({ sourceUrl: 'file:///s', memoryRestoreMode: 'Copy' })).toEqual({
      source_url: 'file:///s',
      memory_restore_mode: 'Copy',
      resume: false,
      prefault: false,
    });
    expect(toRestoreRequestBody({ sourceUrl: 'file:///s' })).not.toHaveProperty('memory_restore_mode');
  });

  it('rejects pings and infos that break their contract, naming the field', () => {
    expect(() => decodePing([])).toThrow('ping response is not a JSON object');
    expect(() => decodePing({ version: '1' })).toThrow('"build_version" is missing or not a string');
    expect(() => decodePing({ build_version: 'v', version: '1', pid: 1.5 })).toThrow('"pid" is not an integer');
    expect(() => decodePing({ build_version: 'v', version: '1', features: [1] })).toThrow('"features"');
    expect(() => decodeVmInfo({ state: 'Running', memory_actual_size: -1, config: {} })).toThrow('memory_actual_size');
    expect(() => decodeVmInfo({ state: 'Running', memory_actual_size: 1, config: null })).toThrow('"config" is not a JSON object');
  });
});
