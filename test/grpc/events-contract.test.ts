/** The events contract (test/contract/events-contract.ts) against the stand-in VMM. */
import { nativeBin } from '../../src/package-paths.js';
import { eventsContract } from '../contract/events-contract.js';
import { describeAsRoot } from '../helpers/root.js';

describeAsRoot('events contract, stand-in VMM', () => eventsContract({ name: 'stand-in', vmmBin: nativeBin('standin-vmm'), standIn: true }));
