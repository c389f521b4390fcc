import { execa } from 'execa';
import { randomBytes } from 'node:crypto';

/** A network namespace made for one test suite; `remove()` deletes it. */
export interface TestNetns {
  readonly name: string;
  remove(): Promise<void>;
}

export async function createTestNetns(prefix = 'vmpt'): Promise<TestNetns> {
  const name = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
  await execa('ip', ['netns', 'add', name]);
  return {
    name,
    async remove() {
      await execa('ip', ['netns', 'del', name], { reject: false });
    },
  };
}

/** A TAP device in `netns`, up (it goes when the namespace is removed). */
export async function addTap(netns: TestNetns, name = 'tap0'): Promise<void> {
  await execa('ip', ['netns', 'exec', netns.name, 'ip', 'tuntap', 'add', 'dev', name, 'mode', 'tap']);
  await execa('ip', ['netns', 'exec', netns.name, 'ip', 'link', 'set', name, 'up']);
}
