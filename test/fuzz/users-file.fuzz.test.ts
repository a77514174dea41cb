// Fuzz: the users file parser (src/users/users-file.ts parseUsers, serializeUsers) on arbitrary text, on
// structured JSON with odd names and values, and on mutations of valid files. See docs/FUZZING.md.
//
// Properties:
//  1. parseUsers on any text returns only valid records (a permitted name that is also the map key, a
//     32-byte base64url public key with its KeyObject, a string "created", valid static addresses, a
//     frozen record; a realm of 64 hex digits unless the file has no users) or throws a USERS_FILE /
//     USERS_FILE_V1 coded error; never a raw TypeError or other exception. No input, "__proto__",
//     "constructor" and friends included, changes Object.prototype or any other shared prototype.
//  2. serializeUsers then parseUsers gives back the same users and realm, whatever the names.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { FacadeError } from '../../src/core/errors.js';
import { PUBLIC_KEY_LENGTH, publicKeyObject, userNameProblem } from '../../src/protocol/credentials.js';
import { type ParsedUsers, parseUsers, serializeUsers, type UserRecord } from '../../src/users/users-file.js';
import { runProperty, targetRuns } from './harness.js';

/** Inputs for the whole target: property 1 gets 4/5, property 2 gets 1/5. */
const RUNS = targetRuns(6_000);
const PATH = '/fuzz/users.json';
const REALM = 'a'.repeat(64);
const USERS_FILE_CODES = new Set(['FACADE_ERR_USERS_FILE', 'FACADE_ERR_USERS_FILE_V1']);

/** Names that are properties of every object, and that a careless parser turns into prototype writes. */
const ODD_NAMES = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'valueOf',
  'hasOwnProperty',
  '__defineGetter__',
  'isPrototypeOf',
  'length',
  'size',
  'then',
];

const KEYS = Array.from({ length: 4 }, () => randomBytes(PUBLIC_KEY_LENGTH).toString('base64url'));

const userName = fc.oneof(
  fc.constantFrom(...ODD_NAMES),
  fc.stringMatching(/^[A-Za-z0-9_@-][A-Za-z0-9._@-]{0,63}$/),
  fc.string({ maxLength: 70 }),
);

/** Any JSON value, biased towards the shapes the parser looks at. */
const jsonValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(...KEYS),
  fc.constantFrom('198.18.0.7', 'fd00::7', '::ffff:1.2.3.4', '1.2.3', '', 'x'),
  fc.constant(new Date(0).toISOString()),
  fc.jsonValue({ maxDepth: 2 }),
);

const record = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record(
      {
        publicKey: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...KEYS) }, jsonValue),
        created: fc.oneof({ weight: 4, arbitrary: fc.constant('2024-01-01T00:00:00.000Z') }, jsonValue),
        staticIpv4: fc.oneof({ weight: 4, arbitrary: fc.ipV4() }, jsonValue),
        staticIpv6: fc.oneof({ weight: 4, arbitrary: fc.ipV6() }, jsonValue),
      },
      { requiredKeys: ['publicKey', 'created'] },
    ),
  },
  jsonValue,
  fc.dictionary(fc.constantFrom(...ODD_NAMES, 'publicKey', 'created'), jsonValue, { maxKeys: 4 }),
);

/** A users file as JSON text: keys are written as text, so "__proto__" is an own key after JSON.parse. */
const fileText = fc
  .record({
    version: fc.oneof({ weight: 6, arbitrary: fc.constant(2) }, fc.constant(1), jsonValue),
    realm: fc.oneof(
      { weight: 4, arbitrary: fc.constant(REALM) },
      fc.constant(undefined),
      fc.constantFrom('A'.repeat(64), 'a'.repeat(63), 'g'.repeat(64)),
      jsonValue,
    ),
    users: fc.oneof(
      { weight: 6, arbitrary: fc.array(fc.tuple(userName, record), { maxLength: 4 }) },
      jsonValue.map((v) => [['', v]] as Array<[string, unknown]>),
      fc.constant(null),
    ),
    extra: fc.array(fc.tuple(fc.constantFrom(...ODD_NAMES), jsonValue), { maxLength: 2 }),
  })
  .map(({ version, realm, users, extra }) => {
    const members: string[] = [`"version":${JSON.stringify(version) ?? 'null'}`];
    if (realm !== undefined) members.push(`"realm":${JSON.stringify(realm) ?? 'null'}`);
    const usersText =
      users === null
        ? 'null'
        : users.length === 1 && users[0]![0] === ''
          ? (JSON.stringify(users[0]![1]) ?? 'null')
          : `{${users.map(([n, r]) => `${JSON.stringify(n)}:${objectText(r)}`).join(',')}}`;
    members.push(`"users":${usersText}`);
    for (const [k, v] of extra) members.push(`${JSON.stringify(k)}:${JSON.stringify(v) ?? 'null'}`);
    return `{${members.join(',')}}`;
  });

/** JSON text of a value whose object keys are written literally (JSON.stringify would drop "__proto__"). */
function objectText(value: unknown): string {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return JSON.stringify(value) ?? 'null';
  const entries = Object.getOwnPropertyNames(value).map(
    (k) => `${JSON.stringify(k)}:${objectText((value as Record<string, unknown>)[k])}`,
  );
  return `{${entries.join(',')}}`;
}

/** A valid file, then a few bytes inserted, deleted or replaced. */
const mutated = fc
  .tuple(
    fileText,
    fc.array(
      fc.tuple(fc.nat(), fc.constantFrom('insert', 'delete', 'replace'), fc.string({ maxLength: 3 })),
      {
        minLength: 1,
        maxLength: 3,
      },
    ),
  )
  .map(([text, edits]) => {
    let out = text;
    for (const [at, kind, s] of edits) {
      const i = at % (out.length + 1);
      if (kind === 'insert') out = out.slice(0, i) + s + out.slice(i);
      else if (kind === 'delete') out = out.slice(0, i) + out.slice(i + 1 + s.length);
      else out = out.slice(0, i) + s + out.slice(i + s.length);
    }
    return out;
  });

const anyText = fc.oneof(
  { weight: 4, arbitrary: fileText },
  { weight: 2, arbitrary: mutated },
  fc.string({ unit: 'binary', maxLength: 80 }),
  fc.json({ maxDepth: 3 }),
);

/** Everything a parse could pollute, as it is now. */
function prototypeSnapshot(): string {
  return [Object.prototype, Array.prototype, Function.prototype, Map.prototype, String.prototype]
    .map((proto) => Object.getOwnPropertyNames(proto).sort().join(','))
    .join('|');
}

function checkRecord(name: string, user: UserRecord): void {
  assert.equal(user.name, name);
  assert.equal(userNameProblem(name), null, `accepted user name ${JSON.stringify(name)}`);
  assert.ok(Object.isFrozen(user));
  assert.ok(Buffer.isBuffer(user.publicKey) && user.publicKey.length === PUBLIC_KEY_LENGTH);
  assert.equal(user.key.asymmetricKeyType, 'ed25519');
  assert.equal(typeof user.created, 'string');
  assert.ok(
    user.staticIpv4 === undefined || (typeof user.staticIpv4 === 'string' && isIPv4(user.staticIpv4)),
  );
  assert.ok(
    user.staticIpv6 === undefined || (typeof user.staticIpv6 === 'string' && isIPv6(user.staticIpv6)),
  );
  assert.deepEqual(
    Object.keys(user).sort(),
    [
      'created',
      'key',
      'name',
      'publicKey',
      ...(user.staticIpv4 === undefined ? [] : ['staticIpv4']),
      ...(user.staticIpv6 === undefined ? [] : ['staticIpv6']),
      ...(user.policy === undefined ? [] : ['policy']),
    ].sort(),
  );
}

test('users file fuzz: any text gives valid records or a USERS_FILE error, and pollutes nothing', async (t) => {
  const before = prototypeSnapshot();
  const outcomes = { parsed: 0, withUsers: 0, refused: 0 };
  const property = fc.property(anyText, (text) => {
    let parsed: ParsedUsers;
    try {
      parsed = parseUsers(PATH, text);
    } catch (err) {
      assert.ok(err instanceof FacadeError, `parseUsers threw a non-coded ${String(err)}`);
      assert.ok(USERS_FILE_CODES.has(err.code), err.code);
      assert.ok(err.message.includes(PATH));
      outcomes.refused++;
      return;
    } finally {
      assert.equal(prototypeSnapshot(), before, 'a shared prototype changed');
      assert.equal(({} as Record<string, unknown>).publicKey, undefined);
    }
    outcomes.parsed++;
    if (parsed.users.size > 0) outcomes.withUsers++;
    assert.ok(parsed.users instanceof Map);
    if (parsed.realm === null) assert.equal(parsed.users.size, 0, 'users without a realm');
    else assert.match(parsed.realm, /^[0-9a-f]{64}$/);
    for (const [name, user] of parsed.users) checkRecord(name, user);
  });
  await runProperty(t, 'users-file/any-text', property, Math.ceil((RUNS * 4) / 5));
  t.diagnostic(`outcomes: ${JSON.stringify(outcomes)}`);
});

const validUser = fc.record({
  name: fc.oneof(fc.constantFrom(...ODD_NAMES), fc.stringMatching(/^[A-Za-z0-9_@-][A-Za-z0-9._@-]{0,63}$/)),
  key: fc.constantFrom(...KEYS),
  created: fc.oneof(
    fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
    fc.string({ maxLength: 30 }),
  ),
  ipv4: fc.option(fc.ipV4(), { nil: undefined }),
  ipv6: fc.option(fc.ipV6(), { nil: undefined }),
});

test('users file fuzz: serializeUsers then parseUsers gives the same users back', async (t) => {
  const property = fc.property(
    fc.uniqueArray(validUser, { selector: (u) => u.name, maxLength: 4 }),
    fc.boolean(),
    (users, withRealm) => {
      const map = new Map<string, UserRecord>();
      for (const u of users) {
        const publicKey = Buffer.from(u.key, 'base64url');
        const record: UserRecord = {
          name: u.name,
          publicKey,
          key: publicKeyObject(publicKey),
          created: u.created,
          ...(u.ipv4 === undefined ? {} : { staticIpv4: u.ipv4 }),
          ...(u.ipv6 === undefined ? {} : { staticIpv6: u.ipv6 }),
        };
        map.set(u.name, record);
      }
      const realm = withRealm || map.size > 0 ? REALM : null;
      const back = parseUsers(PATH, serializeUsers(map, realm));
      assert.equal(back.realm, realm);
      // Order is not part of the meaning (JSON.parse puts index-like keys such as "0" first).
      const view = (m: Map<string, UserRecord>) =>
        [...m]
          .map(([name, u]) =>
            JSON.stringify([
              name,
              u.name,
              u.publicKey.toString('hex'),
              u.created,
              u.staticIpv4,
              u.staticIpv6,
            ]),
          )
          .sort();
      assert.deepEqual(view(back.users), view(map));
    },
  );
  await runProperty(t, 'users-file/round-trip', property, Math.ceil(RUNS / 5));
});
