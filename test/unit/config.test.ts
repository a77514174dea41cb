import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadSettings } from '../../src/config/load.js';
import { parseListen, validateClientConfig, validateServerConfig } from '../../src/config/schema.js';

const base = { pool: '198.18.8.0/24', users: '/x/users.json', tunnelPath: '/secret/t' };

function rejects(fn: () => unknown, key: string, problem: RegExp): void {
  assert.throws(fn, (err: Error & { code?: string }) => {
    assert.equal(err.code, 'FACADE_ERR_CONFIG_INVALID');
    assert.match(err.message, new RegExp(`config key "${key}"`));
    assert.match(err.message, problem);
    return true;
  });
}

test('server defaults fill what is not given', () => {
  const config = validateServerConfig(base);
  assert.deepEqual(config.listen, { host: '0.0.0.0', port: 443 });
  assert.equal(config.stateDir, '/var/lib/facade');
  assert.equal(config.mtu, 1400);
  assert.equal(config.clientToClient, false);
  assert.equal(config.keepaliveMs, 10_000);
});

test('bad server settings name the key and the problem', () => {
  rejects(() => validateServerConfig({ ...base, tunnelPath: undefined }), 'tunnelPath', /is required/);
  rejects(() => validateServerConfig({ ...base, tunnelPath: '/' }), 'tunnelPath', /other than "\/"/);
  rejects(() => validateServerConfig({ ...base, pool: 'fd00::/64' }), 'pool', /IPv4 prefix/);
  rejects(() => validateServerConfig({ ...base, pool: 'nonsense' }), 'pool', /address prefix/);
  rejects(() => validateServerConfig({ ...base, pool6: '198.18.0.0/24' }), 'pool6', /IPv6 prefix/);
  rejects(() => validateServerConfig({ ...base, listen: 'host-without-port' }), 'listen', /ADDR:PORT/);
  rejects(() => validateServerConfig({ ...base, cert: '/c.pem' }), 'key', /go together/);
  rejects(
    () => validateServerConfig({ ...base, domain: 'vpn.example.com' }),
    'email',
    /required with domain/,
  );
  rejects(() => validateServerConfig({ ...base, mtu: 500 }), 'mtu', /1280 to 65535/);
  rejects(() => validateServerConfig({ ...base, dns: ['not-an-ip'] }), 'dns', /not an IP address/);
  rejects(() => validateServerConfig({ ...base, clientToClient: 'yes' }), 'clientToClient', /true or false/);
  rejects(
    () => validateServerConfig({ ...base, tunName: 'a-very-long-interface-name' }),
    'tunName',
    /15 characters/,
  );
  rejects(() => validateServerConfig({ ...base, upstream: 'ftp://x' }), 'upstream', /http:\/\/HOST:PORT/);
  rejects(() => validateServerConfig({ ...base, logLevel: 'loud' }), 'logLevel', /one of/);
});

test('listen addresses: v4, [v6] and a bare port', () => {
  assert.deepEqual(parseListen('listen', '198.18.0.1:8443'), { host: '198.18.0.1', port: 8443 });
  assert.deepEqual(parseListen('listen', '[fd00::1]:443'), { host: 'fd00::1', port: 443 });
  assert.deepEqual(parseListen('listen', ':443'), { host: '0.0.0.0', port: 443 });
  rejects(() => parseListen('listen', '198.18.0.1:70000'), 'listen', /ADDR:PORT/);
});

test('client settings: https URL with a path, pins, plaintext only when asked', () => {
  const ok = validateClientConfig({ url: 'https://vpn.example.com/k/t', user: 'alice', passwordFile: '/p' });
  assert.equal(ok.url.pathname, '/k/t');
  assert.equal(ok.dns, true);
  rejects(
    () => validateClientConfig({ url: 'http://vpn.example.com/k', user: 'a', passwordFile: '/p' }),
    'url',
    /https:\/\//,
  );
  rejects(
    () => validateClientConfig({ url: 'https://vpn.example.com/', user: 'a', passwordFile: '/p' }),
    'url',
    /tunnel path/,
  );
  rejects(
    () => validateClientConfig({ url: 'https://h/k', user: 'a', passwordFile: '/p', pin: 'md5:00' }),
    'pin',
    /sha256/,
  );
  rejects(() => validateClientConfig({ url: 'https://h/k', passwordFile: '/p' }), 'user', /is required/);
  const openssl = `SHA256:${'AB:'.repeat(31)}AB`;
  const pinned = validateClientConfig({ url: 'https://h/k', user: 'a', passwordFile: '/p', pin: openssl });
  assert.equal(
    pinned.pin,
    `sha256:${'ab'.repeat(32)}`,
    'the pin is kept in the form fingerprints are compared in',
  );
  const plain = validateClientConfig({ url: 'http://h/k', user: 'a', passwordFile: '/p', plaintext: true });
  assert.equal(plain.plaintext, true);
});

test('flags override the config file; a broken file names itself', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'facade-config-'));
  const file = join(dir, 'facade.json');
  await writeFile(file, JSON.stringify({ ...base, mtu: 1300 }));
  const flags = {
    mtu: { key: 'mtu', type: 'string', help: '' },
    'tunnel-path': { key: 'tunnelPath', type: 'string', help: '' },
  } as const;
  const { settings } = loadSettings('server', ['--config', file, '--mtu', '1350'], flags);
  assert.equal(validateServerConfig(settings).mtu, 1350);
  assert.equal(validateServerConfig(settings).tunnelPath, '/secret/t');
  await writeFile(file, '{ not json');
  assert.throws(() => loadSettings('server', ['--config', file], flags), { code: 'FACADE_ERR_CONFIG_PARSE' });
  assert.throws(() => loadSettings('server', ['--bogus'], flags), { code: 'FACADE_ERR_CLI_USAGE' });
});
