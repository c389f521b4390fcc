import { request as httpRequest } from 'node:http';

/** What the stand-in VMM reports about itself (GET /api/v1/standin.inspect, see native/standin-vmm.c). */
export interface StandinInspect {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  netns: string | null;
  mntns: string | null;
  sandbox_dir: string | null;
  sandbox_fstype: string | null;
  /** The sandbox's symlinks as they read: `/proc/<VMM pid>/fd/<n>`. */
  links: { vmlinux: string | null; 'rootfs.ext4': string | null };
  /** Where they lead: the files the VMM holds open. */
  files: { vmlinux: string | null; 'rootfs.ext4': string | null };
  last_restore: Record<string, unknown> | null;
  restore_count: number;
  argv: string[];
  state: string | null;
  api_socket: string | null;
  version: string;
}

/**
 * GET /api/v1/standin.inspect over the VMM's API socket; rejects after `timeoutMs` (the stand-in
 * serves one request at a time, so a long vm.restore keeps this waiting).
 */
export function inspectStandin(socketPath: string, timeoutMs = 10_000): Promise<StandinInspect> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path: '/api/v1/standin.inspect', method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) reject(new Error(`standin.inspect answered ${res.statusCode}: ${body}`));
        else resolve(JSON.parse(body) as StandinInspect);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('standin.inspect timed out')));
    req.on('error', reject);
    req.end();
  });
}
