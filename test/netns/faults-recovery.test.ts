// Faults with defined behaviour, against the rig of faults-fixture.ts (one real server, two reference
// clients, an attacker namespace), each followed by the invariant (both clients ping the server and each
// other, the website answers 200 on /):
//
//   state directory unwritable   (a read-only bind mount in the server's own mount namespace: the server
//                                runs as nobody, but root would ignore chmod 000) the server keeps serving
//                                sessions, logs that it cannot save leases, and saves again once writable
//   server restart               SIGTERM, start again on the same state directory: both clients are back
//                                within 5 s of the new server's ready, with the same addresses
//   TUN removed under the server the server exits non-zero with FACADE_ERR_TUN_IO; the clients keep
//                                retrying; started again, they come back with the same addresses
//   link cut for 30 s            alice's veth down 30 s, then up: both ends declare the peer dead (keepalive
//                                1 s here), bob is untouched, alice reconnects with the same address
//   ACME CA unreachable          covered by acme-tunnel.test.ts (see its test below)
//
// The 30 s cut dominates the file's time (~1.5 minutes). Traffic stays inside the namespaces.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { field } from '../helpers/facade.js';
import { netnsSkipReason, run } from '../helpers/netns.js';
import { Rig, sleep } from './faults-fixture.js';

const skip = netnsSkipReason();

const rig = new Rig({ base: 41, keepalive: '1', users: ['alice', 'bob', 'carol'] });

/** The address in `client`'s last "connected:" line, once it has logged more than `earlier` of them. */
async function reconnected(
  client: typeof rig.clientA,
  earlier: number,
  timeoutMs: number,
): Promise<{ address: string; afterMs: number }> {
  const started = Date.now();
  while (client.count(/connected:/) <= earlier && Date.now() - started < timeoutMs) await sleep(50);
  const lines = client.lines.filter((l) => /connected:/.test(l));
  assert.ok(
    lines.length > earlier,
    `no reconnect within ${timeoutMs} ms:\n${client.lines.slice(-8).join('\n')}`,
  );
  return {
    address: String(field(lines.at(-1) as string, 'ipv4')).split('/')[0] as string,
    afterMs: Date.now() - started,
  };
}

async function statusUpdated(): Promise<string | undefined> {
  try {
    return (JSON.parse(await readFile(join(rig.stateDir, 'status.json'), 'utf8')) as { updated: string })
      .updated;
  } catch {
    return undefined;
  }
}

/** Runs `args` in the running server's own mount namespace (ip netns exec gave it one). */
async function inServerMounts(args: string[]): Promise<void> {
  await run('nsenter', ['-t', String(rig.server.child.pid), '-m', ...args], { check: true });
}

describe('recovery from faults of a live server', { skip: skip ?? false }, () => {
  let counts = { a: 1, b: 1 };

  before(() => rig.setup());
  after(() => rig.teardown());

  test('the state directory becomes read-only: sessions go on, lease saves fail with a warning, then recover', async (t) => {
    let mounted = false;
    t.after(async () => {
      if (mounted && rig.server.child.exitCode === null)
        await inServerMounts(['umount', rig.stateDir]).catch(() => undefined);
    });
    await inServerMounts(['mount', '--bind', rig.stateDir, rig.stateDir]);
    mounted = true;
    await inServerMounts(['mount', '-o', 'remount,bind,ro', rig.stateDir]);
    const from = rig.mark();
    // carol's new lease is a change the pool must save.
    const carol = await rig.tunnel('carol');
    const warning = await rig.nextLine(
      from,
      (l) => l.msg === 'could not save address leases',
      'the lease save failure logged',
    );
    assert.match(String(warning.err), /EROFS|read-only/i);
    const frozen = await statusUpdated();
    await rig.assertHealthy({ rss: false });
    await sleep(2_500);
    assert.equal(await statusUpdated(), frozen, 'status.json cannot be written while read-only');

    await inServerMounts(['umount', rig.stateDir]);
    mounted = false;
    // carol leaves: the next change; now it is saved, and status.json moves again.
    await carol.end();
    const deadline = Date.now() + 10_000;
    let leases = '';
    while (Date.now() < deadline) {
      leases = await readFile(join(rig.stateDir, 'leases.json'), 'utf8').catch(() => '');
      if (leases.includes('carol') && (await statusUpdated()) !== frozen) break;
      await sleep(250);
    }
    assert.match(leases, /carol/, 'leases.json is written again once the directory is writable');
    assert.notEqual(await statusUpdated(), frozen, 'status.json is written again');
    await rig.assertHealthy({ rss: false });
  });

  test('a status.json write that fails is logged', async () => {
    assert.ok(
      rig.server.lines.some((l) => /status/.test(String(field(l, 'msg'))) && /could not|cannot/.test(l)),
      'no log line says status.json could not be written',
    );
  });

  test('server restart (SIGTERM, same state directory): both clients are back within 5 s, same addresses', async (t) => {
    const before = { a: rig.clientA.count(/connected:/), b: rig.clientB.count(/connected:/) };
    const stopped = Date.now();
    assert.equal(await rig.server.stop('SIGTERM'), 0, 'SIGTERM stops the server cleanly');
    rig.startServer();
    await rig.server.waitFor(/facade server ready/);
    const ready = Date.now();
    const [a, b] = await Promise.all([
      reconnected(rig.clientA, before.a, 5_000),
      reconnected(rig.clientB, before.b, 5_000),
    ]);
    t.diagnostic(
      `server ready ${ready - stopped} ms after SIGTERM; clients back ${a.afterMs} and ${b.afterMs} ms after ready`,
    );
    assert.equal(a.address, rig.addrA);
    assert.equal(b.address, rig.addrB);
    counts = { a: before.a + 1, b: before.b + 1 };
    await rig.assertHealthy({ rss: false, connectedA: counts.a, connectedB: counts.b });
  });

  test('the TUN removed under the server: it exits with FACADE_ERR_TUN_IO, clients retry, and come back after a restart', async (t) => {
    const before = { a: rig.clientA.count(/connected:/), b: rig.clientB.count(/connected:/) };
    const retriesBefore = rig.clientA.count(/will retry/);
    const old = rig.server;
    await rig.ns.s.ip(['link', 'del', 'facade0']);
    const code = await Promise.race([old.stop('SIGCONT'), sleep(10_000).then(() => 'running')]);
    assert.notEqual(code, 'running', 'the server exits by itself');
    assert.notEqual(code, 0, 'non-zero');
    assert.ok(
      old.lines.some((l) => l.includes('FACADE_ERR_TUN_IO')),
      old.lines.slice(-5).join('\n'),
    );
    await sleep(2_000);
    assert.ok(rig.clientA.count(/will retry/) > retriesBefore, 'alice keeps retrying');
    assert.equal(rig.clientA.child.exitCode, null, 'alice is still running');
    assert.equal(rig.clientB.child.exitCode, null, 'bob is still running');
    rig.startServer();
    await rig.server.waitFor(/facade server ready/);
    const [a, b] = await Promise.all([
      reconnected(rig.clientA, before.a, 15_000),
      reconnected(rig.clientB, before.b, 15_000),
    ]);
    t.diagnostic(`clients back ${a.afterMs} and ${b.afterMs} ms after the new server's ready`);
    assert.equal(a.address, rig.addrA);
    assert.equal(b.address, rig.addrB);
    counts = { a: before.a + 1, b: before.b + 1 };
    await rig.assertHealthy({ rss: false, connectedA: counts.a, connectedB: counts.b });
  });

  test('alice’s link cut for 30 s: both ends declare the peer dead, bob is untouched, alice is back with her address', async (t) => {
    const before = { a: rig.clientA.count(/connected:/), b: rig.clientB.count(/connected:/) };
    const from = rig.mark();
    await rig.ns.a.ip(['link', 'set', rig.ifA, 'down']);
    let up = false;
    t.after(async () => {
      if (!up) await rig.ns.a.ip(['link', 'set', rig.ifA, 'up']).catch(() => undefined);
    });
    const cut = Date.now();
    const dead = await rig.disconnected(from, 'alice', 10_000);
    assert.equal(dead.reason, 'dead peer (keepalive timeout)');
    const bob = await rig.ping(rig.ns.b, rig.serverTunnel4);
    assert.ok(bob.ok, `bob pings the server during the cut:\n${bob.out}`);
    await sleep(Math.max(0, 30_000 - (Date.now() - cut)));
    await rig.ns.a.ip(['link', 'set', rig.ifA, 'up']);
    up = true;
    // The client's backoff has grown during the cut (capped at RECONNECT_MAX_MS = 30 s, with jitter).
    const a = await reconnected(rig.clientA, before.a, 40_000);
    t.diagnostic(`alice back ${a.afterMs} ms after the link came up`);
    assert.equal(a.address, rig.addrA);
    assert.equal(rig.clientB.count(/connected:/), before.b, 'bob did not reconnect');
    counts = { a: before.a + 1, b: before.b };
    await rig.assertHealthy({ rss: false, connectedA: counts.a, connectedB: counts.b });
  });

  test(
    'the ACME CA unreachable: the stored certificate keeps serving, the next retry is logged',
    {
      skip: 'covered by test/netns/acme-tunnel.test.ts ("CA stopped: the forced renewal fails with a warning, the renewed certificate keeps serving" and "restart with the stored certificate and no CA"); pebble setup is not repeated here',
    },
    () => undefined,
  );
});
