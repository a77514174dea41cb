import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect, createServer } from 'node:tls';
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
  assert.equal(leaf.ca, false);
  assert.match(leaf.subject, /CN=vpn\.example\.test/);
  assert.ok(leaf.checkPrivateKey(createPrivateKey(made.key)));
  const lifetimeDays = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 86_400_000;
  assert.ok(Math.abs(lifetimeDays - SELF_SIGNED_VALIDITY_DAYS) < 1, `lifetime ${lifetimeDays} days`);
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
