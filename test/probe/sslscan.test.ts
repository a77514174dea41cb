// The site's TLS as a scanner sees it: sslscan (Debian package sslscan) against the server's own front
// (test/helpers/probe-server.ts: site, front door and acceptor as the server wires them, with the server's
// self-signed certificate, RSA as openssl req makes it) on 127.0.0.1. SSLv2/3, TLS 1.0 and 1.1 off; TLS 1.2 and 1.3 on; every
// accepted suite an AEAD: AES-GCM or ChaCha20-Poly1305 (src/front/site.ts SITE_TLS_CIPHERS). CCM is not
// offered at all, and CCM8 (a 64-bit tag) never: the security round refused Node's default HIGH list,
// which adds CBC-SHA and CCM8 suites to TLS 1.2.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { run } from '../helpers/netns.js';
import { type ProbeServer, startProbeServer } from '../helpers/probe-server.js';

const SSLSCAN = ['/usr/bin/sslscan', '/usr/local/bin/sslscan'].find((p) => existsSync(p));

/**
 * What the site accepts with its RSA certificate (an ACME certificate is ECDSA, and gets the ECDSA twins of the
 * TLS 1.2 suites from the same list).
 */
const EXPECTED = [
  'TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256',
  'TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384',
  'TLSv1.2 ECDHE-RSA-CHACHA20-POLY1305',
  'TLSv1.3 TLS_AES_128_GCM_SHA256',
  'TLSv1.3 TLS_AES_256_GCM_SHA384',
  'TLSv1.3 TLS_CHACHA20_POLY1305_SHA256',
];

/** AEAD suites by name: GCM, ChaCha20-Poly1305, CCM with a full 128-bit tag (not CCM8 / CCM_8). */
function isAead(name: string): boolean {
  if (/CCM[-_]?8/i.test(name)) return false;
  return /GCM|CHACHA20[-_]POLY1305|CCM/i.test(name);
}

describe('sslscan against the site', {
  skip: SSLSCAN === undefined ? 'sslscan is not installed (Debian: apt-get install sslscan)' : false,
}, () => {
  let server: ProbeServer;
  let dir: string;
  let protocols: Map<string, boolean>;
  let accepted: string[];

  before(async () => {
    server = await startProbeServer({ tunnelPath: '/ssl5can/tunnel', users: [] });
    dir = await mkdtemp(join(tmpdir(), 'facade-sslscan-'));
    const xmlPath = join(dir, 'scan.xml');
    const out = await run(
      SSLSCAN as string,
      ['--no-colour', '--no-heartbleed', `--xml=${xmlPath}`, `127.0.0.1:${server.port}`],
      { timeoutMs: 60_000 },
    );
    assert.equal(out.code, 0, `sslscan failed: ${out.stderr}${out.stdout}`);
    const xml = await readFile(xmlPath, 'utf8');
    protocols = new Map(
      [...xml.matchAll(/<protocol type="(\w+)" version="([\d.]+)" enabled="([01])"/g)].map((m) => [
        `${m[1]}${m[2]}`,
        m[3] === '1',
      ]),
    );
    accepted = [
      ...xml.matchAll(/<cipher status="(?:accepted|preferred)" sslversion="([\w.]+)"[^>]* cipher="([^"]+)"/g),
    ]
      .map((m) => `${m[1]} ${m[2]}`)
      .sort();
  });

  after(async () => {
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('SSLv2, SSLv3, TLS 1.0 and TLS 1.1 are disabled; TLS 1.2 and 1.3 enabled', () => {
    for (const old of ['ssl2', 'ssl3', 'tls1.0', 'tls1.1'])
      assert.equal(protocols.get(old), false, `${old}: ${JSON.stringify([...protocols])}`);
    for (const current of ['tls1.2', 'tls1.3'])
      assert.equal(protocols.get(current), true, `${current}: ${JSON.stringify([...protocols])}`);
  });

  test('every accepted cipher suite is an AEAD (GCM or ChaCha20-Poly1305; no CBC, no CCM8)', () => {
    assert.ok(accepted.length > 0, 'sslscan listed no accepted suite');
    const weak = accepted.filter((suite) => !isAead(suite.split(' ')[1] as string));
    assert.deepEqual(weak, [], `non-AEAD suites accepted: ${weak.join(', ')}`);
  });

  test('the accepted suites are exactly the expected list', () => {
    assert.deepEqual(accepted, EXPECTED);
  });
});
