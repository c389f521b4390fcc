import { describe, expect, it } from '@jest/globals';
import { formatListenAddress, grpcTarget, type ListenAddress, parseListenAddress } from '../../src/rpc/listen-address.js';
import { expectThrowsVmprocError } from './support/errors.js';

describe('parseListenAddress', () => {
  it.each<[string, ListenAddress, string]>([
    ['unix:///run/vmprocd/vmprocd.sock', { kind: 'unix', path: '/run/vmprocd/vmprocd.sock' }, 'unix:///run/vmprocd/vmprocd.sock'],
    ['127.0.0.1:50051', { kind: 'tcp', host: '127.0.0.1', port: 50051 }, '127.0.0.1:50051'],
    ['0.0.0.0:0', { kind: 'tcp', host: '0.0.0.0', port: 0 }, '0.0.0.0:0'],
    ['localhost:65535', { kind: 'tcp', host: 'localhost', port: 65535 }, 'localhost:65535'],
    ['[::1]:50051', { kind: 'tcp', host: '::1', port: 50051 }, '[::1]:50051'],
    ['[::]:1', { kind: 'tcp', host: '::', port: 1 }, '[::]:1'],
    ['[::ffff:127.0.0.1]:8080', { kind: 'tcp', host: '::ffff:127.0.0.1', port: 8080 }, '[::ffff:127.0.0.1]:8080'],
    ['my-host.example:443', { kind: 'tcp', host: 'my-host.example', port: 443 }, 'my-host.example:443'],
  ])('parses %j and formats it back as the grpc target', (text, address, target) => {
    expect(parseListenAddress(text)).toEqual(address);
    expect(grpcTarget(address)).toBe(target);
    expect(formatListenAddress(address)).toBe(target);
  });

  it('accepts a 107-byte unix socket path and refuses 108', () => {
    const path107 = `/${'s'.repeat(106)}`;
    expect(parseListenAddress(`unix://${path107}`)).toEqual({ kind: 'unix', path: path107 });
    expectThrowsVmprocError(() => parseListenAddress(`unix://${path107}s`), 'invalid-argument', 'at most 107 bytes');
  });

  it('counts the unix path limit in bytes', () => {
    expectThrowsVmprocError(() => parseListenAddress(`unix:///${'é'.repeat(54)}`), 'invalid-argument', '107 bytes');
  });

  it.each(['unix://relative.sock', 'unix://', 'unix://~/x.sock'])('refuses the non-absolute unix address %j', (text) => {
    expectThrowsVmprocError(() => parseListenAddress(text), 'invalid-argument', 'absolute path');
  });

  it.each([
    '',
    '50051',
    ':50051',
    'host',
    'host:',
    'host:65536',
    'host:123456',
    'host:-1',
    'host:12ab',
    '::1:50051',
    '[::1]',
    '[host]:80',
    'unix:/run/x.sock',
    '/run/x.sock',
    'http://127.0.0.1:80',
    'host name:80',
    ' 127.0.0.1:80',
  ])('refuses %j', (text) => {
    expectThrowsVmprocError(() => parseListenAddress(text), 'invalid-argument', 'listen address');
  });
});
