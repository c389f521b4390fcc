import { execa } from 'execa';
import { VmprocError } from '../errors.js';

/**
 * The group ID of `--socket-group`: a number as is, a name through NSS (`getent group`, so LDAP
 * or sssd groups work as well as /etc/group ones).
 */
export async function resolveGroupId(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  const { stdout, exitCode } = await execa('getent', ['group', group], { reject: false });
  const gid = exitCode === 0 ? Number(stdout.split(':')[2]) : NaN;
  if (!Number.isSafeInteger(gid)) {
    throw new VmprocError('invalid-argument', `--socket-group ${group} is not a group on this host (getent group ${group} found nothing)`);
  }
  return gid;
}
