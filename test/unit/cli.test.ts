// The `facade` binary refuses bad settings before it touches the network or a TUN.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
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
  await users.add('alice', 'a password');
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
  assert.equal(out.code, 1);
  assert.match(out.stderr, /config key "tunnelPath": is required/);
  assert.match(out.stderr, /FACADE_ERR_CONFIG_INVALID/);
});

test('a --cert whose --key belongs to another certificate is refused at start', async () => {
  const one = await makeTestCertificate(join(dir, 'one'), ['localhost']);
  const other = await makeTestCertificate(join(dir, 'other'), ['localhost']);
  const out = await facade(
    serverArgs(['--tunnel-path', '/t', '--cert', one.certPath, '--key', other.keyPath]),
  );
  assert.equal(out.code, 1);
  assert.match(out.stderr, /the private key does not match the certificate/);
  assert.match(out.stderr, /FACADE_ERR_CERT_LOAD/);
});
