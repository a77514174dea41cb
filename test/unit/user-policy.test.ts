// Per-user policy (issue 13) without a kernel: sizes, rates and expiry as `facade user` reads them, the
// users file keeping them, `facade user add|set|list` with them, the authenticator refusing an expired
// or blocked user exactly as a wrong password (null, after the one verify), the accounting's days,
// quotas and file, and the session's token bucket over a real loopback socket.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, test } from 'node:test';
import { runUserCommand } from '../../src/commands/user.js';
import { validateServerConfig } from '../../src/config/server-settings.js';
import { createLogger } from '../../src/core/log.js';
import type { EngineCounters } from '../../src/engine/engine.js';
import {
  createAuthorization,
  keyFromSeed,
  publicKeyObject,
  verifyCredentialSignature,
} from '../../src/protocol/credentials.js';
import type { TunnelRequest } from '../../src/protocol/handshake.js';
import { Accounting } from '../../src/server/accounting.js';
import { Session, type SessionSink } from '../../src/session/session.js';
import { createAuthenticator, type LoginCounters } from '../../src/users/authenticator.js';
import {
  isExpired,
  parseExpiry,
  parseRate,
  parseSize,
  periodEnd,
  periodStart,
  type UserPolicy,
} from '../../src/users/policy.js';
import { UsersFile } from '../../src/users/users-file.js';
import { socketPair } from '../helpers/frame-peer.js';

const TUNNEL_PATH = '/k2b9x7/connect';
let dir: string;
let counter = 0;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facade-policy-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

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

test('sizes, rates and expiry times as the command line gives them', () => {
  assert.equal(parseSize('500MB'), 500_000_000);
  assert.equal(parseSize('50GB'), 50_000_000_000);
  assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('4096'), 4096);
  for (const bad of ['', 'MB', '-1MB', '5 parsecs', '0']) assert.equal(parseSize(bad), null, bad);
  assert.equal(parseRate('20mbit'), 20_000_000);
  assert.equal(parseRate('512kbit'), 512_000);
  assert.equal(parseRate('1Gbit/s'), 1_000_000_000);
  for (const bad of ['20', '20MB', 'fast', '1kbit']) assert.equal(parseRate(bad), null, bad);
  assert.equal(parseExpiry('2027-01-01'), '2027-01-01T00:00:00.000Z');
  assert.equal(parseExpiry('2027-01-01T12:30:00+02:00'), '2027-01-01T10:30:00.000Z');
  for (const bad of ['tomorrow', '2027-13-45', '01/02/2027']) assert.equal(parseExpiry(bad), null, bad);
  assert.equal(isExpired({ expires: '2027-01-01T00:00:00.000Z' }, Date.parse('2026-12-31T23:59:59Z')), false);
  assert.equal(isExpired({ expires: '2027-01-01T00:00:00.000Z' }, Date.parse('2027-01-01T00:00:00Z')), true);
  assert.equal(isExpired({}, Date.now()), false);
  const t = Date.parse('2026-11-29T16:00:00Z');
  assert.equal(periodStart('month', t), '2026-11-01');
  assert.equal(periodStart('day', t), '2026-11-29');
  assert.equal(periodEnd('month', t), '2026-12-01T00:00:00.000Z');
  assert.equal(periodEnd('day', Date.parse('2026-12-31T10:00:00Z')), '2027-01-01T00:00:00.000Z');
});

test('facade user add|set|list: policy in the users file, cleared with none/never, refused when wrong', async () => {
  const path = join(dir, `users-${counter++}.json`);
  const state = await mkdtemp(join(dir, 'state-'));
  const added = await run(
    ['add', 'alice', '--users', path, '--tunnel-path', TUNNEL_PATH, '--rate', '20mbit', '--quota', '50GB'],
    'a long enough password\n',
  );
  assert.equal(added.code, 0, added.stderr);
  let file = await UsersFile.load(path);
  assert.deepEqual(file.get('alice')?.policy, {
    rateBitsPerSecond: 20_000_000,
    quotaBytes: 50_000_000_000,
    quotaPeriod: 'month',
  });
  const set = await run([
    'set',
    'alice',
    '--users',
    path,
    '--expires',
    '2027-01-01',
    '--quota-period',
    'day',
    '--rate',
    'none',
    '--max-sessions',
    '1',
  ]);
  assert.equal(set.code, 0, set.stderr);
  file = await UsersFile.load(path);
  assert.deepEqual(file.get('alice')?.policy, {
    expires: '2027-01-01T00:00:00.000Z',
    quotaBytes: 50_000_000_000,
    quotaPeriod: 'day',
  });
  // Written as plain fields beside the key, read back the same.
  const json = JSON.parse(await readFile(path, 'utf8'));
  assert.equal(json.users.alice.quotaPeriod, 'day');
  assert.equal(json.users.alice.rateBitsPerSecond, undefined);

  // list: the policy, and the usage the server saved in the state directory.
  await writeFile(
    join(state, 'usage.json'),
    JSON.stringify({
      version: 1,
      days: { alice: { [new Date().toISOString().slice(0, 10)]: [1_000_000, 2_000_000] } },
    }),
  );
  const listed = await run(['list', '--users', path, '--state-dir', state]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(
    listed.stdout,
    /^alice\texpires=2027-01-01T00:00:00.000Z\tquota=50.0 GB\/day\ttoday=3.0 MB\tmonth=3.0 MB\tquota-used=3.0 MB\n$/,
  );

  assert.equal(
    (await run(['set', 'alice', '--users', path, '--expires', 'never', '--quota', 'none'])).code,
    0,
  );
  file = await UsersFile.load(path);
  assert.equal(file.get('alice')?.policy, undefined);

  for (const [args, pattern] of [
    [['--max-sessions', '2'], /1 is the only value/],
    [['--rate', '20MB'], /--rate expects/],
    [['--quota', 'lots'], /--quota expects/],
    [['--expires', 'soon'], /--expires expects/],
    [['--quota-period', 'week'], /--quota-period expects/],
    [['--quota-period', 'day'], /needs a quota/],
    [[], /set needs at least one/],
  ] as const) {
    const result = await run(['set', 'alice', '--users', path, ...args]);
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, pattern);
  }
  assert.equal((await run(['set', 'nobody', '--users', path, '--rate', '1mbit'])).code, 1);
  assert.equal((await run(['del', 'alice', '--users', path, '--rate', '1mbit'])).code, 2);
});

test('an expired or blocked user is refused like a wrong password: null, after exactly one verify', () => {
  const T0 = 1_700_000_000_000;
  const alice = keyFromSeed('alice', randomBytes(32));
  let policy: UserPolicy = {};
  let blocked = false;
  let verifies = 0;
  const counters: LoginCounters = { accepted: 0, refused: 0 };
  const authenticate = createAuthenticator(
    {
      get: (name) =>
        name === 'alice'
          ? { name, publicKey: alice.publicKey, key: publicKeyObject(alice.publicKey), created: 'x', policy }
          : undefined,
    },
    {
      now: () => T0,
      verify: (message, key, signature) => {
        verifies++;
        return verifyCredentialSignature(message, key, signature);
      },
      isBlocked: () => blocked,
      counters,
    },
  );
  const login = (authorization: string | undefined): string | null => {
    const request: TunnelRequest = {
      target: '/t',
      headers: { get: (name) => (name === 'authorization' ? authorization : undefined) },
      binding: null,
    };
    return authenticate(request)?.user ?? null;
  };
  const fresh = () => createAuthorization(alice, null, { nowMs: T0 });
  assert.equal(login(fresh()), 'alice');
  policy = { expires: new Date(T0 - 1000).toISOString() };
  assert.equal(login(fresh()), null);
  policy = { expires: new Date(T0 + 60_000).toISOString() };
  assert.equal(login(fresh()), 'alice');
  blocked = true;
  assert.equal(login(fresh()), null);
  // A browser's request (no credential) is no login at all.
  assert.equal(login(undefined), null);
  assert.equal(verifies, 5);
  assert.deepEqual(counters, { accepted: 2, refused: 2 });
});

function counters(users: Record<string, [number, number]>, spoof = 0): EngineCounters {
  const out: EngineCounters['users'] = {};
  for (const [user, [bytesIn, bytesOut]] of Object.entries(users))
    out[user] = { bytesIn, bytesOut, packetsIn: 1, packetsOut: 1 };
  return { users: out, drops: { spoof, queueFull: 0, rateLimit: 0, invalid: 0, offload: 0 } };
}

test('accounting: differences per source into days, quotas per source, saved and read back', async () => {
  const state = await mkdtemp(join(dir, 'state-'));
  let now = Date.parse('2026-11-29T23:59:00Z');
  const accounting = await Accounting.load(state, { now: () => now });
  accounting.observe('0:100', counters({ alice: [100, 200] }, 3));
  accounting.observe('0:100', counters({ alice: [150, 250] }, 5));
  // Another worker's life: counted from its own zero, as is a restarted worker under a new name.
  accounting.observe('1:200', counters({ alice: [10, 0], bob: [1, 1] }));
  now = Date.parse('2026-11-30T00:01:00Z');
  accounting.observe('1:200', counters({ alice: [30, 0], bob: [1, 1] }));
  assert.deepEqual(accounting.totals().get('alice'), {
    bytesIn: 180,
    bytesOut: 250,
    packetsIn: 2,
    packetsOut: 2,
  });
  assert.equal(accounting.drops().spoof, 5);
  assert.deepEqual(accounting.summary('alice', undefined).today, { bytesIn: 20, bytesOut: 0 });
  assert.deepEqual(accounting.summary('alice', undefined).month, { bytesIn: 180, bytesOut: 250 });

  const policies = [
    { name: 'alice', policy: { quotaBytes: 500, quotaPeriod: 'month' } as UserPolicy },
    { name: 'bob', policy: { quotaBytes: 2, quotaPeriod: 'day' } as UserPolicy },
    { name: 'carol', policy: {} },
  ];
  const quota = accounting.quotaState(policies);
  // alice used 430 of 500 this month; bob used 0 today (his 2 bytes were yesterday).
  assert.deepEqual([...quota.blocked], []);
  assert.equal(quota.allowancesFor('1:200').get('alice')?.limit, 30 + 70);
  assert.equal(quota.allowancesFor('0:100').get('alice')?.limit, 400 + 70);
  assert.equal(quota.allowancesFor('9:999').get('bob')?.limit, 2);
  assert.match(
    quota.allowancesFor('9:999').get('alice')?.message ?? '',
    /quota of 500 B a month used up; it renews at 2026-12-01/,
  );
  assert.equal(quota.allowancesFor('0:100').has('carol'), false);
  accounting.observe('1:200', counters({ alice: [100, 0], bob: [3, 1] }));
  assert.deepEqual([...accounting.quotaState(policies).blocked].sort(), ['alice', 'bob']);

  await accounting.save();
  const again = await Accounting.load(state, { now: () => now });
  assert.equal(again.loadWarning, undefined);
  assert.deepEqual(again.summary('alice', undefined).month, accounting.summary('alice', undefined).month);
  assert.deepEqual(again.users(), ['alice', 'bob']);
  await writeFile(join(state, 'usage.json'), '{ not json');
  assert.match((await Accounting.load(state)).loadWarning ?? '', /damaged/);
});

test('the session shapes both ways to its rate, changes it live, and counts a byte budget', async () => {
  const [a, b] = await socketPair();
  const logger = createLogger({ level: 'silent' });
  const sink: SessionSink = { onPacket() {}, onChunkEnd() {}, onControl() {}, onClose() {} };
  const session = new Session({ socket: a, sink, logger, keepaliveMs: 0 });
  let received = 0;
  b.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  // Outbound: 1 MB/s; offered far more, in packets of 1000 bytes every millisecond for 600 ms.
  session.setRateLimit(1_000_000);
  const packet = Buffer.alloc(1000, 0x45);
  const started = Date.now();
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      for (let i = 0; i < 20; i++) session.queuePacket(packet, 0, packet.length);
      if (Date.now() - started >= 600) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  await new Promise((r) => setTimeout(r, 100));
  const seconds = (Date.now() - started) / 1000;
  // Burst and queue (128 KiB each at this rate) on top of the rate; far below what was offered.
  const expected = 1_000_000 * seconds + 2 * 128 * 1024;
  assert.ok(received <= expected, `received ${received} in ${seconds} s, expected at most ${expected}`);
  assert.ok(received >= 0.6 * 1_000_000 * 0.6, `received ${received}: shaping must not starve`);
  assert.ok(session.stats.rateDrops > 0, 'what the queue could not hold was dropped and counted');
  // Off again: the next packets leave at once.
  session.setRateLimit(0);
  const before = received;
  for (let i = 0; i < 1000; i++) session.queuePacket(packet, 0, packet.length);
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(received - before >= 1000 * 1000, `unshaped: ${received - before}`);

  // A budget: spent once bytesIn + bytesOut reach it.
  let spent = 0;
  session.setByteBudget(session.stats.bytesIn + session.stats.bytesOut + 5000, () => spent++);
  for (let i = 0; i < 10; i++) session.queuePacket(packet, 0, packet.length);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(spent, 1);
  session.close(0, 'done');
  b.destroy();
});

test('--metrics: a port alone is loopback, an address is kept, nothing else is accepted; off by default', () => {
  const base = { pool: '198.18.8.0/24', users: '/x/users.json', tunnelPath: '/secret/t' };
  const metrics = (value: unknown) => validateServerConfig({ ...base, metrics: value }).metrics;
  assert.equal(validateServerConfig(base).metrics, undefined);
  assert.deepEqual(metrics('9477'), { host: '127.0.0.1', port: 9477 });
  assert.deepEqual(metrics('10.0.0.5:9477'), { host: '10.0.0.5', port: 9477 });
  assert.deepEqual(metrics('[::1]:9477'), { host: '::1', port: 9477 });
  for (const bad of ['0', '70000', 'localhost:9477', ':9477', 'x'])
    assert.throws(
      () => metrics(bad),
      (err: Error & { code?: string }) =>
        err.code === 'FACADE_ERR_CONFIG_INVALID' && /"metrics"/.test(err.message),
      bad,
    );
});
