// The engine's side of per-user policy (issue 13), without root: its cumulative counters per user (ended
// sessions included, what accounting reads), and a data allowance ending a session with the reason.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createLogger } from '../../src/core/log.js';
import { TunnelEngine } from '../../src/engine/engine.js';
import { AddressPool } from '../../src/engine/pool.js';
import { MemoryTun } from '../../src/net/memory-tun.js';
import { DisconnectReason } from '../../src/protocol/control.js';
import { FramePeer, socketPair } from '../helpers/frame-peer.js';
import { udp4 } from '../helpers/packets.js';
import { within } from '../helpers/wait.js';

test('counters per user survive the session; an allowance ends the session at its limit, with the reason', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facade-engine-policy-'));
  const tun = new MemoryTun({ name: 'mem-p0', vnetHdr: false });
  const pool = new AddressPool({ ipv4: '198.18.0.0/24', statePath: join(dir, 'leases.json') });
  const sockets: Socket[] = [];
  const rates: string[] = [];
  const engine = new TunnelEngine({
    tun,
    pool,
    logger: createLogger({ level: 'silent' }),
    mtu: 1400,
    keepaliveMs: 0,
    clientToClient: false,
    routes: [],
    dns: [],
    dnsDomains: [],
    staticAddresses: () => undefined,
    onFatal: () => undefined,
    rateLimitOf: (user) => {
      rates.push(user);
      return user === 'alice' ? 1_000_000 : 0;
    },
  });
  t.after(async () => {
    engine.close();
    for (const socket of sockets) socket.destroy();
    tun.close();
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });
  const connect = async (user: string) => {
    const [server, client] = await socketPair();
    sockets.push(server, client);
    engine.attach(server, { user, capabilities: { offload: false } }, Buffer.alloc(0), {
      remote: `test:${user}`,
      transport: 'upgrade',
    });
    const peer = new FramePeer(client);
    await peer.control('config');
    return peer;
  };

  const alice = await connect('alice');
  assert.deepEqual(rates, ['alice'], 'the rate is asked for when the session starts');
  alice.sendPacket(udp4('198.18.0.2', '198.19.0.1'));
  alice.sendPacket(udp4('198.18.0.2', '198.19.0.1'));
  await within(tun.whenWritten(2), 'two packets on the TUN');
  const first = engine.counters().users.alice;
  assert.equal(first?.packetsIn, 2);
  assert.ok((first?.bytesIn ?? 0) > 0 && (first?.bytesOut ?? 0) > 0, 'CONFIG out, packets in');

  // An allowance 200 bytes beyond what alice moved: the next packets cross it and the session ends.
  const used = (first?.bytesIn ?? 0) + (first?.bytesOut ?? 0);
  engine.setAllowances(new Map([['alice', { limit: used + 200, message: 'data quota used up' }]]));
  for (let i = 0; i < 10; i++) alice.sendPacket(udp4('198.18.0.2', '198.19.0.1'));
  const disconnect = await within(alice.control('disconnect'), 'the DISCONNECT at the limit');
  assert.equal(disconnect.reason, DisconnectReason.ADMIN);
  assert.equal(disconnect.message, 'data quota used up');
  await within(
    new Promise<void>((resolve) => {
      const check = () => (engine.users().length === 0 ? resolve() : setTimeout(check, 10));
      check();
    }),
    'the session ended',
  );
  // Ended, still counted: what accounting reads is cumulative.
  const after = engine.counters().users.alice;
  assert.ok((after?.bytesIn ?? 0) + (after?.bytesOut ?? 0) >= used + 200);
  assert.ok((after?.packetsIn ?? 0) >= 2);
  // A new session of alice starts at her limit already spent: it ends at once.
  const again = await connect('alice');
  assert.equal(
    (await within(again.control('disconnect'), 'a DISCONNECT at once')).reason,
    DisconnectReason.ADMIN,
  );
});
