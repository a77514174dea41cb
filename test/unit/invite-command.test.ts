// `facade init` and `facade user invite` through the real CLI (no root needed): what they write, the link
// they print (one line starting with facade://) and that its key is the one the users file checks.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { keyFromSeed } from '../../src/protocol/credentials.js';
import { type Invite, parseInvite } from '../../src/protocol/invite.js';
import { derFingerprint } from '../../src/protocol/pin.js';
import { UsersFile } from '../../src/users/users-file.js';
import { CLI } from '../helpers/facade.js';

const exec = promisify(execFile);
let dir: string;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `facade ARGS` with `input` on stdin. */
function facade(args: string[], input = ''): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(input);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The one line of the output that starts with facade://, parsed. */
function inviteIn(output: string): Invite {
  const lines = output.split('\n').filter((l) => l.startsWith('facade://'));
  assert.equal(lines.length, 1, output);
  return parseInvite(lines[0] as string);
}

async function storedKey(usersPath: string, user: string): Promise<Buffer | undefined> {
  return (await UsersFile.load(usersPath)).get(user)?.publicKey;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facade-invite-cmd-'));
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("init writes the config (with host), a users file with the first user, the certificate, and that user's invite", async () => {
  const d = join(dir, 'init');
  const out = await facade(['init', '--dir', d, '--host', '198.18.9.1:8443', '--user', 'first']);
  assert.equal(out.code, 0, out.stderr);
  const config = JSON.parse(await readFile(join(d, 'facade.json'), 'utf8')) as Record<string, string>;
  assert.equal(config.host, '198.18.9.1:8443');
  assert.equal((await stat(join(d, 'facade.json'))).mode & 0o777, 0o600);
  const invite = inviteIn(out.stdout);
  assert.deepEqual(
    { user: invite.user, host: invite.host, port: invite.port, tunnelPath: invite.tunnelPath },
    { user: 'first', host: '198.18.9.1', port: 8443, tunnelPath: config.tunnelPath },
  );
  const served = new X509Certificate(await readFile(join(d, 'state', 'self-signed.crt.pem')));
  assert.equal(invite.pin, derFingerprint(served.raw), 'the pin of the certificate init made');
  assert.deepEqual(
    await storedKey(join(d, 'users.json'), 'first'),
    keyFromSeed('first', invite.seed).publicKey,
  );
  assert.match(out.stdout, /a secret, like a password/);
  assert.doesNotMatch(out.stdout, /[▀▄█]/, 'no QR code into a pipe');

  const again = await facade(['init', '--dir', d]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /exists; not overwriting it/);
});

test('init with an ACME domain: the invite trusts the system CAs and dials the domain', async () => {
  const d = join(dir, 'acme');
  const out = await facade(['init', '--dir', d, '--domain', 'vpn.example.com', '--email', 'ops@example.com']);
  assert.equal(out.code, 0, out.stderr);
  const invite = inviteIn(out.stdout);
  assert.equal(invite.host, 'vpn.example.com');
  assert.equal(invite.port, 443);
  assert.equal(invite.pin, undefined);
  assert.match(out.stdout, /\?ca=system$/m);
  const bad = await facade(['init', '--dir', join(dir, 'acme2'), '--domain', 'vpn.example.com']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--domain needs --email/);
});

test('user invite: the password on stdin gives the link of the key the users file has; a wrong one is refused', async () => {
  const d = join(dir, 'init');
  const config = join(d, 'facade.json');
  assert.equal((await facade(['user', 'add', 'carol', '--config', config], 'carols password\n')).code, 0);
  const out = await facade(['user', 'invite', 'carol', '--config', config], 'carols password\n');
  assert.equal(out.code, 0, out.stderr);
  const invite = inviteIn(out.stdout);
  assert.deepEqual(
    await storedKey(join(d, 'users.json'), 'carol'),
    keyFromSeed('carol', invite.seed).publicKey,
  );
  assert.ok(!out.stdout.includes('carols password'), 'the password is not in the link');

  const wrong = await facade(['user', 'invite', 'carol', '--config', config], 'not it\n');
  assert.equal(wrong.code, 2);
  assert.match(wrong.stderr, /is not the password the users file has the key of/);
  const unknown = await facade(['user', 'invite', 'dave', '--config', config], 'x\n');
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no user "dave".*--new-key/);
});

test('user invite --new-key: a new user is added; an existing one gets a new key and keeps its static address', async () => {
  const d = join(dir, 'init');
  const config = join(d, 'facade.json');
  const users = join(d, 'users.json');
  const added = await facade(['user', 'invite', 'erin', '--config', config, '--new-key']);
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stderr, /added user "erin"/);
  assert.deepEqual(
    await storedKey(users, 'erin'),
    keyFromSeed('erin', inviteIn(added.stdout).seed).publicKey,
  );

  assert.equal(
    (await facade(['user', 'add', 'frank', '--config', config, '--static-ipv4', '10.89.0.9'], 'pw\n')).code,
    0,
  );
  const before = await storedKey(users, 'frank');
  const renewed = await facade(['user', 'invite', 'frank', '--config', config, '--new-key']);
  assert.equal(renewed.code, 0, renewed.stderr);
  assert.match(renewed.stderr, /no longer opens a tunnel/);
  const after = (await UsersFile.load(users)).get('frank');
  assert.notDeepEqual(after?.publicKey, before);
  assert.deepEqual(after?.publicKey, keyFromSeed('frank', inviteIn(renewed.stdout).seed).publicKey);
  assert.equal(after?.staticIpv4, '10.89.0.9');
  const old = await facade(['user', 'invite', 'frank', '--config', config], 'pw\n');
  assert.equal(old.code, 2, 'the old password is not the key any more');
});

test('user invite needs to know what clients dial and how they trust the server', async () => {
  const d = join(dir, 'nohost');
  const config = join(d, 'facade.json');
  assert.equal((await facade(['init', '--dir', d, '--host', '198.18.9.2'])).code, 0);
  const settings = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>;
  delete settings.host;
  await writeFile(config, JSON.stringify(settings));
  const noHost = await facade(['user', 'invite', 'x', '--config', config, '--new-key']);
  assert.equal(noHost.code, 2);
  assert.match(noHost.stderr, /needs the name or address clients dial: --host NAME_OR_IP\[:PORT\]/);
  const withHost = await facade([
    'user',
    'invite',
    'x',
    '--config',
    config,
    '--new-key',
    '--host',
    'vpn.example.org',
  ]);
  assert.equal(withHost.code, 0, withHost.stderr);
  assert.equal(inviteIn(withHost.stdout).host, 'vpn.example.org');
  assert.equal(inviteIn(withHost.stdout).port, 443, 'the port the server listens on');

  await writeFile(config, JSON.stringify({ ...settings, plaintext: true }));
  const plain = await facade(['user', 'invite', 'x', '--config', config, '--new-key', '--host', 'h.example']);
  assert.equal(plain.code, 2);
  assert.match(plain.stderr, /invites are for TLS/);

  await writeFile(config, JSON.stringify({ ...settings, stateDir: join(d, 'empty-state') }));
  const noCert = await facade([
    'user',
    'invite',
    'x',
    '--config',
    config,
    '--new-key',
    '--host',
    'h.example',
  ]);
  assert.equal(noCert.code, 2);
  assert.match(noCert.stderr, /no certificate in .*empty-state yet/);
});

test('user invite with --cert files: a self-signed one is pinned, a CA-issued one is left to the system CAs', async (t) => {
  const openssl = await exec('openssl', ['version']).catch(() => undefined);
  if (openssl === undefined) {
    t.skip('openssl is not installed');
    return;
  }
  const d = join(dir, 'certs');
  assert.equal((await facade(['init', '--dir', d, '--host', 'vpn.example.net'])).code, 0);
  const ssl = (args: string[]) => exec('openssl', args, { cwd: d });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await ssl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-subj',
    '/CN=Test CA',
    '-days',
    '2',
  ]);
  await ssl(['req', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=vpn.example.net']);
  await ssl([
    'x509',
    '-req',
    '-in',
    'leaf.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-out',
    'leaf.pem',
    '-days',
    '2',
  ]);
  const config = join(d, 'facade.json');
  const settings = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>;

  await writeFile(
    config,
    JSON.stringify({ ...settings, cert: join(d, 'leaf.pem'), key: join(d, 'leaf.key') }),
  );
  const issued = await facade(['user', 'invite', 'y', '--config', config, '--new-key']);
  assert.equal(issued.code, 0, issued.stderr);
  assert.equal(inviteIn(issued.stdout).pin, undefined, 'a CA vouches for it');

  await writeFile(config, JSON.stringify({ ...settings, cert: join(d, 'ca.pem'), key: join(d, 'ca.key') }));
  const own = await facade(['user', 'invite', 'y', '--config', config, '--new-key']);
  assert.equal(own.code, 0, own.stderr);
  const ca = new X509Certificate(await readFile(join(d, 'ca.pem')));
  assert.equal(inviteIn(own.stdout).pin, derFingerprint(ca.raw), 'nobody but its pin vouches for it');
});
