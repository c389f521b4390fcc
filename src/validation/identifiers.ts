import { VmprocError } from '../errors.js';

const SANDBOX_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
/** `ip netns` names are file names under /var/run/netns. */
const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9_./-]{0,126}[A-Za-z0-9])?$/;
const MAX_LABELS = 64;
const MAX_LABEL_VALUE_BYTES = 1024;

export function validateSandboxId(value: string): string {
  if (value === '') throw new VmprocError('invalid-argument', 'sandbox_id is required');
  if (!SANDBOX_ID.test(value)) {
    throw new VmprocError(
      'invalid-argument',
      `sandbox_id ${JSON.stringify(value)} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ ` +
        '(a letter or digit, then up to 62 letters, digits, _ . -)',
    );
  }
  return value;
}

export function validateNetworkNamespace(value: string): string {
  if (value === '') throw new VmprocError('invalid-argument', 'network_namespace is required');
  if (!NETNS_NAME.test(value)) {
    throw new VmprocError(
      'invalid-argument',
      `network_namespace ${JSON.stringify(value)} must be a name under /var/run/netns ` +
        '(a letter or digit, then up to 62 letters, digits, _ . -)',
    );
  }
  return value;
}

export function validateLabels(labels: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) {
    throw new VmprocError('invalid-argument', `at most ${MAX_LABELS} labels are allowed, got ${entries.length}`);
  }
  for (const [key, value] of entries) {
    if (!LABEL_KEY.test(key)) {
      throw new VmprocError(
        'invalid-argument',
        `label key ${JSON.stringify(key)} must be 1-128 letters, digits, _ . / -, starting and ending with a letter or digit`,
      );
    }
    if (value.includes('\0') || Buffer.byteLength(value) > MAX_LABEL_VALUE_BYTES) {
      throw new VmprocError(
        'invalid-argument',
        `label ${JSON.stringify(key)} has a value with a NUL byte or longer than ${MAX_LABEL_VALUE_BYTES} bytes`,
      );
    }
  }
  return Object.freeze({ ...labels });
}
