import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import { computeStoredKey, deriveClientKey } from '../../src/protocol/credentials.js';
import { UsersFile } from '../../src/users/users-file.js';

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

test('add, save, load: the file holds SHA-256(clientKey) and no password', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('alice', 'hunter2-but-longer', { ipv4: '198.18.8.10' });
  await users.save();

  const text = await readFile(path, 'utf8');
  assert.ok(!text.includes('hunter2'));
  const json = JSON.parse(text);
  assert.equal(json.version, 1);
  const expected = computeStoredKey(await deriveClientKey('alice', 'hunter2-but-longer'));
  assert.equal(json.users.alice.storedKey, expected.toString('base64'));
  assert.equal(json.users.alice.staticIpv4, '198.18.8.10');
  assert.ok(!Number.isNaN(Date.parse(json.users.alice.created)));

  const again = await UsersFile.load(path);
  assert.deepEqual(
    again.list().map((u) => [u.name, u.staticIpv4]),
    [['alice', '198.18.8.10']],
  );
  assert.deepEqual(again.get('alice')?.storedKey, expected);
});

test('save leaves mode 0600 even when the file was 0644, and no temp files behind', async () => {
  const sub = await freshDir();
  const path = join(sub, 'users.json');
  await writeFile(path, '{"version":1,"users":{}}\n', { mode: 0o644 });
  await chmod(path, 0o644);
  const users = await UsersFile.load(path);
  assert.match(users.permissionsWarning ?? '', /0644/);
  await users.add('bob', 'pw');
  await users.save();
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(sub), ['users.json']);
  assert.equal(users.permissionsWarning, undefined);
});

test('a new file is created with mode 0600', async () => {
  const sub = await freshDir();
  const path = join(sub, 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('carol', 'pw');
  await users.save();
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(sub), ['users.json']);
});

test('save refuses, writing nothing, when the file changed on disk since it was read', async () => {
  const sub = await freshDir();
  const path = join(sub, 'users.json');
  const first = await UsersFile.load(path, { allowMissing: true });
  const second = await UsersFile.load(path, { allowMissing: true });
  await first.add('one', 'pw');
  await first.save();
  const before = await readFile(path, 'utf8');
  await second.add('two', 'pw');
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
  await users.add('dave', 'pw');
  await assert.rejects(users.add('dave', 'other'), (err) => isFacadeError(err, 'USER_EXISTS'));
  await assert.rejects(users.add('.dave', 'pw'), (err) => isFacadeError(err, 'USER_NAME'));
  await assert.rejects(users.add('erin', ''), (err) => isFacadeError(err, 'USER_PASSWORD'));
  await assert.rejects(users.add('erin', 'pw', { ipv4: 'fd00::1' }), (err) =>
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
  const cases: Array<[string, string, RegExp]> = [
    ['not-json', '{"version":1,', /not valid JSON/],
    ['array', '[]', /JSON object/],
    ['version', '{"version":2,"users":{}}', /version 2/],
    ['users', '{"version":1,"users":[]}', /"users" must be an object/],
    ['name', '{"version":1,"users":{".x":{"storedKey":"","created":""}}}', /not allowed/],
    [
      'key',
      `{"version":1,"users":{"a":{"storedKey":"${Buffer.alloc(31).toString('base64')}","created":"x"}}}`,
      /32 bytes/,
    ],
    [
      'static',
      `{"version":1,"users":{"a":{"storedKey":"${Buffer.alloc(32).toString('base64')}","created":"x","staticIpv4":"nope"}}}`,
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

test('verify accepts the right key and rejects a wrong key, an unknown user and a short key', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('frank', 'right password');
  const right = await deriveClientKey('frank', 'right password');
  const wrong = await deriveClientKey('frank', 'wrong password');
  assert.equal(users.verify('frank', right)?.name, 'frank');
  assert.equal(users.verify('frank', wrong), null);
  assert.equal(users.verify('nobody', right), null);
  assert.equal(users.verify('frank', right.subarray(0, 16)), null);
  assert.equal(users.verify('frank', Buffer.alloc(0)), null);
  // The storedKey itself is not a login (it would be if the server compared keys directly).
  assert.equal(users.verify('frank', users.get('frank')!.storedKey), null);
});

test('verify does the same work for an unknown user as for a known one', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('grace', 'pw');
  const right = await deriveClientKey('grace', 'pw');
  const wrong = Buffer.alloc(32, 7);

  // Spy on the real primitives (calling through) and record every cryptographic operation verify makes.
  const trace: string[] = [];
  const realCreateHash = crypto.createHash;
  const realTimingSafeEqual = crypto.timingSafeEqual;
  crypto.createHash = ((algorithm: string, options?: crypto.HashOptions) => {
    trace.push(`hash:${algorithm}`);
    return realCreateHash(algorithm, options);
  }) as typeof crypto.createHash;
  crypto.timingSafeEqual = ((a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
    trace.push(`equal:${a.byteLength}:${b.byteLength}`);
    return realTimingSafeEqual(a, b);
  }) as typeof crypto.timingSafeEqual;
  syncBuiltinESMExports();
  const traces: Record<string, string[]> = {};
  try {
    const cases: Array<[string, string, Buffer]> = [
      ['right key', 'grace', right],
      ['wrong key', 'grace', wrong],
      ['unknown user', 'nobody', wrong],
      ['unknown user, short key', 'nobody', Buffer.alloc(3)],
      ['prototype name', '__proto__', wrong],
    ];
    for (const [label, user, key] of cases) {
      trace.length = 0;
      users.verify(user, key);
      traces[label] = [...trace];
    }
  } finally {
    crypto.createHash = realCreateHash;
    crypto.timingSafeEqual = realTimingSafeEqual;
    syncBuiltinESMExports();
  }
  const expected = ['hash:sha256', 'equal:32:32'];
  for (const [label, ops] of Object.entries(traces)) assert.deepEqual(ops, expected, label);
});

test('reloadIfChanged picks up a user added by another writer and keeps the old users on a bad file', async () => {
  const path = join(await freshDir(), 'users.json');
  const server = await UsersFile.load(path, { allowMissing: true });
  await server.add('henry', 'pw');
  await server.save();
  assert.equal(await server.reloadIfChanged(), false);

  const cli = await UsersFile.load(path);
  await cli.add('irene', 'pw2');
  await cli.save();
  assert.equal(await server.reloadIfChanged(), true);
  assert.equal(server.verify('irene', await deriveClientKey('irene', 'pw2'))?.name, 'irene');
  assert.equal(await server.reloadIfChanged(), false);

  await writeFile(path, 'garbage');
  await assert.rejects(server.reloadIfChanged(), (err) => isFacadeError(err, 'USERS_FILE'));
  assert.equal(server.verify('henry', await deriveClientKey('henry', 'pw'))?.name, 'henry');
});

test('a user called __proto__ is an ordinary user and survives a round trip', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('__proto__', 'pw');
  await users.add('constructor', 'pw');
  await users.save();
  const again = await UsersFile.load(path);
  assert.deepEqual(
    again.list().map((u) => u.name),
    ['__proto__', 'constructor'],
  );
  assert.equal(again.verify('__proto__', await deriveClientKey('__proto__', 'pw'))?.name, '__proto__');
  assert.equal(again.verify('toString', Buffer.alloc(32)), null);
});

test('setStatic sets and clears static addresses', async () => {
  const path = join(await freshDir(), 'users.json');
  const users = await UsersFile.load(path, { allowMissing: true });
  await users.add('judy', 'pw');
  users.setStatic('judy', { ipv4: '198.18.8.20', ipv6: 'fd00:8::20' });
  await users.save();
  const loaded = await UsersFile.load(path);
  assert.equal(loaded.get('judy')?.staticIpv6, 'fd00:8::20');
  loaded.setStatic('judy', {});
  assert.equal(loaded.get('judy')?.staticIpv4, undefined);
});
