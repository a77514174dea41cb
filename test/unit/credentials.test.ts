import assert from 'node:assert/strict';
import { createHash, createHmac, scryptSync } from 'node:crypto';
import { test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import {
  computeStoredKey,
  deriveClientKey,
  encodeAuthorization,
  MAX_AUTHORIZATION_LENGTH,
  parseAuthorization,
  passwordFromText,
  validatePassword,
  validateUserName,
} from '../../src/protocol/credentials.js';

const key32 = Buffer.alloc(32, 0xa5);

function basic(credentials: string): string {
  return `Basic ${Buffer.from(credentials, 'latin1').toString('base64')}`;
}

test('deriveClientKey = HMAC-SHA256(scrypt(password, "facade/v1/"+user, N=2^15 r=8 p=1), "facade client key")', async () => {
  const user = 'alice';
  const password = 'correct horse';
  // Computed here step by step from the design, with literal parameters (not the module's constants).
  const stretched = scryptSync(password, `facade/v1/${user}`, 32, {
    N: 32768,
    r: 8,
    p: 1,
    maxmem: 64 * 1024 * 1024,
  });
  const expected = createHmac('sha256', stretched).update('facade client key').digest();
  const actual = await deriveClientKey(user, password);
  assert.equal(actual.length, 32);
  assert.deepEqual(actual, expected);
  // The same vector from an independent implementation (OpenSSL 3), pinning the protocol:
  //   openssl kdf -keylen 32 -kdfopt pass:'correct horse' -kdfopt salt:facade/v1/alice -kdfopt n:32768 \
  //     -kdfopt r:8 -kdfopt p:1 -kdfopt maxmem_bytes:67108864 SCRYPT
  //   printf 'facade client key' | openssl dgst -sha256 -mac HMAC -macopt hexkey:<the above>
  assert.equal(actual.toString('hex'), 'b23319f0e879f224dc99eca9f14beac705fc7f44660f8cc6d0a0365eb4e15446');
});

test('the same password gives different keys for different users', async () => {
  const [a, b] = await Promise.all([deriveClientKey('alice', 'pw'), deriveClientKey('bob', 'pw')]);
  assert.notDeepEqual(a, b);
});

test('computeStoredKey is SHA-256 of the client key', () => {
  assert.deepEqual(computeStoredKey(key32), createHash('sha256').update(key32).digest());
});

test('encodeAuthorization and parseAuthorization round-trip', () => {
  const header = encodeAuthorization('bob@example.org', key32);
  assert.match(header, /^Basic [A-Za-z0-9+/]+=*$/);
  const inner = Buffer.from(header.slice(6), 'base64').toString();
  assert.equal(inner, `bob@example.org:${key32.toString('base64url')}`);
  const parsed = parseAuthorization(header);
  assert.ok(parsed);
  assert.equal(parsed.user, 'bob@example.org');
  assert.deepEqual(parsed.clientKey, key32);
  // Auth schemes are case-insensitive (RFC 9110 11.1).
  assert.ok(parseAuthorization(`basic ${header.slice(6)}`));
  // The longest valid header fits the early length check.
  const longest = encodeAuthorization('u'.repeat(64), key32);
  assert.ok(longest.length <= MAX_AUTHORIZATION_LENGTH);
  assert.ok(parseAuthorization(longest));
});

test('parseAuthorization returns null for every malformed header and never throws', () => {
  const goodKey = key32.toString('base64url');
  const rejected: Array<[string, string | undefined]> = [
    ['missing', undefined],
    ['empty', ''],
    ['wrong scheme', `Bearer ${Buffer.from(`alice:${goodKey}`).toString('base64')}`],
    ['scheme only', 'Basic'],
    ['scheme and space only', 'Basic '],
    ['not base64', 'Basic !!!!'],
    ['base64 with bad length', 'Basic YWJj='],
    ['non-canonical base64 padding bits', 'Basic YR=='],
    ['no colon', basic('alice')],
    ['empty user', basic(`:${goodKey}`)],
    ['user starting with a dot', basic(`.alice:${goodKey}`)],
    ['user with a space', basic(`al ice:${goodKey}`)],
    ['user with a non-ASCII byte', basic(`al\u00e9:${goodKey}`)],
    ['user too long', basic(`${'u'.repeat(65)}:${goodKey}`)],
    ['empty key', basic('alice:')],
    ['key of 31 bytes', basic(`alice:${Buffer.alloc(31, 1).toString('base64url')}`)],
    ['key of 33 bytes', basic(`alice:${Buffer.alloc(33, 1).toString('base64url')}`)],
    ['key in standard base64 with padding', basic(`alice:${key32.toString('base64')}`)],
    ['key with a trailing colon part', basic(`alice:${goodKey}:x`)],
    ['over-long header', `Basic ${'A'.repeat(MAX_AUTHORIZATION_LENGTH)}`],
    ['two credentials', `Basic ${Buffer.from(`alice:${goodKey}`).toString('base64')} extra`],
  ];
  for (const [why, header] of rejected) {
    assert.equal(parseAuthorization(header), null, why);
  }
  // Wrong types from a careless caller do not throw either.
  assert.equal(parseAuthorization(42 as unknown as string), null);
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
  await assert.rejects(deriveClientKey('alice', ''), (err) => isFacadeError(err, 'USER_PASSWORD'));
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
