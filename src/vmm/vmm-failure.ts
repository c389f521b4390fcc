import { asVmprocError, VmprocError } from '../errors.js';
import { isVmmApiError } from './vmm-api-error.js';

/**
 * The one mapping from the VMM client's failures to the daemon's domain errors, as Cloud
 * Hypervisor maps its ApiError to HTTP status in one function:
 * - the VMM could not be reached or did not answer (no socket, refused, reset, timeout):
 *   `unavailable`, the VMM's API is not serving;
 * - the VMM answered and refused (an HTTP error): `failed-precondition`, with the VMM's own error
 *   chain in the message (the VM is in the wrong state for it, a file is missing, ...); but 429, a
 *   vCPU removal still pending in the guest, is `unavailable` (retry later), and 400, a request
 *   the VMM could not read, is the daemon's own bug: `internal`;
 * - an answer that is not Cloud Hypervisor's API (unparseable): `internal`.
 * `action` says what the daemon was doing, e.g. `restoring sandbox sb-1`.
 */
export function vmmFailure(error: unknown, action: string): VmprocError {
  if (!isVmmApiError(error)) return asVmprocError(error, action);
  switch (error.kind) {
    case 'socket-missing':
    case 'refused':
    case 'reset':
    case 'timeout':
      return new VmprocError('unavailable', `${action}: the VMM's API did not answer: ${error.message}`, { cause: error });
    case 'http-status':
      if (error.status === 429) return new VmprocError('unavailable', `${action}: the VMM is busy (a vCPU removal is still pending in the guest); retry later: ${error.message}`, { cause: error });
      if (error.status === 400) return new VmprocError('internal', `${action}: the VMM could not read the daemon's request: ${error.message}`, { cause: error });
      return new VmprocError('failed-precondition', `${action}: the VMM refused: ${error.message}`, { cause: error });
    case 'aborted':
      return new VmprocError('cancelled', `${action}: ${error.message}`, { cause: error });
    case 'protocol':
      return new VmprocError('internal', `${action}: the VMM's answer is not Cloud Hypervisor's API: ${error.message}`, { cause: error });
  }
}
