import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import {
  createAuthorization,
  deriveUserKey,
  keyFromSeed,
  TOKEN_LENGTH,
} from '../../src/protocol/credentials.js';
import { createAuthenticator } from '../../src/users/authenticator.js';
import { realmOf, UsersFile } from '../../src/users/users-file.js';

const TUNNEL_PATH = '/k2b9x7/connect';
const OTHER_PATH = '/Zq81nV/tunnel';

/** Logs in through the real check, as a client of this installation would (no TLS: zero binding). */
async function logsIn(users: UsersFile, user: string, password: string, tunnelPath = TUNNEL_PATH) {
  const key = await deriveUserKey(tunnelPath, user, password);
  const authorization = createAuthorization(key, null);
  return createAuthenticator(users)({
    target: tunnelPath,
    headers: { get: (name) => (name === 'authorization' ? authorization : undefined) },
    binding: null,
  })?.user;
}

let dir: string;
let counter = 0;
/** A fresh path per test, in a directory of its own so leftovers are easy to see. */
async function freshDir(): Promise<string> {
  const sub = join(dir, `t${counter++}`);
  await import('node:fs/promises').then((fs) => fs.mkdir(sub));
  return sub;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facade-users-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('add, save, load: the file holds the realm and the public key, no password', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('alice', 'hunter2-but-longer', TUNNEL_PATH, { ipv4: '198.18.8.10' });
  await users.save();

  const text = await readFile(path, 'utf8');
  assert.ok(!text.includes('hunter2'));
  assert.ok(!text.includes(TUNNEL_PATH), 'the secret path itself is not in the file');
  const json = JSON.parse(text);
  assert.equal(json.version, 2);
  assert.equal(json.realm, realmOf(TUNNEL_PATH));
  const expected = (await deriveUserKey(TUNNEL_PATH, 'alice', 'hunter2-but-longer')).publicKey;
  assert.equal(json.users.alice.publicKey, expected.toString('base64url'));
  assert.deepEqual(Object.keys(json.users.alice).sort(), ['created', 'publicKey', 'staticIpv4']);
  assert.equal(json.users.alice.staticIpv4, '198.18.8.10');
  assert.ok(!Number.isNaN(Date.parse(json.users.alice.created)));

  const again = await UsersFile.load(path);
  assert.deepEqual(
    again.list().map((u) => [u.name, u.staticIpv4]),
    [['alice', '198.18.8.10']],
  );
  assert.deepEqual(again.get('alice')?.publicKey, expected);
  assert.equal(await logsIn(again, 'alice', 'hunter2-but-longer'), 'alice');
});

test('nothing in the users file logs anyone in, presented in any form', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('alice', 'pw-of-alice', TUNNEL_PATH);
  await users.add('bob', 'pw-of-bob', TUNNEL_PATH, { ipv4: '198.18.8.10' });
  await users.save();
  assert.equal(await logsIn(users, 'alice', 'pw-of-alice'), 'alice', 'the check itself works');

  // Every string in the file (keys and values, at any depth), decoded every way it could be meant.
  const strings: string[] = [];
  const walk = (value: unknown): void => {
    if (typeof value === 'string') strings.push(value);
    else if (typeof value === 'number') strings.push(String(value));
    else if (value !== null && typeof value === 'object')
      for (const [key, inner] of Object.entries(value)) {
        strings.push(key);
        walk(inner);
      }
  };
  walk(JSON.parse(await readFile(path, 'utf8')));
  const byteForms = (text: string): Buffer[] =>
    [
      Buffer.from(text, 'utf8'),
      Buffer.from(text, 'base64'),
      Buffer.from(text, 'base64url'),
      /^[0-9a-f]+$/i.test(text) ? Buffer.from(text, 'hex') : Buffer.alloc(0),
    ].filter((bytes) => bytes.length > 0);

  const authenticate = createAuthenticator(users);
  const attempts: string[] = [];
  const basic = (text: string) => `Basic ${Buffer.from(text, 'latin1').toString('base64')}`;
  for (const user of ['alice', 'bob']) {
    for (const text of strings) {
      attempts.push(basic(`${user}:${text}`), `Basic ${text}`, text);
      for (const bytes of byteForms(text)) {
        attempts.push(basic(`${user}:${bytes.toString('base64url')}`));
        // As a whole token, when long enough: version 2, now, and these bytes as nonce and signature.
        if (bytes.length >= 32) {
          const padded = Buffer.concat([bytes, Buffer.alloc(TOKEN_LENGTH)]).subarray(0, TOKEN_LENGTH - 9);
          const token = Buffer.concat([Buffer.from([2]), Buffer.alloc(8), padded]);
          token.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000)), 1);
          attempts.push(basic(`${user}:${token.toString('base64url')}`));
          // As the seed of a signing key (what a client derives with scrypt).
          attempts.push(createAuthorization(keyFromSeed(user, bytes.subarray(0, 32)), null));
        }
      }
    }
  }
  assert.ok(attempts.length > 100, `${attempts.length} attempts`);
  for (const authorization of attempts) {
    const identity = authenticate({
      target: TUNNEL_PATH,
      headers: { get: (name) => (name === 'authorization' ? authorization : undefined) },
      binding: null,
    });
    assert.equal(identity, null, authorization);
  }
});

test('a version 1 users file is refused with USERS_FILE_V1, naming its users and the fix', async () => {
  const path = join(await freshDir(), 'users.json');
  await writeFile(
    path,
    JSON.stringify({
      version: 1,
      users: {
        alice: { storedKey: randomBytes(32).toString('base64'), created: 'x' },
        bob: { storedKey: randomBytes(32).toString('base64'), created: 'x' },
      },
    }),
  );
  for (const options of [{}, { tunnelPath: TUNNEL_PATH }, { allowMissing: true, tunnelPath: TUNNEL_PATH }])
    await assert.rejects(
      UsersFile.load(path, options),
      (err) =>
        isFacadeError(err, 'USERS_FILE_V1') &&
        err.message.includes(path) &&
        /alice, bob/.test(err.message) &&
        /facade user add/.test(err.message),
    );
});

test('a users file made for another tunnel path is refused with USERS_FILE_REALM, also on reload and add', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true, tunnelPath: TUNNEL_PATH });
  await users.add('alice', 'pw', TUNNEL_PATH);
  await users.save();
  const isRealm = (err: unknown) =>
    isFacadeError(err, 'USERS_FILE_REALM') && (err as Error).message.includes(path);
  await assert.rejects(UsersFile.load(path, { tunnelPath: OTHER_PATH }), isRealm);
  await assert.rejects(users.add('bob', 'pw', OTHER_PATH), isRealm);
  // Without a tunnel path (user list, user del) the file loads.
  assert.equal((await UsersFile.load(path)).size, 1);

  // The server (tunnel path A) keeps its users when the file is replaced by one made for path B.
  const server = await UsersFile.load(path, { tunnelPath: TUNNEL_PATH });
  const other = join(await freshDir(), 'other.json');
  const foreign = await UsersFile.load(other, { allowMissing: true });
  await foreign.add('mallory', 'pw', OTHER_PATH);
  await foreign.save();
  await writeFile(path, await readFile(other, 'utf8'));
  await assert.rejects(server.reloadIfChanged(), isRealm);
  assert.ok(server.has('alice'));
  assert.ok(!server.has('mallory'));
});

test('a users file without users takes on the tunnel path it is used with', async () => {
  const path = join(await freshDir(), 'users.json');
  const empty = await UsersFile.load(path, { allowMissing: true, tunnelPath: OTHER_PATH });
  await empty.save();
  assert.equal(JSON.parse(await readFile(path, 'utf8')).realm, realmOf(OTHER_PATH));
  const users = await UsersFile.load(path, { tunnelPath: TUNNEL_PATH });
  await users.add('alice', 'pw', TUNNEL_PATH);
  await users.save();
  assert.equal(JSON.parse(await readFile(path, 'utf8')).realm, realmOf(TUNNEL_PATH));
});

test('save leaves mode 0600 even when the file was 0644, and no temp files behind', async () => {
  const sub = await freshDir();
  const path = join(sub, 'users.json');
  await writeFile(path, '{"version":2,"users":{}}\n', { mode: 0o644 });
  await chmod(path, 0o644);
  const users = await UsersFile.load(path);
  assert.match(users.permissionsWarning ?? '', /0644/);
  await users.add('bob', 'pw', TUNNEL_PATH);
  await users.save();
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(sub), ['users.json']);
  assert.equal(users.permissionsWarning, undefined);
});

test('a new file is created with mode 0600', async () => {
  const sub = await freshDir();
  const path = join(sub, 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('carol', 'pw', TUNNEL_PATH);
  await users.save();
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(sub), ['users.json']);
});

test('save refuses, writing nothing, when the file changed on disk since it was read', async () => {
  const sub = await freshDir();
  const path = join(sub, 'users.json');
  const first = await UsersFile.load(path, { allowMissing: true });
  const second = await UsersFile.load(path, { allowMissing: true });
  await first.add('one', 'pw', TUNNEL_PATH);
  await first.save();
  const before = await readFile(path, 'utf8');
  await second.add('two', 'pw', TUNNEL_PATH);
  await assert.rejects(
    second.save(),
    (err) => isFacadeError(err, 'USERS_FILE') && /changed on disk/.test(err.message),
  );
  assert.equal(await readFile(path, 'utf8'), before);
  assert.deepEqual(await readdir(sub), ['users.json']);
});

test('add, remove and load errors are coded', async () => {
  const sub = await freshDir();
  const path = join(sub, 'users.json');
  await assert.rejects(
    UsersFile.load(path),
    (err) => isFacadeError(err, 'USERS_FILE') && err.message.includes(path),
  );
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('dave', 'pw', TUNNEL_PATH);
  await assert.rejects(users.add('dave', 'other', TUNNEL_PATH), (err) => isFacadeError(err, 'USER_EXISTS'));
  await assert.rejects(users.add('.dave', 'pw', TUNNEL_PATH), (err) => isFacadeError(err, 'USER_NAME'));
  await assert.rejects(users.add('erin', '', TUNNEL_PATH), (err) => isFacadeError(err, 'USER_PASSWORD'));
  await assert.rejects(users.add('erin', 'pw', TUNNEL_PATH, { ipv4: 'fd00::1' }), (err) =>
    isFacadeError(err, 'USERS_FILE'),
  );
  assert.throws(
    () => users.remove('nobody'),
    (err) => isFacadeError(err, 'USER_UNKNOWN'),
  );
  assert.throws(
    () => users.setStatic('nobody', {}),
    (err) => isFacadeError(err, 'USER_UNKNOWN'),
  );
  users.remove('dave');
  assert.equal(users.size, 0);
});

test('invalid files are refused with USERS_FILE naming the path and the problem', async () => {
  const sub = await freshDir();
  const realm = realmOf(TUNNEL_PATH);
  const key = (bytes: Buffer) => bytes.toString('base64url');
  const cases: Array<[string, string, RegExp]> = [
    ['not-json', '{"version":2,', /not valid JSON/],
    ['array', '[]', /JSON object/],
    ['version', '{"version":3,"users":{}}', /version 3/],
    ['users', `{"version":2,"realm":"${realm}","users":[]}`, /"users" must be an object/],
    [
      'no realm',
      `{"version":2,"users":{"a":{"publicKey":"${key(Buffer.alloc(32))}","created":"x"}}}`,
      /"realm"/,
    ],
    ['bad realm', '{"version":2,"realm":"ABC","users":{}}', /"realm"/],
    ['name', `{"version":2,"realm":"${realm}","users":{".x":{"publicKey":"","created":""}}}`, /not allowed/],
    [
      'old key',
      `{"version":2,"realm":"${realm}","users":{"a":{"storedKey":"${Buffer.alloc(32).toString('base64')}","created":"x"}}}`,
      /publicKey/,
    ],
    [
      'key',
      `{"version":2,"realm":"${realm}","users":{"a":{"publicKey":"${key(Buffer.alloc(31))}","created":"x"}}}`,
      /32 bytes/,
    ],
    [
      'static',
      `{"version":2,"realm":"${realm}","users":{"a":{"publicKey":"${key(Buffer.alloc(32))}","created":"x","staticIpv4":"nope"}}}`,
      /staticIpv4/,
    ],
  ];
  for (const [name, content, pattern] of cases) {
    const path = join(sub, `${name}.json`);
    await writeFile(path, content);
    await assert.rejects(
      UsersFile.load(path),
      (err) => isFacadeError(err, 'USERS_FILE') && err.message.includes(path) && pattern.test(err.message),
      name,
    );
  }
  await assert.rejects(UsersFile.load(sub), (err) => isFacadeError(err, 'USERS_FILE'));
});

test('reloadIfChanged picks up a user added by another writer and keeps the old users on a bad file', async () => {
  const path = join(await freshDir(), 'users.json');
  const server = await UsersFile.load(path, { allowMissing: true });
  await server.add('henry', 'pw', TUNNEL_PATH);
  await server.save();
  assert.equal(await server.reloadIfChanged(), false);

  const cli = await UsersFile.load(path);
  await cli.add('irene', 'pw2', TUNNEL_PATH);
  await cli.save();
  assert.equal(await server.reloadIfChanged(), true);
  assert.equal(await logsIn(server, 'irene', 'pw2'), 'irene');
  assert.equal(await server.reloadIfChanged(), false);

  await writeFile(path, 'garbage');
  await assert.rejects(server.reloadIfChanged(), (err) => isFacadeError(err, 'USERS_FILE'));
  assert.equal(await logsIn(server, 'henry', 'pw'), 'henry');
});

test('a user called __proto__ is an ordinary user and survives a round trip', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('__proto__', 'pw', TUNNEL_PATH);
  await users.add('constructor', 'pw', TUNNEL_PATH);
  await users.save();
  const again = await UsersFile.load(path);
  assert.deepEqual(
    again.list().map((u) => u.name),
    ['__proto__', 'constructor'],
  );
  assert.equal(await logsIn(again, '__proto__', 'pw'), '__proto__');
  assert.equal(again.get('toString'), undefined);
  assert.equal(await logsIn(again, 'toString', 'pw'), undefined);
});

test('setStatic sets and clears static addresses', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('judy', 'pw', TUNNEL_PATH);
  users.setStatic('judy', { ipv4: '198.18.8.20', ipv6: 'fd00:8::20' });
  await users.save();
  const loaded = await UsersFile.load(path);
  assert.equal(loaded.get('judy')?.staticIpv6, 'fd00:8::20');
  loaded.setStatic('judy', {});
  assert.equal(loaded.get('judy')?.staticIpv4, undefined);
});

// Found by the users-file fuzz target (test/fuzz/users-file.fuzz.test.ts): a file with users and
// "realm": null was read as a file without a realm (which only a file nobody was added to may be).
test('fuzz regression: "realm": null is not a realm, with users or without', async () => {
  const sub = await freshDir();
  const cases: Array<[string, string]> = [
    [
      'null-realm-users',
      '{"version":2,"realm":null,"users":{"0":{"publicKey":"sNTI-W4WXRbagRuRrJk0ByNeTfF1opL31lg9w_lOLvA","created":"2024-01-01T00:00:00.000Z"}}}',
    ],
    ['null-realm-empty', '{"version":2,"realm":null,"users":{}}'],
  ];
  for (const [name, content] of cases) {
    const path = join(sub, `${name}.json`);
    await writeFile(path, content);
    await assert.rejects(
      UsersFile.load(path),
      (err) => isFacadeError(err, 'USERS_FILE') && /"realm"/.test(err.message),
      name,
    );
  }
});
