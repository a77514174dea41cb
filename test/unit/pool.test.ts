import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import { LEASE_GRACE_MS } from '../../src/core/limits.js';
import {
  AddressPool,
  bigIntToIpv6,
  ipv4ToNumber,
  ipv6ToBigInt,
  MAX_POOL_ADDRESSES,
  numberToIpv4,
} from '../../src/engine/pool.js';

/** A clock the test moves by hand. */
function fakeClock(start = 1_700_000_000_000) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

let dir: string;
let counter = 0;
async function freshDir(): Promise<string> {
  const sub = join(dir, `t${counter++}`);
  await mkdir(sub);
  return sub;
}
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facade-pool-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('address helpers round-trip and format IPv6 canonically', () => {
  assert.equal(ipv4ToNumber('198.18.8.1'), ((198 << 24) >>> 0) + (18 << 16) + (8 << 8) + 1);
  assert.equal(ipv4ToNumber('255.255.255.255'), 0xffffffff);
  assert.ok(Number.isNaN(ipv4ToNumber('198.18.8')));
  assert.equal(numberToIpv4(0xc6120801), '198.18.8.1');
  const cases: Array<[string, string]> = [
    ['::', '::'],
    ['::1', '::1'],
    ['fd00:8::', 'fd00:8::'],
    ['FD00:0008:0000:0000:0000:0000:0000:0001', 'fd00:8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1:0:3:4:5:6:7:8', '1:0:3:4:5:6:7:8'],
    ['::ffff:1.2.3.4', '::ffff:102:304'],
  ];
  for (const [input, canonical] of cases) {
    const value = ipv6ToBigInt(input);
    assert.notEqual(value, undefined, input);
    assert.equal(bigIntToIpv6(value!), canonical, input);
  }
  assert.equal(ipv6ToBigInt('fe80::1%eth0'), undefined);
  assert.equal(ipv6ToBigInt('1.2.3.4'), undefined);
});

test('the first host of each pool is the server, never leased; leases start after it', () => {
  const pool = new AddressPool({ ipv4: '198.18.8.0/24', ipv6: 'fd00:8::/64' });
  assert.equal(pool.serverIpv4, '198.18.8.1');
  assert.equal(pool.serverIpv6, 'fd00:8::1');
  assert.equal(pool.prefix4, 24);
  assert.equal(pool.prefix6, 64);
  const lease = pool.lease('alice');
  assert.equal(lease.ipv4, '198.18.8.2');
  assert.equal(lease.ipv4Number, ipv4ToNumber('198.18.8.2'));
  assert.equal(lease.ipv6, 'fd00:8::2');
  assert.equal(lease.prefix4, 24);
  assert.equal(lease.prefix6, 64);
  assert.equal(pool.stats().size, 253);
});

test('a whole /24 is leased to distinct addresses, never network, broadcast or server, then exhausted', () => {
  const pool = new AddressPool({ ipv4: '198.18.8.0/24' });
  const seen = new Set<string>();
  for (let i = 0; i < 253; i++) {
    const lease = pool.lease(`user${i}`);
    assert.ok(!seen.has(lease.ipv4), lease.ipv4);
    assert.equal(numberToIpv4(lease.ipv4Number), lease.ipv4);
    seen.add(lease.ipv4);
  }
  for (const never of ['198.18.8.0', '198.18.8.1', '198.18.8.255']) assert.ok(!seen.has(never), never);
  assert.deepEqual(pool.stats(), { size: 253, active: 253, held: 0, reservedIdle: 0 });
  assert.throws(
    () => pool.lease('one-too-many'),
    (err) =>
      isFacadeError(err, 'POOL_EXHAUSTED') &&
      /198\.18\.8\.0\/24/.test(err.message) &&
      /253/.test(err.message),
  );
});

test('a /29 has 5 leasable addresses (6 hosts minus the server); the 6th lease is POOL_EXHAUSTED', () => {
  const pool = new AddressPool({ ipv4: '198.18.9.0/29' });
  const got = ['a', 'b', 'c', 'd', 'e'].map((u) => pool.lease(u).ipv4);
  assert.deepEqual(got, ['198.18.9.2', '198.18.9.3', '198.18.9.4', '198.18.9.5', '198.18.9.6']);
  assert.throws(
    () => pool.lease('f'),
    (err) => isFacadeError(err, 'POOL_EXHAUSTED') && err.message.includes('198.18.9.0/29'),
  );
  // Active leases are not freed by the failure; held ones are not handed to others either.
  pool.release('a');
  assert.throws(
    () => pool.lease('f'),
    (err) => isFacadeError(err, 'POOL_EXHAUSTED'),
  );
});

test('invalid pools are POOL_INVALID', () => {
  const bad: Array<[string, string | undefined, RegExp]> = [
    ['198.18.8.0/31', undefined, /too small/],
    ['198.18.8.0/32', undefined, /too small/],
    ['198.18.8.5/24', undefined, /did you mean 198\.18\.8\.0\/24/],
    ['198.18.8.0', undefined, /ADDRESS\/PREFIX/],
    ['198.18.8.0/33', undefined, /prefix length/],
    ['fd00::/64', undefined, /not an IPv4 address/],
    ['198.18.8.0/24', 'fd00:8::/127', /too small/],
    ['198.18.8.0/24', 'fd00:8::1/64', /did you mean fd00:8::\/64/],
  ];
  for (const [ipv4, ipv6, pattern] of bad) {
    assert.throws(
      () => new AddressPool({ ipv4, ipv6 }),
      (err) => isFacadeError(err, 'POOL_INVALID') && pattern.test(err.message),
      `${ipv4} ${ipv6}`,
    );
  }
  // The smallest pools that work: a /30 (one client) and a /126 (two clients).
  const tiny = new AddressPool({ ipv4: '198.18.8.0/30', ipv6: 'fd00:8::/126' });
  assert.equal(tiny.lease('only').ipv4, '198.18.8.2');
});

test('a second lease while active returns the same addresses with a new generation', () => {
  const pool = new AddressPool({ ipv4: '198.18.8.0/24', ipv6: 'fd00:8::/64' });
  const first = pool.lease('alice');
  pool.lease('bob');
  const second = pool.lease('alice');
  assert.equal(second.ipv4, first.ipv4);
  assert.equal(second.ipv6, first.ipv6);
  assert.notEqual(second.generation, first.generation);
  // The old session closing after its replacement leased must not release the new session's lease.
  pool.release('alice', first);
  assert.equal(pool.stats().held, 0);
  pool.release('alice', second);
  assert.equal(pool.stats().held, 1);
  pool.release('alice', second); // idempotent
  assert.equal(pool.stats().held, 1);
});

test('a user who reconnects within the grace period gets the same address back', () => {
  const clock = fakeClock();
  const pool = new AddressPool({ ipv4: '198.18.8.0/24', ipv6: 'fd00:8::/64', now: clock.now });
  const before = pool.lease('alice');
  pool.release('alice');
  clock.advance(LEASE_GRACE_MS - 1);
  // Others connecting meanwhile do not get alice's held address.
  for (let i = 0; i < 20; i++) assert.notEqual(pool.lease(`other${i}`).ipv4, before.ipv4);
  assert.equal(pool.stats().held, 1);
  const after = pool.lease('alice');
  assert.equal(after.ipv4, before.ipv4);
  assert.equal(after.ipv6, before.ipv6);
  assert.equal(pool.stats().held, 0);
});

test('after the grace period the address is free again and reused least-recently-freed first', () => {
  const clock = fakeClock();
  const pool = new AddressPool({ ipv4: '198.18.9.0/29', graceMs: 1000, now: clock.now });
  const a = pool.lease('a').ipv4;
  pool.lease('b');
  pool.release('a');
  clock.advance(1000);
  // .2 was freed last, so the never-used addresses come first.
  assert.deepEqual(
    ['c', 'd', 'e'].map((u) => pool.lease(u).ipv4),
    ['198.18.9.4', '198.18.9.5', '198.18.9.6'],
  );
  assert.equal(pool.lease('f').ipv4, a);
  // alice... er, "a" comes back too late: her address went to "f" and the pool is full.
  assert.throws(
    () => pool.lease('a'),
    (err) => isFacadeError(err, 'POOL_EXHAUSTED'),
  );
});

test('a lease that fails on IPv6 gives its IPv4 address back', () => {
  const v6Full = new AddressPool({ ipv4: '198.18.8.0/24', ipv6: 'fd00:8::/126' });
  v6Full.lease('a');
  v6Full.lease('b');
  assert.throws(
    () => v6Full.lease('c'),
    (err) => isFacadeError(err, 'POOL_EXHAUSTED') && err.message.includes('fd00:8::/126'),
  );
  assert.equal(v6Full.stats().active, 2);

  // Five failed attempts on a /29 (5 leasable): without the rollback they would use up every IPv4 address.
  const pool = new AddressPool({ ipv4: '198.18.9.0/29', ipv6: 'fd00:9::/64' });
  assert.equal(pool.lease('a').ipv6, 'fd00:9::2');
  for (let i = 0; i < 5; i++) {
    assert.throws(
      () => pool.lease('c', { staticIpv6: 'fd00:9::2' }),
      (err) => isFacadeError(err, 'POOL_INVALID') && /still in use by "a"/.test(err.message),
    );
  }
  const rest = ['b', 'd', 'e', 'f'].map((u) => pool.lease(u).ipv4).sort();
  assert.deepEqual(rest, ['198.18.9.3', '198.18.9.4', '198.18.9.5', '198.18.9.6']);
});

test('static addresses: leased to their user only, validated against the pool', () => {
  const clock = fakeClock();
  const pool = new AddressPool({ ipv4: '198.18.9.0/29', ipv6: 'fd00:9::/64', graceMs: 1000, now: clock.now });
  pool.reserveStatic('boss', { staticIpv4: '198.18.9.2', staticIpv6: 'fd00:9::99' });
  assert.equal(pool.stats().reservedIdle, 1);
  // Dynamic users never get the reserved address, even when the pool runs out.
  const dynamic = ['a', 'b', 'c', 'd'].map((u) => pool.lease(u).ipv4);
  assert.ok(!dynamic.includes('198.18.9.2'));
  assert.throws(
    () => pool.lease('e'),
    (err) => isFacadeError(err, 'POOL_EXHAUSTED'),
  );
  const boss = pool.lease('boss');
  assert.equal(boss.ipv4, '198.18.9.2');
  assert.equal(boss.ipv6, 'fd00:9::99');
  // After the boss's grace expires the address is still theirs, not free.
  pool.release('boss');
  clock.advance(1000);
  pool.release('a');
  clock.advance(1000);
  assert.equal(pool.lease('e').ipv4, dynamic[0]);
  assert.equal(pool.lease('boss').ipv4, '198.18.9.2');

  for (const [request, pattern] of [
    [{ staticIpv4: '198.18.10.2' }, /not one of its/],
    [{ staticIpv4: '198.18.9.7' }, /not one of its/], // the broadcast address
    [{ staticIpv4: '198.18.9.1' }, /the server's/],
    [{ staticIpv6: 'fd00:9::1' }, /the server's/],
    [{ staticIpv6: 'fd00:a::5' }, /not one of its/],
    [{ staticIpv4: '198.18.9.2' }, /given to both "boss" and "intruder"/],
  ] as const) {
    assert.throws(
      () => pool.lease('intruder', request),
      (err) => isFacadeError(err, 'POOL_INVALID') && pattern.test(err.message),
      JSON.stringify(request),
    );
  }
});

test('a static address given to a user takes it from a held lease, but not from an active one', () => {
  const clock = fakeClock();
  const pool = new AddressPool({ ipv4: '198.18.8.0/24', now: clock.now });
  assert.equal(pool.lease('holder').ipv4, '198.18.8.2');
  assert.equal(pool.lease('active').ipv4, '198.18.8.3');
  pool.release('holder');
  assert.equal(pool.lease('vip', { staticIpv4: '198.18.8.2' }).ipv4, '198.18.8.2');
  // The held lease was dropped: its user gets a new address.
  assert.notEqual(pool.lease('holder').ipv4, '198.18.8.2');
  // An address in active use stays with its user until they disconnect.
  assert.throws(
    () => pool.lease('vip2', { staticIpv4: '198.18.8.3' }),
    (err) => isFacadeError(err, 'POOL_INVALID') && /still in use by "active"/.test(err.message),
  );
  pool.release('active');
  assert.equal(pool.lease('vip2', { staticIpv4: '198.18.8.3' }).ipv4, '198.18.8.3');
  // A user given a static address while holding a dynamic one moves to the static one.
  const moving = pool.lease('mover').ipv4;
  assert.equal(pool.lease('mover', { staticIpv4: '198.18.8.100' }).ipv4, '198.18.8.100');
  assert.notEqual(moving, '198.18.8.100');
  // An explicit request without statics clears the reservation (the address stays leased until release).
  pool.lease('mover', {});
  assert.equal(pool.stats().reservedIdle, 0);
});

test('leases persist across a new AddressPool on the same state file (0600, no temp files)', async () => {
  const sub = await freshDir();
  const statePath = join(sub, 'leases.json');
  const clock = fakeClock();
  const first = new AddressPool({ ipv4: '198.18.8.0/24', ipv6: 'fd00:8::/64', statePath, now: clock.now });
  assert.equal(first.loadWarning, undefined);
  const alice = first.lease('alice');
  const bob = first.lease('bob');
  first.lease('carol');
  first.release('carol');
  first.release('bob');
  await first.flush();
  assert.equal((await stat(statePath)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(sub), ['leases.json']);
  const saved = JSON.parse(await readFile(statePath, 'utf8'));
  assert.equal(saved.leases.length, 3);

  // "Killed and restarted": a new pool on the same file, a little later.
  clock.advance(60_000);
  const second = new AddressPool({ ipv4: '198.18.8.0/24', ipv6: 'fd00:8::/64', statePath, now: clock.now });
  assert.equal(second.loadWarning, undefined);
  // Everything restored is held (the old sessions are gone); nobody else gets those addresses.
  assert.deepEqual(second.stats(), { size: 253, active: 0, held: 3, reservedIdle: 0 });
  assert.equal(second.lease('dave').ipv4, '198.18.8.5');
  const aliceAgain = second.lease('alice');
  assert.equal(aliceAgain.ipv4, alice.ipv4);
  assert.equal(aliceAgain.ipv6, alice.ipv6);
  assert.equal(second.lease('bob').ipv4, bob.ipv4);
  await second.close();
  await second.close();

  // Held leases keep their original expiry: carol's ran out while "down".
  clock.advance(LEASE_GRACE_MS);
  const third = new AddressPool({ ipv4: '198.18.8.0/24', ipv6: 'fd00:8::/64', statePath, now: clock.now });
  assert.equal(third.get('carol'), undefined);
  assert.match(third.loadWarning ?? '', /ignored 1 of 4/);
  await third.close();
});

test('saved leases that no longer fit the pool are ignored with a warning', async () => {
  const statePath = join(await freshDir(), 'leases.json');
  const clock = fakeClock();
  const first = new AddressPool({ ipv4: '198.18.8.0/24', statePath, now: clock.now });
  first.lease('a');
  first.lease('b');
  await first.close();
  const smaller = new AddressPool({ ipv4: '198.18.8.0/30', statePath, now: clock.now });
  assert.equal(smaller.get('a')?.ipv4, '198.18.8.2');
  assert.equal(smaller.get('b'), undefined);
  assert.match(smaller.loadWarning ?? '', /ignored 1 of 2/);
  await smaller.close();
});

test('a corrupt state file does not stop the pool: it is moved aside and the pool starts empty', async () => {
  const sub = await freshDir();
  const statePath = join(sub, 'leases.json');
  for (const garbage of ['{"version":1,"leases":[', '{"version":9,"leases":[]}', 'null']) {
    await writeFile(statePath, garbage);
    const pool = new AddressPool({ ipv4: '198.18.8.0/24', statePath });
    assert.match(pool.loadWarning ?? '', /unusable/);
    assert.match(pool.loadWarning ?? '', /\.corrupt/);
    assert.equal(await readFile(`${statePath}.corrupt`, 'utf8'), garbage);
    assert.equal(pool.lease('alice').ipv4, '198.18.8.2');
    await pool.flush();
    assert.equal(JSON.parse(await readFile(statePath, 'utf8')).leases[0].user, 'alice');
    await pool.close();
  }
});

test('a big pool is bounded to MAX_POOL_ADDRESSES hosts and leases every one of them distinctly', () => {
  const pool = new AddressPool({ ipv4: '198.18.0.0/15', ipv6: 'fd00:8::/64' });
  const leasable = MAX_POOL_ADDRESSES - 1;
  assert.equal(pool.stats().size, leasable);
  const seen4 = new Set<number>();
  const seen6 = new Set<string>();
  for (let i = 0; i < leasable; i++) {
    const lease = pool.lease(`u${i}`);
    seen4.add(lease.ipv4Number);
    seen6.add(lease.ipv6!);
  }
  assert.equal(seen4.size, leasable);
  assert.equal(seen6.size, leasable);
  assert.throws(
    () => pool.lease('extra'),
    (err) => isFacadeError(err, 'POOL_EXHAUSTED'),
  );
  assert.equal(pool.get('u65534')?.ipv4, '198.19.0.0');
  assert.equal(pool.get('u65534')?.ipv6, 'fd00:8::1:0');
});

test('a mass connect writes the lease file about once a second, not once per connect', async () => {
  const statePath = join(await freshDir(), 'leases.json');
  const pool = new AddressPool({ ipv4: '198.18.64.0/22', statePath });
  const writes = new Set<number>();
  let connecting = true;
  const watch = (async () => {
    while (connecting) {
      const st = await stat(statePath).catch(() => undefined);
      if (st !== undefined) writes.add(st.mtimeMs);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  })();
  // 300 connects over about 1.5 s, each in its own tick, as sessions arrive.
  for (let i = 0; i < 300; i++) {
    pool.lease(`user${i}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  connecting = false;
  await watch;
  await pool.flush();
  // Distinct modification times count the writes the poll saw.
  assert.ok(writes.size <= 4, `${writes.size} lease file writes during 300 connects`);
  const saved = JSON.parse(await readFile(statePath, 'utf8')) as { leases: unknown[] };
  assert.equal(saved.leases.length, 300, 'flush() wrote the last state at once');
  await pool.close();
});
