// The self-signed default certificate: made once and kept, covering the names asked for, and to a scanner
// the very certificate `openssl req -x509` makes (compared field by field with one openssl makes for the same
// key and names).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect, createServer } from 'node:tls';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import {
  certificateFingerprint,
  loadOrCreateSelfSigned,
  SELF_SIGNED_VALIDITY_DAYS,
} from '../../src/certs/self-signed.js';
import { parsePin } from '../../src/protocol/pin.js';

let dir: string;
let counter = 0;
const freshStateDir = () => join(dir, `state-${++counter}`);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facade-selfsigned-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('made once, then reused across calls with the same fingerprint', async () => {
  const stateDir = freshStateDir();
  const first = await loadOrCreateSelfSigned(stateDir, { names: ['vpn.example.test', '198.18.0.1'] });
  assert.equal(first.created, true);
  assert.equal(first.reason, 'none was stored');
  const certFile = join(stateDir, 'self-signed.crt.pem');
  const keyFile = join(stateDir, 'self-signed.key.pem');
  assert.equal((await stat(stateDir)).mode & 0o777, 0o700);
  assert.equal((await stat(certFile)).mode & 0o777, 0o600);
  assert.equal((await stat(keyFile)).mode & 0o777, 0o600);

  const second = await loadOrCreateSelfSigned(stateDir, { names: ['vpn.example.test', '198.18.0.1'] });
  assert.equal(second.created, false);
  assert.equal(second.reason, undefined);
  assert.equal(second.fingerprint, first.fingerprint);
  assert.equal(second.key, first.key);
  assert.equal(await readFile(certFile, 'utf8'), first.cert);

  // A subset of the names is still covered: no new certificate, no new pin.
  const subset = await loadOrCreateSelfSigned(stateDir, { names: ['198.18.0.1'] });
  assert.equal(subset.fingerprint, first.fingerprint);
});

test('every name lands in the SAN; the key matches; it lasts the documented validity', async () => {
  const names = ['vpn.example.test', 'other.example.test', '198.18.0.7', 'fd00::7'];
  const made = await loadOrCreateSelfSigned(freshStateDir(), { names });
  const leaf = new X509Certificate(made.cert);
  assert.equal(leaf.checkHost('vpn.example.test', { subject: 'never' }), 'vpn.example.test');
  assert.equal(leaf.checkHost('other.example.test', { subject: 'never' }), 'other.example.test');
  assert.equal(leaf.checkIP('198.18.0.7'), '198.18.0.7');
  assert.equal(leaf.checkIP('fd00::7'), 'fd00::7');
  assert.equal(leaf.checkHost('unlisted.example.test'), undefined);
  assert.equal(
    leaf.checkHost(hostname(), { subject: 'never' }),
    undefined,
    "the machine's name is not in it",
  );
  // openssl req -x509's basicConstraints: CA:TRUE, as every self-signed certificate it makes.
  assert.equal(leaf.ca, true);
  assert.equal(leaf.subject, 'CN=vpn.example.test');
  assert.equal(leaf.issuer, leaf.subject);
  assert.ok(leaf.checkPrivateKey(createPrivateKey(made.key)));
  const lifetimeDays = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 86_400_000;
  assert.equal(lifetimeDays, SELF_SIGNED_VALIDITY_DAYS, 'exactly N days, as openssl -days N');
});

const OPENSSL = ['/usr/bin/openssl', '/usr/local/bin/openssl'].find((p) => existsSync(p));

test('field for field what `openssl req -x509 -days 3650` makes for the same key and names', {
  skip: OPENSSL === undefined ? 'openssl is not installed (Debian: apt-get install openssl)' : false,
}, async () => {
  const stateDir = freshStateDir();
  const made = await loadOrCreateSelfSigned(stateDir, { names: ['198.18.0.9', 'vpn.example.test'] });
  const opensslCert = join(stateDir, 'openssl.crt.pem');
  await promisify(execFile)(OPENSSL as string, [
    ...[
      'req',
      '-x509',
      '-key',
      join(stateDir, 'self-signed.key.pem'),
      '-days',
      String(SELF_SIGNED_VALIDITY_DAYS),
    ],
    ...['-subj', '/CN=198.18.0.9', '-addext', 'subjectAltName=IP:198.18.0.9,DNS:vpn.example.test'],
    ...['-out', opensslCert],
  ]);
  const ours = new x509.X509Certificate(made.cert);
  const theirs = new x509.X509Certificate(await readFile(opensslCert, 'utf8'));
  const fields = (cert: x509.X509Certificate) => ({
    subject: Buffer.from(cert.subjectName.toArrayBuffer()).toString('hex'),
    issuer: Buffer.from(cert.issuerName.toArrayBuffer()).toString('hex'),
    publicKey: Buffer.from(cert.publicKey.rawData).toString('hex'),
    signature: cert.signatureAlgorithm,
    lifetimeMs: cert.notAfter.getTime() - cert.notBefore.getTime(),
    // Type, criticality and value of every extension, in order (the key identifiers are the key's own).
    extensions: cert.extensions.map((extension) => ({
      type: extension.type,
      critical: extension.critical,
      value: Buffer.from(extension.value).toString('hex'),
    })),
  });
  assert.deepEqual(fields(ours), fields(theirs));
  // The public key and its size: an RSA key of 2048 bits, as `-newkey rsa` gives.
  assert.equal(new X509Certificate(made.cert).publicKey.asymmetricKeyDetails?.modulusLength, 2048);
  // A random positive serial of at most 159 bits (20 bytes), as openssl's.
  for (const cert of [ours, theirs]) {
    assert.ok(cert.serialNumber.length <= 40 && cert.serialNumber.length >= 30, cert.serialNumber);
    assert.ok(Number.parseInt(cert.serialNumber.slice(0, 2), 16) < 0x80, cert.serialNumber);
  }
});

test('replaced when a name is missing, when it nears expiry, or when the stored files are damaged', async () => {
  const stateDir = freshStateDir();
  const first = await loadOrCreateSelfSigned(stateDir, { names: ['198.18.0.1'] });

  const moreNames = await loadOrCreateSelfSigned(stateDir, { names: ['198.18.0.1', 'vpn.example.test'] });
  assert.equal(moreNames.created, true);
  assert.match(moreNames.reason!, /does not cover vpn\.example\.test/);
  assert.notEqual(moreNames.fingerprint, first.fingerprint);

  const later = Date.now() + (SELF_SIGNED_VALIDITY_DAYS - 10) * 86_400_000;
  const nearExpiry = await loadOrCreateSelfSigned(stateDir, { names: ['198.18.0.1'], now: () => later });
  assert.equal(nearExpiry.created, true);
  assert.match(nearExpiry.reason!, /expires on/);

  await writeFile(join(stateDir, 'self-signed.crt.pem'), 'not a certificate');
  const repaired = await loadOrCreateSelfSigned(stateDir, { names: ['198.18.0.1'] });
  assert.equal(repaired.created, true);
  assert.match(repaired.reason!, /unusable: .*no PEM CERTIFICATE/);
  const reused = await loadOrCreateSelfSigned(stateDir, { names: ['198.18.0.1'] });
  assert.equal(reused.fingerprint, repaired.fingerprint);
});

test('names that are neither DNS names nor IP addresses are refused with a coded error', async () => {
  await assert.rejects(loadOrCreateSelfSigned(freshStateDir(), { names: [] }), {
    code: 'FACADE_ERR_CONFIG_INVALID',
  });
  await assert.rejects(loadOrCreateSelfSigned(freshStateDir(), { names: ['bad name/with slash'] }), {
    code: 'FACADE_ERR_CONFIG_INVALID',
    message: /bad name\/with slash/,
  });
});

test('fingerprint: sha256: and 64 lower-case hex digits of the DER leaf, same from PEM and DER', async () => {
  const made = await loadOrCreateSelfSigned(freshStateDir(), { names: ['vpn.example.test'] });
  assert.match(made.fingerprint, /^sha256:[0-9a-f]{64}$/);
  const leaf = new X509Certificate(made.cert);
  assert.equal(made.fingerprint, `sha256:${leaf.fingerprint256.replaceAll(':', '').toLowerCase()}`);
  assert.equal(certificateFingerprint(made.cert), made.fingerprint);
  assert.equal(certificateFingerprint(leaf.raw), made.fingerprint);
  // A chain counts by its leaf.
  const other = await loadOrCreateSelfSigned(freshStateDir(), { names: ['other.example.test'] });
  assert.equal(certificateFingerprint(`${made.cert}${other.cert}`), made.fingerprint);
});

test('a TLS client sees the fingerprint it would pin, and can trust the certificate as its own CA', async (t) => {
  const made = await loadOrCreateSelfSigned(freshStateDir(), { names: ['127.0.0.1'] });
  const server = createServer({ cert: made.cert, key: made.key }, (socket) => socket.end('hi'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;
  const seen = await new Promise<{ fingerprint: string; authorized: boolean }>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca: made.cert }, () => {
      resolve({
        fingerprint: certificateFingerprint(socket.getPeerCertificate().raw),
        authorized: socket.authorized,
      });
      socket.end();
    });
    socket.on('error', reject);
  });
  assert.equal(seen.authorized, true);
  assert.equal(seen.fingerprint, made.fingerprint);
});

test('parsePin accepts the canonical form, upper case and colon-separated pairs', () => {
  const hex = 'e133a0b53b71d5f00d1f13b8fbe28f2555140f8dd21ce68efacea8cde3a4029e';
  assert.equal(parsePin(`sha256:${hex}`), `sha256:${hex}`);
  assert.equal(parsePin(`  SHA256:${hex.toUpperCase()}\n`), `sha256:${hex}`);
  const colons = hex.toUpperCase().match(/../g)!.join(':');
  assert.equal(parsePin(`sha256:${colons}`), `sha256:${hex}`);
});

test('parsePin refuses other algorithms, wrong lengths, non-hex and broken colon groups', () => {
  const hex = 'e133a0b53b71d5f00d1f13b8fbe28f2555140f8dd21ce68efacea8cde3a4029e';
  const cases: [string, RegExp][] = [
    [hex, /only sha256/],
    [`sha1:${hex.slice(0, 40)}`, /sha1, only sha256/],
    [`sha256:${hex.slice(2)}`, /62 hex digits, not 64/],
    [`sha256:${hex.slice(1)}z`, /not hex digits/],
    [`sha256:${hex.slice(0, 3)}:${hex.slice(3)}`, /colons must separate pairs/],
    ['sha256:', /0 hex digits/],
  ];
  for (const [input, reason] of cases) {
    assert.throws(() => parsePin(input), { code: 'FACADE_ERR_PIN_INVALID', message: reason }, input);
  }
});
