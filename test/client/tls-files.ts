/** A throw-away CA, a server certificate for `vmprocd.test` and a client certificate, made with openssl. */
import { execa } from 'execa';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const SERVER_NAME = 'vmprocd.test';

export interface TlsFiles {
  readonly dir: string;
  /** File paths: ca.pem, server.pem, server.key, client.pem, client.key. */
  path(name: 'ca.pem' | 'server.pem' | 'server.key' | 'client.pem' | 'client.key'): string;
  read(name: 'ca.pem' | 'server.pem' | 'server.key' | 'client.pem' | 'client.key'): Promise<Buffer>;
}

export async function makeTlsFiles(dir: string): Promise<TlsFiles> {
  const p = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execa('openssl', args, { cwd: dir });
  await openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=vmprocd test CA', '-keyout', p('ca.key'), '-out', p('ca.pem'));
  for (const [name, subject, ext] of [
    ['server', `/CN=${SERVER_NAME}`, `subjectAltName=DNS:${SERVER_NAME}\nextendedKeyUsage=serverAuth\n`],
    ['client', '/CN=vmprocctl test client', 'extendedKeyUsage=clientAuth\n'],
  ] as const) {
    await writeFile(p(`${name}.ext`), ext);
    await openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', subject,
      '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`));
    await openssl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial',
      '-days', '2', '-extfile', p(`${name}.ext`), '-out', p(`${name}.pem`));
  }
  return { dir, path: p, read: (name) => readFile(p(name)) };
}
