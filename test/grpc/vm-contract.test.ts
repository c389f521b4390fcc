/** The VM contract (test/contract/vm-contract.ts) against the stand-in VMM. */
import { nativeBin } from '../../src/package-paths.js';
import { vmContract } from '../contract/vm-contract.js';
import { describeAsRoot } from '../helpers/root.js';

describeAsRoot('VM contract, stand-in VMM', () => vmContract({ name: 'stand-in', vmmBin: nativeBin('standin-vmm'), standIn: true }));
