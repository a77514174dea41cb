// The `facade` binary refuses bad settings before it touches the network or a TUN.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { CLIENT_SETTINGS } from '../../src/config/client-settings.js';
import { SERVER_SETTINGS } from '../../src/config/server-settings.js';
import { inputsOf, type SettingsTable } from '../../src/config/setting.js';
import { UsersFile } from '../../src/users/users-file.js';
import { CLI } from '../helpers/facade.js';
import { makeTestCertificate } from '../helpers/tls-fixture.js';

const run = promisify(execFile);
let dir: string;

async function facade(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facade-cli-'));
  const users = await UsersFile.load(join(dir, 'users.json'), { allowMissing: true });
  await users.add('alice', 'a password', '/t');
  await users.save();
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const serverArgs = (more: string[]): string[] => [
  'server',
  '--listen',
  '127.0.0.1:0',
  '--pool',
  '198.18.8.0/24',
  '--users',
  join(dir, 'users.json'),
  '--state-dir',
  join(dir, 'state'),
  ...more,
];

test('--help lists the commands', async () => {
  const out = await facade(['--help']);
  assert.equal(out.code, 0);
  for (const command of ['server', 'client', 'user', 'init', 'status'])
    assert.match(out.stdout, new RegExp(`facade ${command}`));
});

test('a missing setting is refused with the key that is missing', async () => {
  const out = await facade(serverArgs([]));
  // 2: the consequence of a config error (core/errors.ts): fix the command line or the file.
  assert.equal(out.code, 2);
  assert.match(out.stderr, /config key "tunnelPath": is required/);
  assert.match(out.stderr, /FACADE_ERR_CONFIG_INVALID/);
});

test('a --cert whose --key belongs to another certificate is refused at start', async () => {
  const one = await makeTestCertificate(join(dir, 'one'), ['localhost']);
  const other = await makeTestCertificate(join(dir, 'other'), ['localhost']);
  const out = await facade(
    serverArgs(['--tunnel-path', '/t', '--cert', one.certPath, '--key', other.keyPath]),
  );
  assert.equal(out.code, 2);
  assert.match(out.stderr, /the private key does not match the certificate/);
  assert.match(out.stderr, /FACADE_ERR_CERT_LOAD/);
});

test('server and client --help name every config key and flag', async () => {
  const modes: Array<[string, SettingsTable]> = [
    ['server', SERVER_SETTINGS],
    ['client', CLIENT_SETTINGS],
  ];
  for (const [mode, table] of modes) {
    const out = await facade([mode, '--help']);
    assert.equal(out.code, 0, out.stderr);
    for (const [field, setting] of Object.entries(table))
      for (const input of inputsOf(field, setting)) {
        assert.match(out.stdout, new RegExp(`\\b${input.key}\\b`), `${mode} --help lacks ${input.key}`);
        if (input.flag !== undefined)
          assert.ok(out.stdout.includes(`--${input.flag}`), `${mode} --${input.flag}`);
      }
  }
});

test('an unknown key in the config file is refused by name, and the process exits', async () => {
  const file = join(dir, 'typo.json');
  await writeFile(file, JSON.stringify({ tunelPath: '/t' }));
  const out = await facade(serverArgs(['--config', file]));
  assert.equal(out.code, 2);
  assert.match(out.stderr, /config key "tunelPath": is not a setting; did you mean "tunnelPath"\?/);
  assert.match(out.stderr, /FACADE_ERR_CONFIG_INVALID/);
});

test('an unknown option is a usage error naming it', async () => {
  const out = await facade(serverArgs(['--tunnel-pth', '/t']));
  assert.equal(out.code, 2);
  assert.match(out.stderr, /unknown option "--tunnel-pth"; did you mean "--tunnel-path"\?/);
});
