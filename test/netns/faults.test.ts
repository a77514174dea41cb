// Bad input and faults against ONE live server (the real CLI in a namespace, offload on, --pool and
// --pool6, client-to-client on, a --site folder with symlinks out of it, and routes and DNS a client must
// not take) with two well-behaved reference clients (the real CLI) and an attacker (faults-peer.ts).
// Every case runs its attack, checks its own expectation (a counter in status.json or in the session's
// "client disconnected" line, a DISCONNECT reason, an HTTP status), then the invariant of
// faults-fixture.ts: both reference clients still ping the server and each other without having
// reconnected, the website answers 200 on /, the server's RSS settles back within RSS_MARGIN_MB of its
// baseline. The slow recovery cases (restart, link cut, TUN removed, state directory unwritable) are in
// faults-recovery.test.ts, so the runner can run the two files in parallel.
//
// The cases repeat, against the whole server, what each fix of the security round tests on its own part:
// offload-attack.test.ts, connections.test.ts, pushed-routes.test.ts, front-door and session unit tests.
// Users: alice and bob (reference), mallory (every attack that needs a session; her lease is sticky, so
// the /29 pool is not used up by the cases), eve, frank and grace (the full pool).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { certificateFingerprint } from '../../src/certs/self-signed.js';
import { addressBytes, internetChecksum, setIpv4HeaderChecksum } from '../../src/net/packet.js';
import { type ConfigMessage, encodeControlFrame } from '../../src/protocol/control.js';
import {
  encodeFrame,
  encodeOffloadFrame,
  FrameType,
  GsoType,
  OffloadFlag,
} from '../../src/protocol/frame.js';
import { upgradeRequest } from '../../src/protocol/handshake.js';
import { startFacade } from '../helpers/facade.js';
import { netnsSkipReason, uniqueName } from '../helpers/netns.js';
import {
  icmpEchoRequest4,
  offloadHeader,
  udp6 as plainUdp6,
  pseudoSeed,
  tuneChecksumTo,
} from '../helpers/packets.js';
import { makeTestCertificate } from '../helpers/tls-fixture.js';
import {
  HTTP_PORT,
  PATH,
  PEER,
  type Peer,
  PORT,
  Rig,
  RSS_MARGIN_MB,
  SECRET,
  sleep,
} from './faults-fixture.js';

function missing(): string | null {
  const netns = netnsSkipReason();
  if (netns !== null) return netns;
  if (!['/usr/bin/curl', '/bin/curl'].some((p) => existsSync(p))) return 'needs curl (Debian package curl)';
  return null;
}
const skip = missing();

const rig = new Rig({
  base: 40,
  keepalive: '1',
  users: ['alice', 'bob', 'mallory', 'eve', 'frank', 'grace'],
  // What a hostile server pushes (pushed-routes.test.ts): everything in two halves per family, a prefix
  // holding alice's path to the server, DNS servers without domains. The reference clients refuse them.
  serverExtra: [
    ...['0.0.0.0/1', '128.0.0.0/1', '::/1', '8000::/1'].flatMap((r) => ['--route', r]),
    '--route',
    `198.19.${40 + (process.pid % 20) * 4}.0/24`,
    '--dns',
    `198.18.${40 + (process.pid % 20) * 4}.1`,
  ],
});

// --- frames -------------------------------------------------------------------------------------------

/** A frame header with any fields, then `payload` (no checks: that is the point). */
function rawFrame(version: number, type: number, length: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([Buffer.from([version, type, length >>> 8, length & 0xff]), payload]);
}

function controlFrame(body: Buffer): Buffer {
  return rawFrame(1, FrameType.CONTROL, body.length, body);
}

function echoRequests(n: number): Buffer {
  const frames: Buffer[] = [];
  for (let i = 0; i < n; i++) frames.push(encodeControlFrame({ type: 'echo-request', seq: i, timestamp: i }));
  return Buffer.concat(frames);
}

/** offload-attack.test.ts's first attack: a checksum the kernel would finish over the source's last group. */
function sourceRewrite(client6: string, server6: string, to6: string): Buffer {
  const packet = plainUdp6(client6, to6, Buffer.alloc(40));
  packet.writeUInt16BE(pseudoSeed(packet, 40, 17), 46);
  const target = addressBytes(server6).readUInt16BE(14);
  tuneChecksumTo(packet, 48, target);
  assert.equal(internetChecksum(packet, 20, packet.length - 20), target);
  return encodeOffloadFrame(
    offloadHeader({ flags: OffloadFlag.NEEDS_CSUM, csumStart: 20, csumOffset: 2 }),
    packet,
  );
}

/** offload-attack.test.ts's second attack: a 60,040-byte TCP super-packet with gso_size 1. */
function gsoSizeOne(client4: string, to4: string): Buffer {
  const packet = Buffer.alloc(60_040);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = 6;
  addressBytes(client4).copy(packet, 12);
  addressBytes(to4).copy(packet, 16);
  setIpv4HeaderChecksum(packet, 0);
  packet.writeUInt16BE(40000, 20);
  packet.writeUInt16BE(7001, 22);
  packet[32] = 5 << 4;
  packet[33] = 0x10;
  packet.writeUInt16BE(pseudoSeed(packet, 20, 6), 36);
  return encodeOffloadFrame(
    offloadHeader({
      flags: OffloadFlag.NEEDS_CSUM,
      gsoType: GsoType.TCPV4,
      hdrLen: 40,
      gsoSize: 1,
      csumStart: 20,
      csumOffset: 16,
    }),
    packet,
  );
}

// --- case helpers -------------------------------------------------------------------------------------

const REASON = { NORMAL: 0, PROTOCOL_ERROR: 1, POOL_EXHAUSTED: 2, REPLACED: 5 } as const;

/**
 * mallory connects, `bytes` go down her tunnel, and the server must end her session with PROTOCOL_ERROR
 * (a DISCONNECT whose text matches `why`) and log it.
 */
async function protocolError(bytes: Buffer, why: RegExp): Promise<void> {
  const from = rig.mark();
  const peer = await rig.tunnel('mallory');
  await peer.send(bytes);
  const disconnect = await peer.disconnect();
  assert.equal(disconnect.reason, REASON.PROTOCOL_ERROR, JSON.stringify(disconnect));
  assert.match(String(disconnect.message), why);
  const line = await rig.disconnected(from, 'mallory');
  assert.equal(line.reason, 'protocol error');
  assert.equal(line.byPeer, false);
  peer.kill();
}

/** mallory connects, `bytes` go down her tunnel, she ends it; her session's final counters. */
async function countersAfter(
  bytes: Buffer,
  peerHook?: (peer: Peer) => Promise<void>,
): Promise<Record<string, unknown>> {
  const from = rig.mark();
  const peer = await rig.tunnel('mallory');
  await peer.send(bytes);
  await peerHook?.(peer);
  // An echo round trip is not observable here; a short pause lets the server take the bytes first.
  await sleep(200);
  assert.equal(peer.find('disconnect'), undefined, 'the session was not ended by the server');
  await peer.end();
  const line = await rig.disconnected(from, 'mallory');
  assert.equal(line.reason, 'normal shutdown by the peer');
  return line;
}

function upgradeHead(authorization: string): string {
  return upgradeRequest({
    target: PATH,
    host: `${rig.serverFrom('x')}:${PORT}`,
    authorization,
    capabilities: { offload: true },
  });
}

interface Case {
  readonly name: string;
  readonly run: () => Promise<void>;
  readonly todo?: string;
}

const CASES: Case[] = [
  // --- virtio_net_hdr ----------------------------------------------------------------------------------
  {
    name: 'offload: a checksum aimed at the IPv6 source address is dropped and counted (offloadDrops)',
    run: async () => {
      const from = rig.mark();
      const peer = await rig.tunnel('mallory');
      const client6 = peer.config.ipv6?.address as string;
      await peer.send(sourceRewrite(client6, rig.serverTunnel6, `${rig.pool6}:9`));
      await sleep(200);
      await peer.end();
      const line = await rig.disconnected(from, 'mallory');
      assert.equal(line.offloadDrops, 1, JSON.stringify(line));
    },
  },
  {
    name: 'offload: gso_size 1 on a 60 KB super-packet is dropped and counted (offloadDrops)',
    run: async () => {
      const from = rig.mark();
      const peer = await rig.tunnel('mallory');
      await peer.send(gsoSizeOne(peer.config.ipv4.address, `${rig.linkX}.2`));
      await sleep(200);
      await peer.end();
      const line = await rig.disconnected(from, 'mallory');
      assert.equal(line.offloadDrops, 1, JSON.stringify(line));
    },
  },
  // --- malformed frames -----------------------------------------------------------------------------------
  {
    name: 'frame: version 9 ends the session with PROTOCOL_ERROR naming the version',
    run: () => protocolError(rawFrame(9, FrameType.DATA, 4, Buffer.from([1, 2, 3, 4])), /version 9/),
  },
  {
    name: 'frame: unknown type 0x7f ends the session with PROTOCOL_ERROR',
    run: () => protocolError(rawFrame(1, 0x7f, 4, Buffer.from([1, 2, 3, 4])), /frame type 0x7f/),
  },
  {
    name: 'frame: length 0 ends the session with PROTOCOL_ERROR',
    run: () => protocolError(rawFrame(1, FrameType.DATA, 0), /length 0/),
  },
  {
    name: 'frame: the largest DATA frame (65,535 bytes of garbage) is dropped and counted, the session lives',
    run: async () => {
      const line = await countersAfter(rawFrame(1, FrameType.DATA, 0xffff, randomBytes(0xffff)));
      assert.equal(line.invalidDrops, 1, JSON.stringify(line));
    },
  },
  {
    name: 'frame: a CONTROL frame of 65,535 bytes (an echo request with junk) ends the session with PROTOCOL_ERROR',
    run: () => protocolError(controlFrame(Buffer.concat([Buffer.from([0x02]), randomBytes(0xfffe)])), /./),
  },
  {
    name: 'frame: a DATA frame that is no IP packet is dropped and counted (invalidDrops)',
    run: async () => {
      const line = await countersAfter(encodeFrame(FrameType.DATA, randomBytes(100)));
      assert.equal(line.invalidDrops, 1, JSON.stringify(line));
    },
  },
  {
    name: 'frame: a client without the offload capability is refused (PROTOCOL_ERROR), its DATA_OFFLOAD goes nowhere',
    run: async () => {
      const from = rig.mark();
      const peer = await rig.tunnel('mallory', { offload: false, waitConfig: false });
      const disconnect = await peer.disconnect();
      assert.equal(disconnect.reason, REASON.PROTOCOL_ERROR);
      assert.match(String(disconnect.message), /requires the offload capability/);
      peer.command('send', gsoSizeOne('198.18.0.9', `${rig.linkX}.2`));
      await rig.nextLine(
        from,
        (l) => /lacks the offload capability/.test(String(l.msg)),
        'the refusal logged',
      );
      await Promise.race([peer.exited, sleep(3_000)]);
      peer.kill();
    },
  },
  {
    name: 'frame: a truncated frame and FIN end the session normally; nothing is held',
    run: async () => {
      const from = rig.mark();
      const peer = await rig.tunnel('mallory');
      await peer.send(rawFrame(1, FrameType.DATA, 1000, randomBytes(10)));
      await peer.end();
      const line = await rig.disconnected(from, 'mallory');
      assert.equal(line.reason, 'normal shutdown by the peer');
    },
  },
  {
    name: 'control: an unknown control message type ends the session with PROTOCOL_ERROR',
    run: () => protocolError(controlFrame(Buffer.concat([Buffer.from([0xee]), randomBytes(32)])), /control/),
  },
  {
    name: 'control: a truncated echo request ends the session with PROTOCOL_ERROR',
    run: () => protocolError(controlFrame(Buffer.from([0x02, 0x01])), /control|echo/),
  },
  {
    name: 'control: DISCONNECT text that is not UTF-8 ends the session with PROTOCOL_ERROR',
    run: () => protocolError(controlFrame(Buffer.from([0x04, 0x00, 0x00, 0xff, 0xfe, 0xc3])), /UTF-8/),
  },
  {
    name: 'control: a CONFIG sent by a client ends the session with PROTOCOL_ERROR',
    run: () => {
      const config: ConfigMessage = {
        type: 'config',
        ipv4: { address: `${rig.pool}.3`, prefix: 29 },
        mtu: 1400,
        routes: [],
        dns: [],
        keepaliveMs: 1000,
        offload: true,
      };
      return protocolError(encodeControlFrame(config), /may not send CONFIG/);
    },
  },
  {
    name: 'control: a client DISCONNECT ends the session as the peer asked (NORMAL, byPeer)',
    run: async () => {
      const from = rig.mark();
      const peer = await rig.tunnel('mallory');
      await peer.send(encodeControlFrame({ type: 'disconnect', reason: 0, message: 'bye ✓' }));
      const line = await rig.disconnected(from, 'mallory');
      assert.equal(line.byPeer, true);
      assert.equal(line.message, 'bye ✓');
      peer.kill();
    },
  },
  // --- spoofing -------------------------------------------------------------------------------------------
  {
    name: 'spoofing: IPv4 (foreign, and alice’s own address) and IPv6 sources are dropped and counted (spoofDrops)',
    run: async () => {
      const line = await countersAfter(
        Buffer.concat([
          encodeFrame(FrameType.DATA, icmpEchoRequest4(`${rig.pool}.250`, rig.serverTunnel4, 1)),
          encodeFrame(FrameType.DATA, icmpEchoRequest4(rig.addrA, rig.serverTunnel4, 2)),
          encodeFrame(FrameType.DATA, plainUdp6(`${rig.pool6}:beef`, rig.serverTunnel6)),
          encodeFrame(FrameType.DATA, plainUdp6(rig.addr6A, rig.serverTunnel6)),
        ]),
      );
      assert.equal(line.spoofDrops, 4, JSON.stringify(line));
    },
  },
  // --- echo and the output bound ----------------------------------------------------------------------
  {
    name: 'echo: 20,000 echo requests at once are answered at most 10 a second (echoDrops), the session lives',
    run: async () => {
      const line = await countersAfter(echoRequests(20_000));
      assert.ok(Number(line.echoDrops) >= 19_900, JSON.stringify(line));
    },
  },
  {
    name: 'echo: 200,000 echo requests from a peer that does not read: bounded, dropped, memory back',
    run: async () => {
      const from = rig.mark();
      const peer = await rig.tunnel('mallory');
      peer.command('pause');
      await peer.send(echoRequests(200_000));
      await sleep(500);
      peer.kill();
      const line = await rig.disconnected(from, 'mallory');
      assert.ok(Number(line.echoDrops) >= 199_000, JSON.stringify(line));
    },
  },
  {
    name: 'a client that stops reading under load: its queue drops, the others are unaffected',
    run: async () => {
      const from = rig.mark();
      const peer = await rig.tunnel('mallory');
      const target = peer.config.ipv4.address;
      peer.child.kill('SIGSTOP');
      try {
        // 15,000 datagrams of 1,400 bytes (21 MB) from S to mallory's tunnel address, paced (as in
        // tunnel.test.ts) below what the engine drains, while alice pings through the same server.
        const blast = rig.ns.s.exec(process.execPath, [
          '-e',
          `const s=require('dgram').createSocket('udp4');const b=Buffer.alloc(1400);let n=0;` +
            `const go=()=>{for(let i=0;i<100&&n<15000;i++,n++)s.send(b,9,'${target}');if(n<15000)setTimeout(go,5);else setTimeout(()=>s.close(),200)};go()`,
        ]);
        const ping = await rig.ns.a.exec('ping', ['-c', '20', '-i', '0.05', '-W', '2', rig.serverTunnel4]);
        const received = Number(/(\d+) received/.exec(ping.stdout)?.[1] ?? 0);
        assert.ok(received >= 18, `alice got ${received} of 20 replies:\n${ping.stdout}`);
        await blast;
        // keepalive 1 s: the stopped peer is declared dead within ~3 s, its line carries the drops.
        const line = await rig.disconnected(from, 'mallory', 15_000);
        assert.ok(Number(line.queueDrops) > 0, JSON.stringify(line));
        assert.equal(line.reason, 'dead peer (keepalive timeout)');
      } finally {
        peer.child.kill('SIGCONT');
        peer.kill();
      }
    },
  },
  // --- connections ------------------------------------------------------------------------------------------
  {
    name: 'RST in the middle of a frame: the session ends, nothing is held',
    run: async () => {
      const from = rig.mark();
      const peer = await rig.tunnel('mallory');
      const frame = encodeFrame(
        FrameType.DATA,
        icmpEchoRequest4(peer.config.ipv4.address, rig.serverTunnel4, 1),
      );
      peer.command('rst', frame.subarray(0, 30));
      const line = await rig.disconnected(from, 'mallory');
      assert.equal(line.byPeer, true);
      assert.match(String(line.message), /ECONNRESET|closed/);
      peer.kill();
    },
  },
  {
    name: 'the same user twice: the newer session replaces the older (REPLACED), same address',
    run: async () => {
      const first = await rig.tunnel('mallory');
      const second = await rig.tunnel('mallory');
      const disconnect = await first.disconnect();
      assert.equal(disconnect.reason, REASON.REPLACED);
      assert.equal(second.config.ipv4.address, first.config.ipv4.address);
      first.kill();
      await second.end();
    },
  },
  {
    name: 'a flood of 40 connect/disconnect cycles: every one gets CONFIG, no session is left',
    run: async () => {
      const from = rig.mark();
      const out = await rig.ns.x.exec(
        process.execPath,
        [PEER, 'cycles', rig.serverFrom('x'), String(PORT), PATH, 'mallory', 'pw-of-mallory', '40'],
        { timeoutMs: 60_000 },
      );
      assert.match(out.stdout, /"event":"cycles","done":40/, out.stdout + out.stderr);
      await rig.nextLine(
        from,
        () => rig.server.lines.slice(from).filter((l) => l.includes('"client disconnected"')).length >= 40,
        '40 sessions ended',
      );
      await sleep(2_100); // one status write
      const later = JSON.parse(await readFile(join(rig.stateDir, 'status.json'), 'utf8')) as {
        sessions: Array<{ user: string }>;
      };
      assert.deepEqual(later.sessions.map((s) => s.user).sort(), ['alice', 'bob']);
    },
  },
  {
    name: 'a full pool: the next user is told POOL_EXHAUSTED; the pool serves again when they leave',
    run: async () => {
      // alice, bob and mallory (held in grace) have 3 of the /29's 5 addresses; eve and frank take the rest.
      const eve = await rig.tunnel('eve');
      const frank = await rig.tunnel('frank');
      const grace = await rig.tunnel('grace', { waitConfig: false });
      const disconnect = await grace.disconnect();
      assert.equal(disconnect.reason, REASON.POOL_EXHAUSTED);
      assert.match(String(disconnect.message), /exhausted/);
      grace.kill();
      await eve.end();
      await frank.end();
      // mallory still gets her (sticky) address.
      const again = await rig.tunnel('mallory');
      await again.end();
    },
  },
  {
    name: 'stalled TLS handshakes: 64 silent connections from one address are held, the 65th+ closed at once without a byte',
    run: async () => {
      const results = await rig.raw({ tls: false, count: 70, holdMs: 1_500 });
      const open = results.filter((r) => !r.closed);
      const shut = results.filter((r) => r.closed);
      assert.equal(open.length, 64, `${open.length} held: ${JSON.stringify(shut.slice(0, 3))}`);
      assert.equal(shut.length, 6);
      assert.ok(
        shut.every((r) => r.bytes === 0 && (r.closedAfterMs ?? 9e9) < 1_000),
        JSON.stringify(shut),
      );
      // Meanwhile (the invariant, next) alice's own address is not affected.
    },
  },
  {
    name: 'half-open TCP: a partial tunnel head then FIN, and silence then FIN, are closed promptly',
    run: async () => {
      const head = Buffer.from(`GET ${PATH} HTTP/1.1\r\nHost: x\r\n`).toString('base64');
      const tls = await rig.raw({ count: 20, steps: [{ send: head }, { end: true }], holdMs: 4_000 });
      assert.ok(
        tls.every((r) => r.closed),
        JSON.stringify(tls.filter((r) => !r.closed)),
      );
      const tcp = await rig.raw({ tls: false, count: 20, steps: [{ end: true }], holdMs: 4_000 });
      assert.ok(
        tcp.every((r) => r.closed),
        JSON.stringify(tcp.filter((r) => !r.closed)),
      );
    },
  },
  {
    name: 'random garbage on 443 (plain TCP), on 443 inside TLS, and on port 80 is closed',
    run: async () => {
      const junk = randomBytes(64 * 1024).toString('base64');
      const plain = await rig.raw({ tls: false, count: 10, steps: [{ send: junk }], holdMs: 3_000 });
      assert.ok(
        plain.every((r) => r.closed),
        JSON.stringify(plain),
      );
      const inside = await rig.raw({ count: 5, steps: [{ send: junk }], holdMs: 3_000 });
      assert.ok(
        inside.every((r) => r.closed && /^(HTTP\/1\.1 400|$)/.test(r.firstLine)),
        JSON.stringify(inside),
      );
      const port80 = await rig.raw({
        tls: false,
        port: HTTP_PORT,
        count: 10,
        steps: [{ send: junk }],
        holdMs: 3_000,
      });
      assert.ok(
        port80.every((r) => r.closed),
        JSON.stringify(port80),
      );
      const redirect = await rig.ns.a.exec('curl', [
        '-s',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        `http://${rig.serverFrom('a')}:${HTTP_PORT}/`,
      ]);
      assert.match(redirect.stdout, /^30[178]$/, 'port 80 still redirects');
    },
  },
  {
    name: 'oversized request heads (20 KB) on the tunnel path and elsewhere get 431, never 101',
    run: async () => {
      const pad = 'a'.repeat(20 * 1024);
      for (const target of [PATH, '/']) {
        const head = Buffer.from(`GET ${target} HTTP/1.1\r\nHost: x\r\nX-Pad: ${pad}\r\n\r\n`).toString(
          'base64',
        );
        const [r] = await rig.raw({ steps: [{ send: head }], holdMs: 3_000 });
        assert.match(r?.firstLine ?? '', /^HTTP\/1\.1 431 /, `${target}: ${JSON.stringify(r)}`);
      }
    },
  },
  {
    name: 'a drip-fed tunnel-path head goes to the site at the 5 s deadline: completed later, it is a 404',
    run: async () => {
      const head =
        `GET ${PATH} HTTP/1.1\r\nHost: ${rig.serverFrom('x')}:${PORT}\r\nConnection: Upgrade\r\nUpgrade: facade\r\n` +
        'Facade-Capabilities: offload\r\nAuthorization: {{AUTH}}\r\n\r\n';
      const auth = { path: PATH, user: 'mallory', password: 'pw-of-mallory' };
      // The control: the same head sent at once is a valid upgrade.
      const [whole] = await rig.raw({ auth, steps: [{ sendText: head }], holdMs: 1_000 });
      assert.match(whole?.firstLine ?? '', /^HTTP\/1\.1 101 /, JSON.stringify(whole));
      const from = rig.mark();
      // 60 bytes at 110 ms (6.6 s, beyond the 5 s overall deadline), then the rest at once.
      const [dripped] = await rig.raw({
        auth,
        steps: [{ dripText: head.slice(0, 60), everyMs: 110 }, { sendText: head.slice(60) }],
        holdMs: 3_000,
      });
      assert.match(dripped?.firstLine ?? '', /^HTTP\/1\.1 404 /, JSON.stringify(dripped));
      assert.ok(
        !rig.server.lines.slice(from).some((l) => l.includes('client connected') && l.includes('mallory')),
        'the drip-fed head was not upgraded',
      );
    },
  },
  {
    name: 'a captured Authorization header presented on a new connection is refused (404)',
    run: async () => {
      const peer = await rig.tunnel('mallory');
      const captured = String(peer.find('authorization')?.value);
      // Also while the session it opened is still up, and again after it ended.
      const [during] = await rig.raw({ steps: [{ sendText: upgradeHead(captured) }], holdMs: 1_500 });
      await peer.end();
      const [later] = await rig.raw({ steps: [{ sendText: upgradeHead(captured) }], holdMs: 1_500 });
      for (const r of [during, later])
        assert.match(r?.firstLine ?? '', /^HTTP\/1\.1 404 /, `the replayed header got: ${r?.firstLine}`);
    },
  },
  {
    name: 'TLS: 1.0 and 1.1 refused, 1.2 with CBC-SHA suites refused, 1.2 GCM and 1.3 accepted',
    run: async () => {
      const [v10] = await rig.raw({
        minVersion: 'TLSv1',
        maxVersion: 'TLSv1',
        ciphers: 'ALL:@SECLEVEL=0',
        holdMs: 500,
      });
      const [v11] = await rig.raw({
        minVersion: 'TLSv1.1',
        maxVersion: 'TLSv1.1',
        ciphers: 'ALL:@SECLEVEL=0',
        holdMs: 500,
      });
      const [cbc] = await rig.raw({
        maxVersion: 'TLSv1.2',
        ciphers:
          'ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-SHA:AES256-SHA256',
        holdMs: 500,
      });
      for (const r of [v10, v11, cbc])
        assert.ok(r?.error !== undefined && r.cipher === undefined, JSON.stringify(r));
      const [gcm] = await rig.raw({
        maxVersion: 'TLSv1.2',
        ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256',
        holdMs: 200,
      });
      assert.match(gcm?.cipher ?? '', /_GCM_/, JSON.stringify(gcm));
      assert.equal(gcm?.protocol, 'TLSv1.2');
      const [v13] = await rig.raw({ minVersion: 'TLSv1.3', holdMs: 200 });
      assert.equal(v13?.protocol, 'TLSv1.3', JSON.stringify(v13));
    },
  },
  {
    name: '--site: symlinks to a file and a folder outside the site are not served (404, no content)',
    run: async () => {
      for (const path of ['/leak.txt', '/linked/secret.txt']) {
        const got = await rig.website(rig.ns.a, 'a', path);
        assert.equal(got.code, '404', `${path}: ${got.code}`);
        assert.ok(!got.body.includes(SECRET), `${path} served the secret`);
      }
    },
  },
  {
    name: 'a hostile server’s routes (0/1, 128/1, ::/1, 8000::/1, its own link) and DNS are refused by the reference client',
    run: async () => {
      const table = [
        ...(JSON.parse(await rig.ns.a.ip(['-j', 'route', 'show'])) as Array<{ dst: string; dev: string }>),
        ...(JSON.parse(await rig.ns.a.ip(['-j', '-6', 'route', 'show'])) as Array<{
          dst: string;
          dev: string;
        }>),
      ];
      const viaTunnel = table.filter((r) => r.dev === rig.tunA).map((r) => r.dst);
      for (const hostile of ['0.0.0.0/1', '128.0.0.0/1', '::/1', '8000::/1', `${rig.linkA}.0/24`])
        assert.ok(!viaTunnel.includes(hostile), `${hostile} was installed: ${viaTunnel.join(' ')}`);
      for (const hostile of ['0.0.0.0/1', '128.0.0.0/1', '::/1', '8000::/1'])
        assert.ok(
          rig.clientA.lines.some((l) => l.includes(`pushed route ${hostile} refused`)),
          hostile,
        );
      assert.ok(rig.clientA.lines.some((l) => /pushed DNS servers not used/.test(l)));
    },
  },
  {
    name: 'a second CONFIG to a client (from a hostile server) ends that session as a protocol error',
    run: async () => {
      const certDir = join(rig.dir, 'fake-cert');
      const cert = await makeTestCertificate(certDir, ['fake.example.test']);
      const fakePort = 9443;
      const fake = rig.ns.x.spawn(process.execPath, [
        PEER,
        'fake-server',
        String(fakePort),
        cert.keyPath,
        cert.certPath,
      ]);
      let said = '';
      fake.stdout?.on('data', (d: Buffer) => (said += d.toString()));
      try {
        for (let i = 0; i < 100 && !said.includes('listening'); i++) await sleep(50);
        assert.match(said, /listening/);
        const client = startFacade(rig.ns.x, [
          'client',
          `https://127.0.0.1:${fakePort}/any`,
          '--user',
          'mallory',
          '--password-file',
          join(rig.dir, 'mallory.pw'),
          '--pin',
          certificateFingerprint(cert.cert),
          '--tun',
          uniqueName('fxc'),
          '--no-dns',
        ]);
        rig.extra.push(client);
        await client.waitFor(/second CONFIG/, 15_000);
        await client.stop('SIGTERM');
      } finally {
        fake.kill('SIGKILL');
      }
    },
  },
];

describe('bad input and faults against one live server', { skip: skip ?? false }, () => {
  const measured: Array<{ name: string; rss: number }> = [];

  before(async () => {
    await rig.setup();
    // Warm up what the cases use (a session, the site, TLS) before the baseline, so first-use allocations
    // (JIT, TLS contexts, fastify routes) are not counted against the first case.
    const peer = await rig.tunnel('mallory');
    await peer.end();
    await rig.website(rig.ns.a, 'a');
    await rig.assertHealthy({ rss: false });
    await sleep(2_000);
    rig.baselineRssMb = await rig.rssMb();
  });

  after(async () => {
    if (measured.length > 0) {
      const worst = measured.reduce((a, b) => (b.rss > a.rss ? b : a));
      process.stderr.write(
        `# faults: server RSS baseline ${rig.baselineRssMb.toFixed(1)} MB, margin ${RSS_MARGIN_MB} MB; ` +
          `settled after each case: ${measured.map((m) => m.rss.toFixed(1)).join(' ')}; ` +
          `highest ${worst.rss.toFixed(1)} MB after "${worst.name}"\n`,
      );
    }
    await rig.teardown();
  });

  test('at least 30 cases', () => {
    assert.ok(CASES.length >= 30, `${CASES.length} cases`);
  });

  // FAULTS_ONLY=regex runs the matching cases only (while working on one).
  const only = process.env.FAULTS_ONLY === undefined ? undefined : new RegExp(process.env.FAULTS_ONLY);
  for (const c of CASES) {
    const skipped = only !== undefined && !only.test(c.name) ? 'not in FAULTS_ONLY' : false;
    test(c.name, { todo: c.todo ?? false, skip: skipped }, async (t) => {
      try {
        await c.run();
      } finally {
        for (const peer of rig.peers) peer.kill();
      }
      const rss = await rig.assertHealthy();
      measured.push({ name: c.name, rss });
      t.diagnostic(`server RSS ${rss.toFixed(1)} MB (baseline ${rig.baselineRssMb.toFixed(1)} MB)`);
    });
  }
});
