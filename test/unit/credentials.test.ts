import assert from 'node:assert/strict';
import { createPublicKey, randomBytes, scryptSync, verify } from 'node:crypto';
import { test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import * as credentials from '../../src/protocol/credentials.js';
import {
  authorizationUser,
  createAuthorization,
  deriveUserKey,
  encodeAuthorization,
  keyFromSeed,
  MAX_AUTHORIZATION_LENGTH,
  parseAuthorization,
  passwordFromText,
  publicKeyObject,
  saltFor,
  signedMessage,
  TOKEN_LENGTH,
  validatePassword,
  validateUserName,
  ZERO_BINDING,
} from '../../src/protocol/credentials.js';

const REALM = '/k2b9x7/connect';

function basic(text: string): string {
  return `Basic ${Buffer.from(text, 'latin1').toString('base64')}`;
}

test('keyFromSeed is RFC 8032 Ed25519 (test vector 1)', () => {
  const seed = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex');
  const key = keyFromSeed('alice', seed);
  assert.equal(
    key.publicKey.toString('hex'),
    'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
  );
  // And the public key as node reads it from a JWK, an independent path to the same key.
  const jwk = createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: key.publicKey.toString('base64url') },
    format: 'jwk',
  });
  assert.deepEqual(jwk.export({ format: 'jwk' }), publicKeyObject(key.publicKey).export({ format: 'jwk' }));
});

test('deriveUserKey = Ed25519(seed = scrypt(password, "facade/v2/" + realm + "/" + user, N=2^15 r=8 p=1))', async () => {
  const seed = scryptSync('correct horse', `facade/v2/${REALM}/alice`, 32, {
    N: 32768,
    r: 8,
    p: 1,
    maxmem: 64 * 1024 * 1024,
  });
  const key = await deriveUserKey(REALM, 'alice', 'correct horse');
  assert.deepEqual(key.publicKey, keyFromSeed('alice', seed).publicKey);
  assert.equal(saltFor(REALM, 'alice'), 'facade/v2//k2b9x7/connect/alice');
  // The same vector from an independent implementation (OpenSSL 3), pinning the protocol:
  //   openssl kdf -keylen 32 -kdfopt pass:'correct horse' -kdfopt salt:facade/v2//k2b9x7/connect/alice \
  //     -kdfopt n:32768 -kdfopt r:8 -kdfopt p:1 -kdfopt maxmem_bytes:67108864 SCRYPT      (the seed)
  //   (302e020100300506032b657004220420 || seed) | openssl pkey -inform DER -pubout -outform DER | tail -c 32
  assert.equal(seed.toString('hex'), '66b2261c50561f8632fa02de1a5d91adb872648c29bfeccc86a5f55660576ab1');
  assert.equal(
    key.publicKey.toString('hex'),
    '5e51e0620222192ed94606d4b4a599bfc489b8d6c12c2e08e77e67ea550df9c1',
  );
});

test('precomputation: the same user and password on two installations give unrelated keys; v1 is gone', async () => {
  const [a, b, c] = await Promise.all([
    deriveUserKey('/k2b9x7/connect', 'admin', 'password1'),
    deriveUserKey('/Zq81nV/tunnel', 'admin', 'password1'),
    deriveUserKey('/k2b9x7/connect', 'root', 'password1'),
  ]);
  assert.notDeepEqual(a.publicKey, b.publicKey, 'another tunnel path, another key');
  assert.notDeepEqual(a.publicKey, c.publicKey, 'another user, another key');
  // The v1 derivation (salt "facade/v1/" + user, the same on every installation) no longer exists.
  assert.equal((credentials as Record<string, unknown>).deriveClientKey, undefined);
  assert.equal((credentials as Record<string, unknown>).computeStoredKey, undefined);
  assert.ok(!saltFor(REALM, 'admin').startsWith('facade/v1/'));
  assert.ok(saltFor(REALM, 'admin').includes(REALM));
});

test('createAuthorization: Basic user:base64url(2 || time || nonce || signature over the binding)', () => {
  const key = keyFromSeed('bob@example.org', randomBytes(32));
  const binding = randomBytes(32);
  const nonce = randomBytes(16);
  const header = createAuthorization(key, binding, { nowMs: 1_700_000_000_999, nonce });
  assert.match(header, /^Basic [A-Za-z0-9+/]+=*$/);
  const inner = Buffer.from(header.slice(6), 'base64').toString('latin1');
  const [user, encoded] = inner.split(':') as [string, string];
  assert.equal(user, 'bob@example.org');
  const token = Buffer.from(encoded, 'base64url');
  assert.equal(token.length, TOKEN_LENGTH);
  assert.equal(token[0], 2);
  assert.equal(token.readBigUInt64BE(1), 1_700_000_000n);
  assert.deepEqual(token.subarray(9, 25), nonce);
  const message = Buffer.concat([
    Buffer.from('facade/v2 tunnel auth\0bob@example.org\0', 'latin1'),
    token.subarray(1, 9),
    nonce,
    binding,
  ]);
  assert.deepEqual(signedMessage(user, 1_700_000_000n, nonce, binding), message);
  assert.ok(verify(null, message, publicKeyObject(key.publicKey), token.subarray(25)));

  const parsed = parseAuthorization(header);
  assert.ok(parsed);
  assert.equal(parsed.user, 'bob@example.org');
  assert.equal(parsed.time, 1_700_000_000n);
  assert.deepEqual(parsed.nonce, nonce);
  assert.deepEqual(parsed.signature, token.subarray(25));
  // Auth schemes are case-insensitive (RFC 9110 11.1).
  assert.ok(parseAuthorization(`basic ${header.slice(6)}`));
  // Without TLS at facade: the zero binding. Every call: a fresh nonce.
  const plain = parseAuthorization(createAuthorization(key, null));
  assert.ok(plain);
  assert.ok(
    verify(
      null,
      signedMessage(user, plain.time, plain.nonce, ZERO_BINDING),
      publicKeyObject(key.publicKey),
      plain.signature,
    ),
  );
  assert.notDeepEqual(parseAuthorization(createAuthorization(key, null))?.nonce, plain.nonce);
  // The longest valid header fits the early length check.
  const longest = createAuthorization(keyFromSeed('u'.repeat(64), randomBytes(32)), null);
  assert.ok(longest.length <= MAX_AUTHORIZATION_LENGTH);
  assert.ok(parseAuthorization(longest));
});

test('parseAuthorization returns null for every malformed header, v1 included, and never throws', () => {
  const good = { time: 1n, nonce: randomBytes(16), signature: randomBytes(64) };
  const goodToken = Buffer.from(
    Buffer.from(encodeAuthorization('alice', good).slice(6), 'base64').toString().split(':')[1] as string,
    'base64url',
  );
  const goodEncoded = goodToken.toString('base64url');
  assert.ok(parseAuthorization(basic(`alice:${goodEncoded}`)));
  const rejected: Array<[string, string | undefined]> = [
    ['missing', undefined],
    ['empty', ''],
    ['wrong scheme', `Bearer ${Buffer.from(`alice:${goodEncoded}`).toString('base64')}`],
    ['scheme only', 'Basic'],
    ['scheme and space only', 'Basic '],
    ['not base64', 'Basic !!!!'],
    ['base64 with bad length', 'Basic YWJj='],
    ['non-canonical base64 padding bits', 'Basic YR=='],
    ['no colon', basic('alice')],
    ['empty user', basic(`:${goodEncoded}`)],
    ['user starting with a dot', basic(`.alice:${goodEncoded}`)],
    ['user with a space', basic(`al ice:${goodEncoded}`)],
    ['user with a non-ASCII byte', basic(`al\u00e9:${goodEncoded}`)],
    ['user too long', basic(`${'u'.repeat(65)}:${goodEncoded}`)],
    ['empty token', basic('alice:')],
    ['v1: a 32-byte client key', basic(`alice:${randomBytes(32).toString('base64url')}`)],
    ['token one byte short', basic(`alice:${goodToken.subarray(1).toString('base64url')}`)],
    [
      'token one byte long',
      basic(`alice:${Buffer.concat([goodToken, Buffer.from([0])]).toString('base64url')}`),
    ],
    ['version 1 byte', encodeAuthorization('alice', { ...good, version: 1 })],
    ['version 3 byte', encodeAuthorization('alice', { ...good, version: 3 })],
    ['token in standard base64', basic(`alice:${goodToken.toString('base64')}`)],
    ['token with a trailing colon part', basic(`alice:${goodEncoded}:x`)],
    ['over-long header', `Basic ${'A'.repeat(MAX_AUTHORIZATION_LENGTH)}`],
    ['two credentials', `Basic ${Buffer.from(`alice:${goodEncoded}`).toString('base64')} extra`],
  ];
  for (const [why, header] of rejected) assert.equal(parseAuthorization(header), null, why);
  // Wrong types from a careless caller do not throw either.
  assert.equal(parseAuthorization(42 as unknown as string), null);
  // The refusal log still finds the name in a v1 header.
  assert.equal(authorizationUser(basic(`alice:${randomBytes(32).toString('base64url')}`)), 'alice');
  assert.equal(authorizationUser(basic('.x:y')), undefined);
  assert.equal(authorizationUser(undefined), undefined);
});

test('user names: 1..64 of [A-Za-z0-9._@-], not starting with a dot', () => {
  for (const ok of ['a', 'alice', 'a.b-c_d@example.org', 'x'.repeat(64), '__proto__']) validateUserName(ok);
  for (const bad of ['', '.hidden', 'a b', 'a:b', 'a/b', 'x'.repeat(65), 'caf\u00e9']) {
    assert.throws(
      () => validateUserName(bad),
      (err) => isFacadeError(err, 'USER_NAME'),
      JSON.stringify(bad),
    );
  }
});

test('passwords: empty and over-long ones are refused with USER_PASSWORD', async () => {
  await assert.rejects(deriveUserKey(REALM, 'alice', ''), (err) => isFacadeError(err, 'USER_PASSWORD'));
  assert.throws(
    () => validatePassword('alice', 'x'.repeat(1025)),
    (err) => isFacadeError(err, 'USER_PASSWORD'),
  );
  validatePassword('alice', 'x'.repeat(1024));
});

test('passwordFromText takes the first line without its line ending', () => {
  assert.equal(passwordFromText('secret\n'), 'secret');
  assert.equal(passwordFromText('secret\r\n'), 'secret');
  assert.equal(passwordFromText('secret'), 'secret');
  assert.equal(passwordFromText('se cret \nsecond line\n'), 'se cret ');
  assert.equal(passwordFromText('\nsecret'), '');
});
