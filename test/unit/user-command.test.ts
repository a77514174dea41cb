import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, test } from 'node:test';
import { runUserCommand } from '../../src/commands/user.js';
import { deriveUserKey } from '../../src/protocol/credentials.js';
import { realmOf, UsersFile } from '../../src/users/users-file.js';

const TUNNEL_PATH = '/k2b9x7/connect';
/** What every add needs now besides --users: the tunnel path the keys are derived from. */
const TP = ['--tunnel-path', TUNNEL_PATH];

let dir: string;
let counter = 0;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facade-user-cmd-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function freshPath(): string {
  return join(dir, `users-${counter++}.json`);
}

/** Runs `facade user ARGS` with `input` on stdin; returns the exit code and what was written. */
async function run(args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  stderr.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  stdin.end(input);
  const code = await runUserCommand(args, { stdin, stdout, stderr });
  return { code, stdout: out, stderr: err };
}

test('add reads the first stdin line as the password; list shows the user', async () => {
  const path = freshPath();
  const added = await run(
    ['add', 'alice', '--users', path, ...TP],
    's3cret pass\r\nthis line is not the password\n',
  );
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stdout, /added user "alice"/);
  assert.equal((await stat(path)).mode & 0o777, 0o600);

  const users = await UsersFile.load(path);
  assert.equal(users.realm, realmOf(TUNNEL_PATH));
  const stored = users.get('alice')?.publicKey;
  assert.deepEqual(stored, (await deriveUserKey(TUNNEL_PATH, 'alice', 's3cret pass')).publicKey);
  assert.notDeepEqual(stored, (await deriveUserKey(TUNNEL_PATH, 'alice', 's3cret pass\r')).publicKey);

  const listed = await run(['list', `--users=${path}`]);
  assert.equal(listed.code, 0);
  assert.equal(listed.stdout, 'alice\n');
});

test('add with static addresses; list prints them; del removes the user', async () => {
  const path = freshPath();
  assert.equal(
    (await run(['add', 'bob', '--users', path, ...TP, '--static-ipv4', '198.18.8.10'], 'pw\n')).code,
    0,
  );
  assert.equal(
    (
      await run(
        [
          'add',
          'carol',
          '--users',
          path,
          ...TP,
          '--static-ipv4',
          '198.18.8.11',
          '--static-ipv6',
          'fd00:8::b',
        ],
        'pw',
      )
    ).code,
    0,
  );
  assert.equal((await run(['add', 'abe', '--users', path, ...TP], 'pw')).code, 0);
  const listed = await run(['list', '--users', path]);
  assert.equal(listed.stdout, 'abe\nbob\tipv4=198.18.8.10\ncarol\tipv4=198.18.8.11\tipv6=fd00:8::b\n');

  const deleted = await run(['del', 'bob', '--users', path]);
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.equal(
    (await run(['list', '--users', path])).stdout,
    'abe\ncarol\tipv4=198.18.8.11\tipv6=fd00:8::b\n',
  );
});

test('a duplicate add exits 1 with the message and changes nothing', async () => {
  const path = freshPath();
  assert.equal((await run(['add', 'dave', '--users', path, ...TP], 'first\n')).code, 0);
  const before = await readFile(path, 'utf8');
  const again = await run(['add', 'dave', '--users', path, ...TP], 'second\n');
  assert.equal(again.code, 1);
  assert.match(again.stderr, /user "dave" already exists/);
  assert.equal(again.stderr.trim().split('\n').length, 1);
  assert.equal(await readFile(path, 'utf8'), before);
});

test('del and list of what is not there exit 1 naming the problem', async () => {
  const path = freshPath();
  const missing = await run(['list', '--users', path]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /does not exist/);
  assert.equal((await run(['add', 'erin', '--users', path, ...TP], 'pw')).code, 0);
  const unknown = await run(['del', 'nobody', '--users', path]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no user "nobody"/);
});

test('an empty or over-long password is refused (exit 2) and no file is written', async () => {
  const path = freshPath();
  for (const input of ['', '\n', '\r\n', 'x'.repeat(5000)]) {
    const result = await run(['add', 'frank', '--users', path, ...TP], input);
    assert.equal(result.code, 2, JSON.stringify(input.slice(0, 10)));
    assert.match(result.stderr, /password for user "frank" is not allowed/);
  }
  await assert.rejects(stat(path), { code: 'ENOENT' });
});

test('usage errors exit 2 with one line naming the problem', async () => {
  const path = freshPath();
  const cases: Array<[string[], RegExp]> = [
    [[], /missing action/],
    [['frobnicate', '--users', path], /unknown action "frobnicate"/],
    [['add', 'gina'], /missing --users FILE \(or --config FILE/],
    [
      ['add', 'gina', '--users', path],
      /add needs the server's tunnel path.*--config FILE.*--tunnel-path PATH/,
    ],
    [
      ['add', 'gina', '--users', path, '--tunnel-path', 'relative'],
      /--tunnel-path expected an absolute path/,
    ],
    [['add', '--users', path], /add needs a user name/],
    [['add', '.gina', '--users', path], /user name ".gina" is not allowed/],
    [['add', 'gina', '--users', path, '--colour', 'red'], /unknown option "--colour"/],
    [['add', 'gina', 'extra', '--users', path], /unexpected argument "extra"/],
    [['add', 'gina', '--users'], /--users needs a value/],
    [['add', 'gina', '--users', path, '--users', path], /given twice/],
    [['add', 'gina', '--users', path, '--static-ipv4', 'fd00::1'], /is not an IPv4 address/],
    [['del', 'gina', '--users', path, '--static-ipv4', '198.18.8.2'], /only go with add/],
    [['list', 'gina', '--users', path], /list takes no user name/],
  ];
  for (const [args, pattern] of cases) {
    const result = await run(args);
    assert.equal(result.code, 2, args.join(' '));
    assert.match(result.stderr, pattern, args.join(' '));
    assert.match(result.stderr, /facade user --help/);
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
  }
  await assert.rejects(stat(path), { code: 'ENOENT' });
});

test('--help prints the usage and exits 0', async () => {
  const result = await run(['--help']);
  assert.equal(result.code, 0);
  assert.match(result.stdout, /facade user add NAME --config FILE/);
  assert.match(result.stdout, /facade user add NAME --users FILE --tunnel-path PATH/);
  assert.match(result.stdout, /stdin/);
  assert.equal((await run(['add', '--help'])).code, 0);
});

test('add --config takes the users file and the tunnel path from the server config', async () => {
  const usersPath = freshPath();
  const configPath = join(dir, `facade-${counter++}.json`);
  await writeFile(
    configPath,
    JSON.stringify({
      listen: '0.0.0.0:443',
      pool: '10.89.0.0/24',
      users: usersPath,
      tunnelPath: TUNNEL_PATH,
    }),
  );
  const added = await run(['add', 'alice', '--config', configPath], 'pw\n');
  assert.equal(added.code, 0, added.stderr);
  const users = await UsersFile.load(usersPath, { tunnelPath: TUNNEL_PATH });
  assert.deepEqual(
    users.get('alice')?.publicKey,
    (await deriveUserKey(TUNNEL_PATH, 'alice', 'pw')).publicKey,
  );
  assert.equal((await run(['list', '--config', configPath])).stdout, 'alice\n');
  // Another tunnel path for the same file: refused before the password is read, nothing written.
  const before = await readFile(usersPath, 'utf8');
  const other = await run(['add', 'bob', '--users', usersPath, '--tunnel-path', '/other/path'], 'pw\n');
  assert.equal(other.code, 2);
  assert.match(other.stderr, /FACADE_ERR_USERS_FILE_REALM|another tunnel path/);
  assert.equal(await readFile(usersPath, 'utf8'), before);
  assert.equal((await run(['del', 'alice', '--config', configPath])).code, 0);
});

test('a version 1 users file: add, list and del say how to move on', async () => {
  const path = freshPath();
  await writeFile(path, '{"version":1,"users":{"alice":{"storedKey":"x","created":"x"}}}\n');
  for (const args of [
    ['add', 'bob', '--users', path, ...TP],
    ['list', '--users', path],
  ]) {
    const result = await run(args, 'pw\n');
    assert.equal(result.code, 2, args.join(' '));
    assert.match(result.stderr, /version 1/);
    assert.match(result.stderr, /alice/);
  }
});
