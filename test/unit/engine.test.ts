// The server's tunnel engine without root: a MemoryTun for the TUN, a real AddressPool (leases in a temp
// directory) and clients that are FramePeers on loopback sockets, attached as the acceptor attaches them.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { createLogger } from '../../src/core/log.js';
import { TunnelEngine } from '../../src/engine/engine.js';
import { AddressPool } from '../../src/engine/pool.js';
import { MemoryTun } from '../../src/net/memory-tun.js';
import { DisconnectReason } from '../../src/protocol/control.js';
import { GsoType, OFFLOAD_HEADER_SIZE, OffloadFlag, type OffloadHeader } from '../../src/protocol/frame.js';
import { FramePeer, socketPair } from '../helpers/frame-peer.js';
import { udp4, udp6 } from '../helpers/packets.js';
import { within } from '../helpers/wait.js';

const logger = createLogger({ level: 'silent' });

const POOL4 = '198.18.0.0/24';
const POOL6 = 'fd00:18::/64';
/** Addresses the pool hands out first, in order (index 0 is the server's). */
const FIRST = { ipv4: '198.18.0.2', ipv6: 'fd00:18::2' };
const SECOND = { ipv4: '198.18.0.3', ipv6: 'fd00:18::3' };
/** Somewhere beyond the server, reached through its TUN. */
const OUTSIDE = { ipv4: '198.19.0.1', ipv6: 'fd00:99::1' };
const DEVICE_FAILED = 'server error: its network device failed';

/**
 * UDP checksum offload for an IPv4 packet, as the kernel hands it over (NEEDS_CSUM at the UDP header, the
 * sum at its offset 6, no segmentation): a header the session's offload check lets through.
 */
const CSUM: OffloadHeader = {
  flags: OffloadFlag.NEEDS_CSUM,
  gsoType: GsoType.NONE,
  hdrLen: 0,
  gsoSize: 0,
  csumStart: 20,
  csumOffset: 6,
};
const CSUM_BYTES = Buffer.from([1, 0, 0, 0, 0, 0, 20, 0, 6, 0]);
const NO_OFFLOAD: OffloadHeader = {
  flags: 0,
  gsoType: 0,
  hdrLen: 0,
  gsoSize: 0,
  csumStart: 0,
  csumOffset: 0,
};

interface Setup {
  readonly engine: TunnelEngine;
  readonly tun: MemoryTun;
  readonly pool: AddressPool;
  /** Everything the engine passed to onFatal. */
  readonly fatal: Error[];
  /** Attaches a new client as `user`; offload defaults to what the server's TUN uses. */
  connect(user: string, offload?: boolean): Promise<FramePeer>;
}

async function setup(
  t: TestContext,
  options: { vnetHdr?: boolean; clientToClient?: boolean; pool4?: string } = {},
): Promise<Setup> {
  const dir = await mkdtemp(join(tmpdir(), 'facade-engine-'));
  const sockets: Socket[] = [];
  let engine: TunnelEngine | undefined;
  let pool: AddressPool | undefined;
  const tun = new MemoryTun({ name: 'mem-s0', vnetHdr: options.vnetHdr ?? false });
  t.after(async () => {
    engine?.close();
    for (const socket of sockets) socket.destroy();
    tun.close();
    await pool?.close();
    await rm(dir, { recursive: true, force: true });
  });
  pool = new AddressPool({ ipv4: options.pool4 ?? POOL4, ipv6: POOL6, statePath: join(dir, 'leases.json') });
  const fatal: Error[] = [];
  engine = new TunnelEngine({
    tun,
    pool,
    logger,
    mtu: 1400,
    keepaliveMs: 0,
    clientToClient: options.clientToClient ?? false,
    routes: ['198.19.0.0/16'],
    dns: ['198.18.0.1'],
    dnsDomains: ['corp.example'],
    staticAddresses: () => undefined,
    onFatal: (err) => fatal.push(err),
  });
  const attachTo = engine;
  return {
    engine,
    tun,
    pool,
    fatal,
    async connect(user, offload = options.vnetHdr ?? false) {
      const [serverSide, clientSide] = await socketPair();
      sockets.push(serverSide, clientSide);
      // The acceptor's call, after its 101: no bytes of the frame stream arrived with the handshake.
      attachTo.attach(serverSide, { user, capabilities: { offload } }, Buffer.alloc(0), {
        remote: `test:${user}`,
        transport: 'upgrade',
      });
      return new FramePeer(clientSide);
    },
  };
}

test('attach leases an address and sends it in a CONFIG, the first frame', async (t) => {
  const { connect, pool } = await setup(t);
  const alice = await connect('alice');
  const config = await alice.control('config');
  assert.equal(alice.controls[0], config, 'CONFIG comes first');
  assert.deepEqual(config.ipv4, { address: FIRST.ipv4, prefix: 24 });
  assert.deepEqual(config.ipv6, { address: FIRST.ipv6, prefix: 64 });
  assert.equal(pool.get('alice')?.ipv4, FIRST.ipv4, 'the lease the pool holds');
  assert.equal(config.serverIpv4, '198.18.0.1');
  assert.equal(config.serverIpv6, 'fd00:18::1');
  assert.equal(config.mtu, 1400);
  assert.equal(config.offload, false);
  assert.deepEqual(config.dns, ['198.18.0.1']);
  assert.deepEqual(config.dnsDomains, ['corp.example']);
  assert.deepEqual(
    config.routes.map((r) => `${r.address}/${r.prefix}`),
    ['198.18.0.0/24', '198.19.0.0/16', 'fd00:18::/64'],
  );
});

test("a client's packets reach the TUN, IPv4 and IPv6", async (t) => {
  const { connect, tun } = await setup(t);
  const alice = await connect('alice');
  await alice.control('config');
  const v4 = udp4(FIRST.ipv4, OUTSIDE.ipv4);
  const v6 = udp6(FIRST.ipv6, OUTSIDE.ipv6);
  alice.sendPacket(v4);
  alice.sendPacket(v6);
  assert.deepEqual(await within(tun.whenWritten(2), 'two packets on the TUN'), [v4, v6]);
});

test("a TUN packet for a client's address reaches that client, framed as DATA", async (t) => {
  const { connect, tun } = await setup(t);
  const alice = await connect('alice');
  const bob = await connect('bob');
  await alice.control('config');
  await bob.control('config');
  const toAlice = udp4(OUTSIDE.ipv4, FIRST.ipv4);
  const toBob = udp6(OUTSIDE.ipv6, SECOND.ipv6);
  tun.inject([toAlice, toBob]);
  assert.deepEqual(await alice.packet(1), { packet: toAlice, offload: null });
  assert.deepEqual(await bob.packet(1), { packet: toBob, offload: null });
  assert.equal(alice.packets.length, 1);
});

test('TUN packets for an address nobody holds are counted, and the others still go', async (t) => {
  const { connect, tun, engine } = await setup(t);
  const alice = await connect('alice');
  await alice.control('config');
  const notIp = Buffer.alloc(28, 0x11);
  const known = udp4(OUTSIDE.ipv4, FIRST.ipv4);
  tun.inject([udp4(OUTSIDE.ipv4, '198.18.0.77'), udp6(OUTSIDE.ipv6, 'fd00:18::77'), notIp, known]);
  // MemoryTun delivers synchronously: the engine has routed the batch already.
  assert.equal(engine.stats.unknownDestinationDrops, 3);
  assert.deepEqual((await alice.packet(1)).packet, known);
});

test('packets from a source other than the client address are dropped and counted', async (t) => {
  const { connect, tun, engine } = await setup(t);
  const alice = await connect('alice');
  await alice.control('config');
  alice.sendPacket(udp4('198.18.0.99', OUTSIDE.ipv4));
  alice.sendPacket(udp6('fd00:18::99', OUTSIDE.ipv6));
  const good = udp4(FIRST.ipv4, OUTSIDE.ipv4);
  alice.sendPacket(good);
  // Frames are handled in order: once the good one is on the TUN, the spoofed ones were judged.
  await within(tun.whenWritten(1), 'the genuine packet on the TUN');
  assert.deepEqual(tun.written, [good]);
  assert.equal(engine.sessions()[0]?.spoofDrops, 2);
  assert.equal(engine.sessions()[0]?.packetsIn, 1);
});

test('client-to-client traffic is dropped and counted when off', async (t) => {
  const { connect, tun, engine } = await setup(t);
  const alice = await connect('alice');
  const bob = await connect('bob');
  await alice.control('config');
  await bob.control('config');
  alice.sendPacket(udp4(FIRST.ipv4, SECOND.ipv4));
  const marker = udp4(FIRST.ipv4, OUTSIDE.ipv4);
  alice.sendPacket(marker);
  await within(tun.whenWritten(1), 'the packet sent after the one to bob');
  assert.deepEqual(tun.written, [marker], 'not written to the TUN either');
  assert.equal(engine.stats.clientToClientDrops, 1);
  assert.equal(bob.packets.length, 0);
});

test("with client-to-client off, pool addresses no session here holds (another worker's clients) never reach the TUN; the server's own do", async (t) => {
  const { connect, tun, engine } = await setup(t);
  const alice = await connect('alice');
  await alice.control('config');
  // A client of another worker, or nobody yet: the kernel would forward either on a forwarding host.
  alice.sendPacket(udp4(FIRST.ipv4, '198.18.0.77'));
  alice.sendPacket(udp6(FIRST.ipv6, 'fd00:18::77'));
  const toServer4 = udp4(FIRST.ipv4, '198.18.0.1');
  const toServer6 = udp6(FIRST.ipv6, 'fd00:18::1');
  const outside = udp4(FIRST.ipv4, OUTSIDE.ipv4);
  alice.sendPacket(toServer4);
  alice.sendPacket(toServer6);
  alice.sendPacket(outside);
  await within(tun.whenWritten(3), 'the packets to the server and outside');
  assert.deepEqual(tun.written, [toServer4, toServer6, outside]);
  assert.equal(engine.stats.clientToClientDrops, 2);
});

test('with client-to-client on, a pool address no session here holds goes to the TUN (the kernel steers it to its worker)', async (t) => {
  const { connect, tun, engine } = await setup(t, { clientToClient: true });
  const alice = await connect('alice');
  await alice.control('config');
  const elsewhere = udp4(FIRST.ipv4, '198.18.0.77');
  alice.sendPacket(elsewhere);
  assert.deepEqual(await within(tun.whenWritten(1), 'the packet on the TUN'), [elsewhere]);
  assert.equal(engine.stats.clientToClientDrops, 0);
});

test('client-to-client traffic goes straight to the other client when on', async (t) => {
  const { connect, tun, engine } = await setup(t, { clientToClient: true });
  const alice = await connect('alice');
  const bob = await connect('bob');
  await alice.control('config');
  await bob.control('config');
  const toBob = udp4(FIRST.ipv4, SECOND.ipv4);
  const toAlice = udp6(SECOND.ipv6, FIRST.ipv6);
  alice.sendPacket(toBob);
  bob.sendPacket(toAlice);
  assert.deepEqual(await bob.packet(1), { packet: toBob, offload: null });
  assert.deepEqual(await alice.packet(1), { packet: toAlice, offload: null });
  assert.equal(tun.written.length, 0, 'nothing went through the TUN');
  assert.equal(engine.stats.clientToClientDrops, 0);
});

test('the same user connecting again replaces the older session, which is told why', async (t) => {
  const { connect, tun, engine } = await setup(t);
  const first = await connect('alice');
  await first.control('config');
  const second = await connect('alice');
  const config = await second.control('config');
  assert.equal(config.ipv4.address, FIRST.ipv4, 'the same address again');
  const disconnect = await first.control('disconnect');
  assert.equal(disconnect.reason, DisconnectReason.REPLACED);
  await first.until(() => first.ended, 'the replaced connection to close');
  assert.equal(engine.sessions().length, 1);
  // The replaced session's end did not take the address from its successor.
  const packet = udp4(OUTSIDE.ipv4, FIRST.ipv4);
  tun.inject([packet]);
  assert.deepEqual((await second.packet(1)).packet, packet);
  assert.equal(first.packets.length, 0);
});

test('a client the pool has no address for gets DISCONNECT POOL_EXHAUSTED as its first frame', async (t) => {
  // A /30 has two hosts: the server's and one client's.
  const { connect, engine } = await setup(t, { pool4: '198.18.0.0/30' });
  const alice = await connect('alice');
  assert.equal((await alice.control('config')).ipv4.address, '198.18.0.2');
  const bob = await connect('bob');
  await bob.until(() => bob.ended, 'the refused connection to close');
  const [only, ...more] = bob.controls;
  assert.ok(only?.type === 'disconnect', 'the first frame is a DISCONNECT, not a CONFIG');
  assert.equal(only.reason, DisconnectReason.POOL_EXHAUSTED);
  assert.equal(more.length, 0);
  assert.deepEqual(
    engine.sessions().map((s) => s.user),
    ['alice'],
  );
});

test('a TUN write that throws stops the engine once: every session ends with INTERNAL', async (t) => {
  const { connect, tun, engine, fatal } = await setup(t);
  const alice = await connect('alice');
  const bob = await connect('bob');
  await alice.control('config');
  await bob.control('config');
  const gone = new Error('device deleted');
  tun.throwOnWrite(gone);
  alice.sendPacket(udp4(FIRST.ipv4, OUTSIDE.ipv4));
  for (const peer of [alice, bob]) {
    const disconnect = await peer.control('disconnect');
    assert.equal(disconnect.reason, DisconnectReason.INTERNAL);
    // The engine's message: had the error escaped into the socket listener, the session would have
    // ended on its own with "internal error".
    assert.equal(disconnect.message, DEVICE_FAILED);
  }
  assert.deepEqual(fatal, [gone]);
  assert.equal(engine.stats.tunWriteDrops, 1);
  assert.equal(engine.sessions().length, 0);
  tun.fail(); // a later read error too: still reported once
  assert.equal(fatal.length, 1);
});

test('a TUN read error stops the engine once: every session ends with INTERNAL', async (t) => {
  const { connect, tun, engine, fatal } = await setup(t);
  const alice = await connect('alice');
  const bob = await connect('bob');
  await alice.control('config');
  await bob.control('config');
  const gone = new Error('read failed');
  tun.fail(gone);
  tun.fail(gone);
  for (const peer of [alice, bob]) {
    const disconnect = await peer.control('disconnect');
    assert.equal(disconnect.reason, DisconnectReason.INTERNAL);
    assert.equal(disconnect.message, DEVICE_FAILED);
  }
  assert.deepEqual(fatal, [gone]);
  assert.equal(engine.sessions().length, 0);
});

test('sessions() lists each user with transport, remote, addresses and counters', async (t) => {
  const { connect, tun, engine } = await setup(t);
  const alice = await connect('alice');
  const bob = await connect('bob');
  await alice.control('config');
  await bob.control('config');
  alice.sendPacket(udp4(FIRST.ipv4, OUTSIDE.ipv4));
  await within(tun.whenWritten(1), "alice's packet on the TUN");
  const sessions = engine.sessions().sort((x, y) => x.user.localeCompare(y.user));
  assert.deepEqual(
    sessions.map(({ user, transport, remote, ipv4, ipv6, packetsIn }) => ({
      user,
      transport,
      remote,
      ipv4,
      ipv6,
      packetsIn,
    })),
    [
      { user: 'alice', transport: 'upgrade', remote: 'test:alice', ...FIRST, packetsIn: 1 },
      { user: 'bob', transport: 'upgrade', remote: 'test:bob', ...SECOND, packetsIn: 0 },
    ],
  );
  assert.ok(!Number.isNaN(Date.parse(sessions[0]?.since ?? '')), 'since is a timestamp');
  assert.equal(engine.stats.sessions, 2);
});

test('with offloads, a client that lacks the capability is refused with PROTOCOL_ERROR', async (t) => {
  const { connect, engine, pool } = await setup(t, { vnetHdr: true });
  const old = await connect('alice', false);
  await old.until(() => old.ended, 'the refused connection to close');
  const [refusal] = old.controls;
  assert.ok(refusal?.type === 'disconnect', 'the first frame is a DISCONNECT, not a CONFIG');
  assert.equal(refusal.reason, DisconnectReason.PROTOCOL_ERROR);
  assert.equal(engine.sessions().length, 0);
  assert.equal(pool.stats().active, 0, 'its lease was released');
});

test('with offloads, virtio headers pass between TUN and client in both directions', async (t) => {
  const { connect, tun } = await setup(t, { vnetHdr: true });
  const alice = await connect('alice');
  assert.equal((await alice.control('config')).offload, true);

  const withMeta = udp4(OUTSIDE.ipv4, FIRST.ipv4, Buffer.alloc(100, 1));
  const plain = udp6(OUTSIDE.ipv6, FIRST.ipv6);
  tun.inject([withMeta], CSUM_BYTES);
  tun.inject([plain]);
  assert.deepEqual(await alice.packet(1), { packet: withMeta, offload: CSUM });
  assert.deepEqual(await alice.packet(2), { packet: plain, offload: NO_OFFLOAD });

  const up = udp4(FIRST.ipv4, OUTSIDE.ipv4, Buffer.alloc(100, 2));
  const upPlain = udp6(FIRST.ipv6, OUTSIDE.ipv6);
  alice.sendOffloadPacket(CSUM, up);
  alice.sendPacket(upPlain);
  assert.deepEqual(await within(tun.whenWritten(2), 'two packets on the TUN'), [
    Buffer.concat([CSUM_BYTES, up]),
    Buffer.concat([Buffer.alloc(OFFLOAD_HEADER_SIZE), upPlain]),
  ]);
});

test("a refused connection without the offload capability does not push out the user's working session", async (t) => {
  const { connect, engine } = await setup(t, { vnetHdr: true });
  const working = await connect('alice');
  await working.control('config');
  const refused = await connect('alice', false);
  await refused.until(() => refused.ended, 'the refused connection to close');
  assert.equal(refused.controls[0]?.type, 'disconnect');
  assert.equal(working.ended, false, 'the working session was not replaced');
  assert.deepEqual(
    engine.sessions().map((s) => s.user),
    ['alice'],
  );
});

test('a CONFIG from a client is a protocol error: that session ends, the others carry on', async (t) => {
  const { connect, engine, tun } = await setup(t);
  const alice = await connect('alice');
  const bob = await connect('bob');
  const config = await alice.control('config');
  await bob.control('config');
  alice.sendControl(config);
  await alice.until(() => alice.ended, 'the session to end');
  const disconnect = alice.controls.find((m) => m.type === 'disconnect');
  assert.ok(disconnect?.type === 'disconnect');
  assert.equal(disconnect.reason, DisconnectReason.PROTOCOL_ERROR);
  assert.match(disconnect.message, /may not send CONFIG/);
  assert.deepEqual(
    engine.sessions().map((s) => s.user),
    ['bob'],
  );
  const up = udp4(SECOND.ipv4, OUTSIDE.ipv4);
  bob.sendPacket(up);
  assert.deepEqual(await within(tun.whenWritten(1), 'bob still reaching the TUN'), [up]);
});

test("a worker's engine: the lease arrives later (the primary answers), CONFIG follows; a stream gone meanwhile gives it back", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facade-engine-async-'));
  const pool = new AddressPool({ ipv4: POOL4, ipv6: POOL6 });
  const released: string[] = [];
  // The primary's answer, one event-loop turn later, as over IPC.
  const remote = {
    serverIpv4: pool.serverIpv4,
    serverIpv6: pool.serverIpv6,
    prefix4: pool.prefix4,
    prefix6: pool.prefix6,
    ipv4Cidr: pool.ipv4Cidr,
    ipv6Cidr: pool.ipv6Cidr,
    lease: (user: string) =>
      new Promise<ReturnType<AddressPool['lease']>>((resolve) =>
        setTimeout(() => resolve(pool.lease(user)), 20),
      ),
    release: (user: string) => {
      released.push(user);
    },
  };
  const tun = new MemoryTun({ name: 'mem-w0', vnetHdr: false });
  const engine = new TunnelEngine({
    tun,
    pool: remote,
    logger,
    mtu: 1400,
    keepaliveMs: 0,
    clientToClient: false,
    routes: [],
    dns: [],
    dnsDomains: [],
    staticAddresses: () => undefined,
    onFatal: () => undefined,
  });
  const sockets: Socket[] = [];
  t.after(async () => {
    engine.close();
    for (const socket of sockets) socket.destroy();
    tun.close();
    await rm(dir, { recursive: true, force: true });
  });
  const attach = async (user: string): Promise<{ peer: FramePeer; server: Socket }> => {
    const [server, client] = await socketPair();
    sockets.push(server, client);
    engine.attach(server, { user, capabilities: { offload: false } }, Buffer.alloc(0), {
      remote: `test:${user}`,
      transport: 'upgrade',
    });
    return { peer: new FramePeer(client), server };
  };
  const { peer: ann } = await attach('ann');
  assert.equal(engine.stats.sessions, 0, 'no session before the lease is in');
  const config = await ann.control('config');
  assert.equal((config as { ipv4: { address: string } }).ipv4.address, FIRST.ipv4);
  assert.equal(engine.stats.sessions, 1);
  const { server: benSide } = await attach('ben');
  benSide.destroy();
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.deepEqual(released, ['ben']);
  assert.equal(engine.stats.sessions, 1);
});
