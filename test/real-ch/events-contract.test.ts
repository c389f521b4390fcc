/**
 * The events contract (test/contract/events-contract.ts) against a real Cloud Hypervisor, named by
 * VMPROCD_TEST_CH_BIN (never part of the repository: build it by hand, see README "Testing against
 * a real Cloud Hypervisor"). Without it this tier does nothing, and says so.
 */
import { describe, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { eventsContract } from '../contract/events-contract.js';
import { describeAsRoot } from '../helpers/root.js';

const bin = process.env.VMPROCD_TEST_CH_BIN;

if (!bin) {
  process.stderr.write('\n*** test:real-ch did NOTHING: set VMPROCD_TEST_CH_BIN to a cloud-hypervisor binary to run it ***\n\n');
  describe.skip('events contract, real Cloud Hypervisor (VMPROCD_TEST_CH_BIN not set)', () => {
    it('needs VMPROCD_TEST_CH_BIN', () => undefined);
  });
} else {
  if (!existsSync(bin)) throw new Error(`VMPROCD_TEST_CH_BIN ${bin} does not exist`);
  if (!existsSync('/dev/kvm')) throw new Error('a real Cloud Hypervisor needs /dev/kvm');
  describeAsRoot(`events contract, real Cloud Hypervisor (${bin})`, () => eventsContract({ name: 'cloud-hypervisor', vmmBin: bin, standIn: false }));
}
