// `facade server --workers 2` end to end: one primary, two worker processes, one multi-queue TUN whose
// steering map sends each client's packets to the worker holding its session. Four clients, each in its
// own namespace behind the server's:
//
//   ns A, B, C, D (clients) ── veth ── ns S (primary + workers 0 and 1, TUN facade0 with 2 queues)
//
// What must hold: sessions spread over both workers and each reaches the server (steering); clients of
// different workers reach each other (--client-to-client); a reconnect that lands on the other worker
// keeps its address; `facade status` names each session's worker; a worker killed with SIGKILL loses
// only its own sessions, is restarted, and its clients come back with their addresses.
// Traffic stays inside these namespaces (198.18.0.0/15 only).

import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusSnapshot } from '../../src/server/status.js';
import {
  addUser,
  clientArgs,
  type FacadeProcess,
  field,
  startFacade,
  waitForStatus,
} from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, run, uniqueName } from '../helpers/netns.js';

const skip = netnsSkipReason();

const net = 20 + (process.pid % 40) * 2;
const POOL = `198.18.${net}`;
const PORT = 8443;
const PATH = '/w0rk3rs/t';
const USERS = ['ann', 'ben', 'cat', 'dan'] as const;
type User = (typeof USERS)[number];

describe('--workers 2: steering, client-to-client across workers, sticky addresses, a crashed worker', {
  skip: skip ?? false,
}, () => {
  let dir: string;
  let state: string;
  let server: FacadeProcess;
  let fingerprint: string;
  const ns = new Map<User, Netns>();
  let nsS: Netns;
  const clients = new Map<User, FacadeProcess>();
  const address = new Map<User, string>();

  const startClient = (user: User): FacadeProcess => {
    const client = startFacade(
      ns.get(user) as Netns,
      clientArgs({
        url: `https://198.19.${net}.1:${PORT}${PATH}`,
        user,
        passwordFile: join(dir, `${user}.pw`),
        pin: fingerprint,
        tun: uniqueName('fw'),
        // Both transports on both workers (connections are handed out in turn): ann and ben the raw
        // upgrade, whose sockets the worker switches to its shared read buffer; cat and dan auto (h2).
        more: user === 'ann' || user === 'ben' ? ['--transport', 'upgrade'] : [],
      }),
    );
    clients.set(user, client);
    return client;
  };
  const sessionOf = (status: StatusSnapshot, user: User) => status.sessions.find((s) => s.user === user);
  /**
   * A snapshot taken after this call: workers report every second and status.json is written every two,
   * so one updated more than a second after now shows what the workers held after now.
   */
  const freshStatus = (predicate: (s: StatusSnapshot) => boolean, timeoutMs?: number) => {
    const since = Date.now() + 1_100;
    return waitForStatus(state, (s) => Date.parse(s.updated) > since && predicate(s), timeoutMs);
  };
  const ping = async (from: User, to: string): Promise<string> =>
    (await (ns.get(from) as Netns).exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', to])).stdout;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-workers-'));
    await chmod(dir, 0o755);
    state = join(dir, 'state');
    nsS = await Netns.create('ws');
    for (const [i, user] of USERS.entries()) {
      const n = await Netns.create(`w${user}`);
      ns.set(user, n);
      // One /30 per client inside 198.19.<net>.0/24; the server answers on .1 of the first link too.
      const base = 4 * (i + 1);
      await createVethPair(nsS, n, {
        addrA: `198.19.${net}.${base + 1}/30`,
        addrB: `198.19.${net}.${base + 2}/30`,
      });
      await n.ip(['route', 'add', `198.19.${net}.1/32`, 'via', `198.19.${net}.${base + 1}`]);
      await writeFile(join(dir, `${user}.pw`), `pw-${user}\n`);
      await addUser(nsS, {
        users: join(dir, 'users.json'),
        tunnelPath: PATH,
        name: user,
        password: `pw-${user}`,
      });
    }
    await nsS.ip(['addr', 'add', `198.19.${net}.1/32`, 'dev', 'lo']);
    server = startFacade(nsS, [
      'server',
      '--workers',
      '2',
      '--client-to-client',
      '--listen',
      `0.0.0.0:${PORT}`,
      '--http-listen',
      '127.0.0.1:8080',
      '--pool',
      `${POOL}.0/24`,
      '--users',
      join(dir, 'users.json'),
      '--tunnel-path',
      PATH,
      '--state-dir',
      state,
      '--keepalive',
      '1',
    ]);
    fingerprint = String(field(await server.waitFor(/self-signed certificate/), 'fingerprint'));
    await server.waitFor(/facade server ready/);
    // One at a time: the primary hands connections out in turn, so four in a row land on both workers.
    for (const user of USERS) {
      const line = await startClient(user).waitFor(/connected:/);
      address.set(user, String(field(line, 'ipv4')).split('/')[0] as string);
    }
  });

  after(async () => {
    for (const client of clients.values()) await client.stop('SIGKILL');
    await server?.stop('SIGKILL');
    for (const n of [...ns.values(), nsS]) await n?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('sessions spread over both workers, and every client reaches the server through its own', async () => {
    const status = await waitForStatus(state, (s) => s.sessions.length === USERS.length);
    const workers = new Set(status.sessions.map((s) => s.worker));
    assert.deepEqual([...workers].sort(), [0, 1], JSON.stringify(status.sessions));
    assert.equal(status.workers?.length, 2);
    assert.equal(new Set(address.values()).size, USERS.length, 'distinct addresses');
    for (const user of USERS) assert.match(await ping(user, `${POOL}.1`), / 0% packet loss/, user);
    // Each worker's tunnel sockets (handed over by the primary, then TLS) read into its engine's buffer.
    const upgrades = status.sessions.filter((s) => s.transport === 'upgrade');
    assert.deepEqual(
      new Set(upgrades.map((s) => s.worker)),
      new Set([0, 1]),
      JSON.stringify(status.sessions),
    );
    const missed = server.lines.filter((l) => /fresh Buffer per read/.test(l));
    assert.equal(missed.length, 0, missed.join('\n'));
    // And the other way: the server's own pings to each client leave the kernel through the steering.
    for (const user of USERS) {
      const out = await nsS.exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', address.get(user) as string]);
      assert.match(out.stdout, / 0% packet loss/, `to ${user}: ${out.stdout}`);
    }
  });

  test('client-to-client between clients of different workers', async () => {
    const status = await waitForStatus(state, (s) => s.sessions.length === USERS.length);
    const on0 = status.sessions.find((s) => s.worker === 0)?.user as User;
    const on1 = status.sessions.find((s) => s.worker === 1)?.user as User;
    assert.ok(on0 !== undefined && on1 !== undefined);
    assert.match(await ping(on0, address.get(on1) as string), / 0% packet loss/);
    assert.match(await ping(on1, address.get(on0) as string), / 0% packet loss/);
  });

  test('`facade status` names the worker of each session', async () => {
    const out = await run(process.execPath, [
      join(process.cwd(), 'dist/src/cli.js'),
      'status',
      '--state-dir',
      state,
    ]);
    assert.match(out.stdout, /2 workers: #0 pid \d+ serving, #1 pid \d+ serving/, out.stdout);
    for (const user of USERS) assert.match(out.stdout, new RegExp(`${user} .* worker [01]`), out.stdout);
  });

  test('a reconnect that lands on the other worker keeps its address', async () => {
    const user: User = 'ann';
    const first = sessionOf(await waitForStatus(state, (s) => sessionOf(s, user) !== undefined), user);
    assert.ok(first?.worker !== undefined);
    let last = first;
    // Connections are handed out in turn: within a few reconnects one lands on the other worker.
    for (let attempt = 0; attempt < 4 && last.worker === first.worker; attempt++) {
      await clients.get(user)?.stop('SIGTERM');
      const line = await startClient(user).waitFor(/connected:/);
      assert.equal(String(field(line, 'ipv4')).split('/')[0], address.get(user), 'same address');
      const previous = last.since;
      last = sessionOf(
        await waitForStatus(state, (s) => {
          const session = sessionOf(s, user);
          return session !== undefined && session.since > previous;
        }),
        user,
      ) as typeof first;
    }
    const moved = last.worker !== first.worker;
    assert.ok(moved, 'never landed on the other worker');
    assert.match(await ping(user, `${POOL}.1`), / 0% packet loss/);
  });

  test('a worker killed with SIGKILL: its sessions only, restarted, its clients back with their addresses', async () => {
    const before = await freshStatus(
      (s) => s.sessions.length === USERS.length && (s.workers ?? []).every((w) => w.ready),
    );
    const victim = before.workers?.[1];
    assert.ok(victim?.pid !== undefined);
    const lost = before.sessions.filter((s) => s.worker === 1);
    const kept = before.sessions.filter((s) => s.worker === 0);
    assert.ok(lost.length > 0 && kept.length > 0, JSON.stringify(before.sessions));
    process.kill(victim.pid, 'SIGKILL');
    await server.waitFor(/worker exited/);
    const afterCrash = await waitForStatus(
      state,
      (s) =>
        s.workers?.[1]?.restarts === 1 &&
        s.workers[1].ready &&
        s.workers[1].pid !== victim.pid &&
        s.sessions.length === USERS.length &&
        lost.every((l) => {
          const now = s.sessions.find((x) => x.user === l.user);
          return now !== undefined && now.since !== l.since;
        }),
      30_000,
    );
    // The other worker's sessions never noticed: same start time, same worker.
    for (const k of kept) {
      const now = afterCrash.sessions.find((s) => s.user === k.user);
      assert.equal(now?.since, k.since, `${k.user} was not disturbed`);
      assert.equal(now?.worker, 0);
    }
    // The lost clients came back with the addresses they had, and reach the server again.
    for (const l of lost) {
      assert.equal(afterCrash.sessions.find((s) => s.user === l.user)?.ipv4, l.ipv4);
      assert.match(await ping(l.user as User, `${POOL}.1`), / 0% packet loss/, l.user);
    }
  });

  test('SIGTERM with sessions open: the primary and its workers exit (0) within seconds, the TUN is gone', async () => {
    const status = await waitForStatus(state, (s) => s.sessions.length === USERS.length);
    const pids = (status.workers ?? []).map((w) => w.pid as number);
    const started = Date.now();
    assert.equal(await server.stop('SIGTERM'), 0);
    assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), `worker ${pid} still alive`);
    const links = await nsS.exec('ip', ['-o', 'link', 'show']);
    assert.doesNotMatch(links.stdout, /facade0/);
  });
});
