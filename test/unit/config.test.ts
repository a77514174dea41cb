import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLIENT_SETTINGS, validateClientConfig } from '../../src/config/client-settings.js';
import { loadSettings } from '../../src/config/load.js';
import { SERVER_SETTINGS, validateServerConfig } from '../../src/config/server-settings.js';

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
  const listen = (value: string) => validateServerConfig({ ...base, listen: value }).listen;
  assert.deepEqual(listen('198.18.0.1:8443'), { host: '198.18.0.1', port: 8443 });
  assert.deepEqual(listen('[fd00::1]:443'), { host: 'fd00::1', port: 443 });
  assert.deepEqual(listen(':443'), { host: '0.0.0.0', port: 443 });
  rejects(() => listen('198.18.0.1:70000'), 'listen', /ADDR:PORT/);
  rejects(() => validateServerConfig({ ...base, httpListen: 'port-80' }), 'httpListen', /ADDR:PORT/);
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

/** A config file holding `settings` (JSON text as it is, anything else as JSON). */
function configFile(settings: unknown): string {
  const file = join(mkdtempSync(join(tmpdir(), 'facade-config-')), 'facade.json');
  writeFileSync(file, typeof settings === 'string' ? settings : JSON.stringify(settings));
  return file;
}

function server(argv: string[]) {
  return validateServerConfig(loadSettings('server', SERVER_SETTINGS, argv).raw);
}

test('flags override the config file; a broken file names itself', () => {
  const file = configFile({ ...base, mtu: 1300, routes: ['198.18.9.0/24'] });
  const config = server([
    '--config',
    file,
    '--mtu',
    '1350',
    '--route',
    '198.18.10.0/24',
    '--route',
    '10.0.0.0/8',
  ]);
  assert.equal(config.mtu, 1350);
  assert.equal(config.tunnelPath, '/secret/t');
  assert.deepEqual(config.routes, ['198.18.10.0/24', '10.0.0.0/8']);
  assert.deepEqual(server(['--config', file]).routes, ['198.18.9.0/24']);
  const broken = configFile('{ not json');
  assert.throws(() => server(['--config', broken]), { code: 'FACADE_ERR_CONFIG_PARSE' });
  assert.throws(() => server(['--config', join(broken, 'missing')]), { code: 'FACADE_ERR_CONFIG_READ' });
});

test('a flag replaces its setting under any key the file used for it', () => {
  const file = configFile({ ...base, keepaliveMs: 5000, offload: true });
  const config = server(['--config', file, '--keepalive', '3', '--no-offload']);
  assert.equal(config.keepaliveMs, 3000);
  assert.equal(config.offload, false);
});

test('unknown keys in a config file are refused by name, with the nearest setting', () => {
  rejects(
    () => server(['--config', configFile({ ...base, tunelPath: '/x' })]),
    'tunelPath',
    /is not a setting; did you mean "tunnelPath"\?/,
  );
  rejects(
    () => validateServerConfig({ ...base, 'client-to-client': true }),
    'client-to-client',
    /"clientToClient"/,
  );
  rejects(() => validateServerConfig({ ...base, colour: 'red' }), 'colour', /is not a setting$/);
  rejects(() => validateServerConfig({ ...base, config: 'other.json' }), 'config', /is not a setting/);
  rejects(
    () => validateClientConfig({ url: 'https://h/k', user: 'a', passwordFile: '/p', pool: '198.18.8.0/24' }),
    'pool',
    /is not a setting/,
  );
});

test('the keys older files use still work', () => {
  assert.equal(validateServerConfig({ ...base, keepalive: 4 }).keepaliveMs, 4000);
  assert.equal(validateServerConfig({ ...base, keepaliveMs: 2500 }).keepaliveMs, 2500);
  assert.equal(validateServerConfig({ ...base, keepalive: 0 }).keepaliveMs, 0);
  assert.equal(validateServerConfig({ ...base, keepalive: 2, keepaliveMs: 2000 }).keepaliveMs, 2000);
  rejects(
    () => validateServerConfig({ ...base, keepalive: 2, keepaliveMs: 5000 }),
    'keepaliveMs',
    /"keepalive"/,
  );
  rejects(() => validateServerConfig({ ...base, keepalive: 3601 }), 'keepalive', /0 to 3600/);
  assert.equal(validateServerConfig({ ...base, offload: false }).offload, false);
  assert.equal(validateServerConfig({ ...base, noOffload: true }).offload, false);
  assert.equal(validateServerConfig({ ...base, noOffload: false }).offload, true);
  assert.equal(validateServerConfig(base).offload, true);
  rejects(() => validateServerConfig({ ...base, noOffload: 'yes' }), 'noOffload', /true or false/);
  const client = { url: 'https://h/k', user: 'a', passwordFile: '/p' };
  assert.equal(validateClientConfig({ ...client, dns: false }).dns, false);
  assert.equal(validateClientConfig({ ...client, noDns: true }).dns, false);
  assert.equal(validateClientConfig({ ...client, noOffload: true }).offload, false);
  assert.equal(validateClientConfig({ ...client, keepaliveMs: 1000 }).keepaliveMs, 1000);
  assert.equal(validateClientConfig(client).dns, true);
});

test('--no-offload, --no-dns and the client URL argument', () => {
  const file = configFile({ url: 'https://file/k', user: 'a', passwordFile: '/p', dns: true });
  const { raw, positionals } = loadSettings('client', CLIENT_SETTINGS, [
    'https://flag/k',
    '--config',
    file,
    '--no-dns',
    '--no-offload',
  ]);
  const config = validateClientConfig({ ...raw, url: positionals[0] });
  assert.equal(config.url.host, 'flag');
  assert.equal(config.dns, false);
  assert.equal(config.offload, false);
  assert.equal(validateClientConfig(raw).url.host, 'file');
});

test('command-line mistakes are usage errors that name the option', () => {
  const usage = (argv: string[], message: RegExp) =>
    assert.throws(
      () => loadSettings('server', SERVER_SETTINGS, argv),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'FACADE_ERR_CLI_USAGE');
        assert.match(err.message, message);
        assert.match(err.message, /facade server --help/);
        return true;
      },
    );
  usage(['--bogus'], /unknown option "--bogus"$|unknown option "--bogus" \(/);
  usage(['--tunnel-pth', '/x'], /did you mean "--tunnel-path"/);
  usage(['--pool'], /option --pool needs a value/);
  usage(['--pool='], /option --pool needs a value/);
  usage(['--plaintext=yes'], /option --plaintext takes no value/);
  usage(['--mtu', '1300', '--mtu', '1400'], /option --mtu given twice/);
});
