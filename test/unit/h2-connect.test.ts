// The h2 transport on the server (src/front/h2-connect.ts), on a real front over loopback TLS: a valid
// extended CONNECT gets 200 and its stream reaches the host; the connection it came on stops counting against
// its address (as an upgraded connection does), so with a per-address limit of 1 the same address still gets
// the site.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { loadOrCreateSelfSigned } from '../../src/certs/self-signed.js';
import { createLogger } from '../../src/core/log.js';
import { createFront } from '../../src/front/front.js';
import { connectionBinding, createAuthorization, deriveUserKey } from '../../src/protocol/credentials.js';
import { createAuthenticator } from '../../src/users/authenticator.js';
import { UsersFile } from '../../src/users/users-file.js';

const PATH = '/h2/tunnel';

test('an accepted h2 tunnel leaves the per-address count, and the same address still gets the site', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facade-h2-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const certificate = await loadOrCreateSelfSigned(dir, { names: ['localhost'] });
  const users = await UsersFile.load(join(dir, 'users.json'), { allowMissing: true });
  await users.add('ann', 'pw-ann', PATH);
  const attached: Duplex[] = [];
  const front = await createFront({
    tls: { key: certificate.key, cert: certificate.cert },
    tunnelPath: PATH,
    authenticate: createAuthenticator(users),
    host: { attach: (stream) => attached.push(stream) },
    logger: createLogger({ level: 'silent' }),
    maxConnectionsPerAddress: 1,
  });
  t.after(() => front.close());
  const port = await front.listen('127.0.0.1', 0);
  const key = await deriveUserKey(PATH, 'ann', 'pw-ann');

  const tunnel = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
  t.after(() => tunnel.destroy());
  await new Promise((resolve) => tunnel.once('remoteSettings', resolve));
  const stream = tunnel.request(
    {
      ':method': 'CONNECT',
      ':protocol': 'facade',
      ':scheme': 'https',
      ':path': PATH,
      ':authority': 'localhost',
      authorization: createAuthorization(key, connectionBinding(tunnel.socket as TLSSocket)),
    },
    { endStream: false },
  );
  const status = await new Promise((resolve) => stream.once('response', (h) => resolve(h[':status'])));
  assert.equal(status, 200);
  assert.equal(attached.length, 1);

  // A second connection from 127.0.0.1: admitted (the tunnel's no longer counts), answered by the site.
  const browser = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
  t.after(() => browser.destroy());
  browser.on('error', () => undefined);
  const page = browser.request({ ':path': '/' });
  page.on('error', () => undefined);
  const pageStatus = await new Promise((resolve) => {
    page.once('response', (h) => resolve(h[':status']));
    page.once('close', () => resolve('closed'));
  });
  assert.equal(pageStatus, 200);
});
