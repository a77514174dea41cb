// The settings of issue 12: --nat [IFACE] (a flag with an optional value), --host, --log-format, and the
// client's invite and key, from flags and from a config file.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLIENT_SETTINGS, validateClientConfig } from '../../src/config/client-settings.js';
import { describeSettings } from '../../src/config/describe.js';
import { loadSettings } from '../../src/config/load.js';
import { SERVER_SETTINGS, validateServerConfig } from '../../src/config/server-settings.js';
import { isFacadeError } from '../../src/core/errors.js';
import { formatInvite } from '../../src/protocol/invite.js';

const base = { pool: '198.18.8.0/24', users: '/x/users.json', tunnelPath: '/secret/t' };

function server(argv: string[], file: Record<string, unknown> = {}) {
  const { raw, positionals } = loadSettings('server', SERVER_SETTINGS, argv);
  return { config: validateServerConfig({ ...base, ...file, ...raw }), positionals };
}

test('--nat alone, --nat IFACE, --nat=IFACE, and --nat before another option', () => {
  assert.equal(server([]).config.nat, undefined);
  assert.deepEqual(server(['--nat']).config.nat, { iface: undefined });
  assert.deepEqual(server(['--nat', 'eth0']).config.nat, { iface: 'eth0' });
  assert.deepEqual(server(['--nat=wan.7']).config.nat, { iface: 'wan.7' });
  const before = server(['--nat', '--mtu', '1300']).config;
  assert.deepEqual(before.nat, { iface: undefined });
  assert.equal(before.mtu, 1300);
  assert.throws(
    () => server(['--nat', 'eth0', '--nat']),
    (err) => isFacadeError(err, 'CLI_USAGE') && /given twice/.test(err.message),
  );
  assert.throws(
    () => server(['--nat', 'a"b']),
    (err) => isFacadeError(err, 'CONFIG_INVALID') && /interface name/.test(err.message),
  );
});

test('nat in a config file: true, false or an interface name; a flag overrides it', () => {
  assert.deepEqual(validateServerConfig({ ...base, nat: true }).nat, { iface: undefined });
  assert.equal(validateServerConfig({ ...base, nat: false }).nat, undefined);
  assert.deepEqual(validateServerConfig({ ...base, nat: 'ens3' }).nat, { iface: 'ens3' });
  assert.throws(() => validateServerConfig({ ...base, nat: 1 }), /config key "nat"/);
});

test('--host: a name or an address, with or without a port', () => {
  const host = (value: string) => validateServerConfig({ ...base, host: value }).host;
  assert.deepEqual(host('vpn.example.com'), { host: 'vpn.example.com', port: undefined });
  assert.deepEqual(host('203.0.113.7:8443'), { host: '203.0.113.7', port: 8443 });
  assert.deepEqual(host('[2001:db8::1]:443'), { host: '2001:db8::1', port: 443 });
  assert.deepEqual(host('2001:db8::1'), { host: '2001:db8::1', port: undefined });
  for (const bad of ['vpn.example.com:99999', 'under_score.example', '[vpn.example.com]:1', 'a b'])
    assert.throws(() => host(bad), /config key "host"/, bad);
});

test('the README and --help show the optional value as --nat [IFACE]', () => {
  const nat = describeSettings(SERVER_SETTINGS).find((s) => s.key === 'nat');
  assert.deepEqual(nat?.flags, ['--nat [IFACE]']);
});

test('--log-format: auto by default, json or pretty when asked', () => {
  assert.equal(server([]).config.logFormat, 'auto');
  assert.equal(server(['--log-format', 'json']).config.logFormat, 'json');
  assert.throws(() => server(['--log-format', 'xml']), /config key "logFormat".*one of auto, json, pretty/);
});

const link = formatInvite({
  user: 'alice',
  seed: Buffer.alloc(32, 1),
  host: '198.18.0.1',
  port: 8443,
  tunnelPath: '/k/t',
  pin: `sha256:${'cd'.repeat(32)}`,
});

test('--invite gives the URL, user, key and pin; flags for the rest still apply', () => {
  const { raw } = loadSettings('client', CLIENT_SETTINGS, ['--invite', link, '--full-tunnel']);
  const config = validateClientConfig(raw);
  assert.equal(config.url.href, 'https://198.18.0.1:8443/k/t');
  assert.equal(config.user, 'alice');
  assert.equal(config.key, Buffer.alloc(32, 1).toString('base64url'));
  assert.equal(config.pin, `sha256:${'cd'.repeat(32)}`);
  assert.equal(config.passwordFile, undefined);
  assert.equal(config.fullTunnel, true);
});

test('an invite and a setting it gives already: refused, naming the setting', () => {
  for (const [key, value] of [
    ['user', 'bob'],
    ['url', 'https://h/k/t'],
    ['passwordFile', '/p'],
    ['pin', `sha256:${'ef'.repeat(32)}`],
  ] as const)
    assert.throws(
      () => validateClientConfig({ invite: link, [key]: value }),
      new RegExp(`config key "${key}": the invite gives it already`),
    );
  assert.throws(() => validateClientConfig({ invite: 'facade://nope' }), /config key "invite".*not valid/);
});

test('a client needs one credential: passwordFile or key, not both, not none', () => {
  const url = 'https://h/k/t';
  const key = Buffer.alloc(32, 2).toString('base64url');
  assert.equal(validateClientConfig({ url, user: 'a', key }).key, key);
  assert.throws(() => validateClientConfig({ url, user: 'a' }), /config key "passwordFile": is required/);
  assert.throws(
    () => validateClientConfig({ url, user: 'a', key, passwordFile: '/p' }),
    /config key "key".*not both/,
  );
  assert.throws(() => validateClientConfig({ url, user: 'a', key: 'short' }), /config key "key".*32 bytes/);
  assert.throws(() => validateClientConfig({ user: 'a', key }), /config key "url": is required/);
  // The key is never a flag: a command line is visible to every local user.
  assert.equal(describeSettings(CLIENT_SETTINGS).find((s) => s.key === 'key')?.flags.length, 0);
});
