// The settings of issue 14: `facade server --behind-proxy ADDR:PORT` (plain HTTP there instead of the HTTPS
// site, no certificate or port 80) and `facade client --transport auto|upgrade|websocket|h2`.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validateClientConfig } from '../../src/config/client-settings.js';
import { validateServerConfig } from '../../src/config/server-settings.js';

const server = { pool: '198.18.8.0/24', users: '/x/users.json', tunnelPath: '/secret/t' };
const client = { url: 'https://vpn.example.com/k/t', user: 'alice', passwordFile: '/p' };

function rejects(fn: () => unknown, key: string, problem: RegExp): void {
  assert.throws(fn, (err: Error & { code?: string }) => {
    assert.equal(err.code, 'FACADE_ERR_CONFIG_INVALID');
    assert.match(err.message, new RegExp(`config key "${key}"`));
    assert.match(err.message, problem);
    return true;
  });
}

test('--behind-proxy: the site listens there, without TLS; without it nothing changes', () => {
  const behind = validateServerConfig({ ...server, behindProxy: '127.0.0.1:8080' });
  assert.deepEqual(behind.behindProxy, { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(behind.listen, { host: '127.0.0.1', port: 8080 });
  assert.equal(behind.plaintext, false, 'not the debugging mode: its warning would be wrong');
  const plain = validateServerConfig(server);
  assert.equal(plain.behindProxy, undefined);
  assert.deepEqual(plain.listen, { host: '0.0.0.0', port: 443 });
});

test('--behind-proxy refuses what needs TLS or port 80 here', () => {
  const behind = { ...server, behindProxy: '127.0.0.1:8080' };
  rejects(
    () => validateServerConfig({ ...behind, domain: 'vpn.example.com', email: 'a@b' }),
    'domain',
    /TLS ends at the proxy/,
  );
  rejects(() => validateServerConfig({ ...behind, cert: '/c', key: '/k' }), 'cert', /TLS ends at the proxy/);
  rejects(() => validateServerConfig({ ...behind, httpListen: '0.0.0.0:80' }), 'httpListen', /TLS ends/);
  rejects(() => validateServerConfig({ ...behind, plaintext: true }), 'plaintext', /plain HTTP already/);
  rejects(() => validateServerConfig({ ...server, behindProxy: 'nonsense' }), 'behindProxy', /ADDR:PORT/);
});

test('--transport: auto by default, the four names, nothing else', () => {
  assert.equal(validateClientConfig(client).transport, 'auto');
  for (const transport of ['auto', 'upgrade', 'websocket', 'h2'])
    assert.equal(validateClientConfig({ ...client, transport }).transport, transport);
  rejects(
    () => validateClientConfig({ ...client, transport: 'quic' }),
    'transport',
    /expected one of auto, upgrade, websocket, h2/,
  );
});
