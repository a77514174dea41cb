import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  certificatePaths,
  ensureStateDir,
  loadCertificatePair,
  readCertificateValidity,
  saveCertificatePair,
  writeFileAtomic,
} from '../../src/certs/cert-store.js';
import { loadOrCreateSelfSigned } from '../../src/certs/self-signed.js';

let dir: string;
let counter = 0;
const fresh = (name = 'd') => join(dir, `${name}-${++counter}`);

/** Two distinct certificate/key pairs to store (made by self-signed.ts in scratch directories). */
let pairA: { cert: string; key: string };
let pairB: { cert: string; key: string };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facade-certstore-'));
  pairA = await loadOrCreateSelfSigned(fresh('scratch'), { names: ['a.example.test'] });
  pairB = await loadOrCreateSelfSigned(fresh('scratch'), { names: ['b.example.test'] });
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('ensureStateDir creates nested directories 0700 and tightens an existing loose one', async () => {
  const nested = join(fresh(), 'var', 'lib', 'facade');
  await ensureStateDir(nested);
  assert.equal((await stat(nested)).mode & 0o777, 0o700);

  const loose = fresh();
  await mkdir(loose, { mode: 0o755 });
  await chmod(loose, 0o755);
  await ensureStateDir(loose);
  assert.equal((await stat(loose)).mode & 0o777, 0o700);
});

test('ensureStateDir refuses a file in the way with FACADE_ERR_STATE_DIR naming it', async () => {
  const file = fresh();
  await writeFile(file, 'x');
  await assert.rejects(ensureStateDir(file), { code: 'FACADE_ERR_STATE_DIR', message: new RegExp(file) });
});

test('writeFileAtomic writes 0600 whatever the umask and the old mode, and leaves no temp file', async () => {
  const stateDir = fresh();
  await ensureStateDir(stateDir);
  const path = join(stateDir, 'secret.pem');
  await writeFile(path, 'old content', { mode: 0o644 });
  await chmod(path, 0o644);
  const oldUmask = process.umask(0);
  try {
    await writeFileAtomic(path, 'new content');
  } finally {
    process.umask(oldUmask);
  }
  assert.equal(await readFile(path, 'utf8'), 'new content');
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(stateDir), ['secret.pem']);
});

test('writeFileAtomic replaces by rename: a reader holding the old file still reads all of it', async () => {
  const stateDir = fresh();
  await ensureStateDir(stateDir);
  const path = join(stateDir, 'cert.pem');
  const oldText = 'A'.repeat(100_000);
  await writeFileAtomic(path, oldText);
  const before = await stat(path);
  const reader = await open(path, 'r');
  try {
    await writeFileAtomic(path, 'B'.repeat(10));
    // A new inode took the name; the old one, complete, is still what the open reader sees.
    assert.notEqual((await stat(path)).ino, before.ino);
    assert.equal(await reader.readFile('utf8'), oldText);
  } finally {
    await reader.close();
  }
  assert.equal(await readFile(path, 'utf8'), 'B'.repeat(10));
});

test('a failed write keeps the old file and leaves no temp file behind', async () => {
  const stateDir = fresh();
  await ensureStateDir(stateDir);
  // A non-empty directory where the file should go: the final rename fails (EISDIR).
  const path = join(stateDir, 'blocked');
  await mkdir(path);
  await writeFile(join(path, 'keep'), 'kept');
  await assert.rejects(writeFileAtomic(path, 'data'), { code: 'FACADE_ERR_STATE_DIR', errno: 'EISDIR' });
  assert.deepEqual(await readdir(stateDir), ['blocked']);
  assert.equal(await readFile(join(path, 'keep'), 'utf8'), 'kept');
});

test('save then load round-trips a pair with its validity; files are 0600', async () => {
  const stateDir = fresh();
  const saved = await saveCertificatePair(stateDir, 'acme-a.example.test', pairA);
  const paths = certificatePaths(stateDir, 'acme-a.example.test');
  assert.equal((await stat(paths.cert)).mode & 0o777, 0o600);
  assert.equal((await stat(paths.key)).mode & 0o777, 0o600);
  assert.equal((await stat(stateDir)).mode & 0o777, 0o700);

  const loaded = await loadCertificatePair(stateDir, 'acme-a.example.test');
  assert.ok(loaded);
  assert.equal(loaded.cert, pairA.cert);
  assert.equal(loaded.key, pairA.key);
  const leaf = new X509Certificate(pairA.cert);
  assert.equal(loaded.validity.notBefore.getTime(), Date.parse(leaf.validFrom));
  assert.equal(loaded.validity.notAfter.getTime(), Date.parse(leaf.validTo));
  assert.equal(loaded.validity.serialNumber, leaf.serialNumber);
  assert.deepEqual(loaded.validity, saved.validity);
  assert.match(loaded.validity.subjectAltName!, /DNS:a\.example\.test/);
});

test('load: nothing stored is undefined; half a pair, a mismatched key or garbage is FACADE_ERR_CERT_LOAD', async () => {
  const stateDir = fresh();
  assert.equal(await loadCertificatePair(stateDir, 'x'), undefined);

  await saveCertificatePair(stateDir, 'x', pairA);
  const paths = certificatePaths(stateDir, 'x');
  // What a crash between the key and the certificate rename leaves: B's key next to A's certificate.
  await writeFile(paths.key, pairB.key);
  await assert.rejects(loadCertificatePair(stateDir, 'x'), {
    code: 'FACADE_ERR_CERT_LOAD',
    message: /does not match/,
  });

  await rm(paths.key);
  await assert.rejects(loadCertificatePair(stateDir, 'x'), {
    code: 'FACADE_ERR_CERT_LOAD',
    message: /missing/,
  });

  await writeFile(paths.key, pairA.key);
  await writeFile(paths.cert, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  await assert.rejects(loadCertificatePair(stateDir, 'x'), { code: 'FACADE_ERR_CERT_LOAD' });
});

test('save refuses a pair whose key does not match before touching the files', async () => {
  const stateDir = fresh();
  await saveCertificatePair(stateDir, 'y', pairA);
  await assert.rejects(saveCertificatePair(stateDir, 'y', { cert: pairA.cert, key: pairB.key }), {
    code: 'FACADE_ERR_CERT_LOAD',
  });
  const loaded = await loadCertificatePair(stateDir, 'y');
  assert.equal(loaded?.key, pairA.key);
});

test('readCertificateValidity reads the leaf of a chain', () => {
  const chain = `${pairA.cert}${pairB.cert}`;
  const validity = readCertificateValidity(chain);
  assert.equal(validity.serialNumber, new X509Certificate(pairA.cert).serialNumber);
  assert.throws(() => readCertificateValidity('nothing here', 'test input'), {
    code: 'FACADE_ERR_CERT_LOAD',
    message: /test input: no PEM CERTIFICATE block/,
  });
});
