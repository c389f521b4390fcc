import { describe, expect, it } from '@jest/globals';
import { VmprocError } from '../../../src/errors.js';
import { VmmApiError, type VmmApiErrorKind } from '../../../src/vmm/vmm-api-error.js';
import { vmmFailure } from '../../../src/vmm/vmm-failure.js';

const failure = (kind: VmmApiErrorKind, extra: { status?: number; body?: string } = {}) =>
  new VmmApiError({ kind, endpoint: 'PUT vm.restore', socketPath: '/run/x.sock', detail: `it was ${kind}`, ...extra });

describe('vmmFailure: the one mapping of VMM client failures to domain errors', () => {
  it.each<[VmmApiErrorKind, VmprocError['code']]>([
    ['socket-missing', 'unavailable'],
    ['refused', 'unavailable'],
    ['reset', 'unavailable'],
    ['timeout', 'unavailable'],
    ['aborted', 'cancelled'],
    ['protocol', 'internal'],
  ])('%s is %s, naming the action and keeping the cause', (kind, code) => {
    const original = failure(kind);
    const mapped = vmmFailure(original, 'restoring the snapshot');
    expect({ code: mapped.code, cause: mapped.cause }).toEqual({ code, cause: original });
    expect(mapped.message).toContain('restoring the snapshot');
    expect(mapped.message).toContain(`it was ${kind}`);
  });

  it("an HTTP refusal is FAILED_PRECONDITION carrying Cloud Hypervisor's error chain", () => {
    const mapped = vmmFailure(failure('http-status', { status: 500, body: '["Error from API","The VM could not be restored","bad magic"]' }), 'restoring the snapshot');
    expect(mapped.code).toBe('failed-precondition');
    expect(mapped.message).toContain('Error from API: The VM could not be restored: bad magic');
  });

  it('a 429 (a vCPU removal pending) is UNAVAILABLE, a 400 (a request the VMM could not read) INTERNAL', () => {
    expect(vmmFailure(failure('http-status', { status: 429, body: '["Too Many Requests"]' }), 'resizing the VM')).toMatchObject({ code: 'unavailable', message: expect.stringContaining('retry later') });
    expect(vmmFailure(failure('http-status', { status: 400, body: '["Bad Request"]' }), 'pausing the VM')).toMatchObject({ code: 'internal' });
  });

  it('keeps a domain error as it is and wraps anything else as internal', () => {
    const domain = new VmprocError('not-found', 'x');
    expect(vmmFailure(domain, 'doing')).toBe(domain);
    expect(vmmFailure(new Error('boom'), 'doing')).toMatchObject({ code: 'internal', message: 'doing: boom' });
  });
});
