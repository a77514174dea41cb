// A hostile client's virtio_net_hdr against a real server: what leaves the server's egress.
//
//   ns A (hostile client) ── veth ── ns S (facade server, TUN) ── veth, offloads off ── ns E (counts)
//
// The server's egress veth has checksum offload, TSO and GSO off (ethtool -K), like a NIC without offloads:
// there the kernel finishes checksums at csum_start + csum_offset and cuts GSO packets in software, with
// the metadata the client chose. E counts arrivals with nftables counters at prerouting (before anything
// can drop them); S's egress veth counts what the kernel tried to send (tx packets + tx dropped).
// Needs the Debian packages ethtool and nftables (no packet capture tool is assumed: tc's u32 hit
// counters and gact are not built into every kernel, nftables counters are plain and exact).
//
// Traffic stays inside these namespaces (198.18.0.0/15 and fd00::/8 only).

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { addressBytes, internetChecksum, setIpv4HeaderChecksum } from '../../src/net/packet.js';
import { encodeOffloadFrame, GsoType, OffloadFlag, type OffloadHeader } from '../../src/protocol/frame.js';
import { addUser, type FacadeProcess, startFacade, waitForStatus } from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason } from '../helpers/netns.js';
import { offloadHeader, pseudoSeed, tuneChecksumTo } from '../helpers/packets.js';

const HOSTILE = fileURLToPath(new URL('../helpers/hostile-client.js', import.meta.url));

function missingTools(): string | null {
  const netns = netnsSkipReason();
  if (netns !== null) return netns;
  for (const [tool, pkg] of [
    ['ethtool', 'ethtool'],
    ['nft', 'nftables'],
  ] as const) {
    if (!['/usr/sbin', '/sbin', '/usr/bin', '/bin'].some((d) => existsSync(join(d, tool))))
      return `needs ${tool} (Debian package ${pkg})`;
  }
  return null;
}

const skip = missingTools();

// Per-run subnets (each namespace has its own stack; distinct numbers only ease reading a failure).
const net = 20 + (process.pid % 40) * 2;
const LINK_A = `198.19.${net}`;
const LINK_E = `198.19.${net + 1}`;
const LINK_E6 = `fd00:e${net.toString(16)}:`;
const POOL = `198.18.${net}`;
/** `${POOL6}:/64` is the pool, `${POOL6}:1` the server's own tunnel address. */
const POOL6 = `fd00:${net.toString(16)}:`;
const SERVER_TUNNEL6 = `${POOL6}:1`;
const SERVER_TUNNEL4 = `${POOL}.1`;
const E4 = `${LINK_E}.2`;
const E6 = `${LINK_E6}:2`;
const PORT = 8443;
const PATH = '/k3y/offload';
const MTU = 1400;

const NEEDS_CSUM = OffloadFlag.NEEDS_CSUM;

function tcp4(source: string, dport: number, payload: number): Buffer {
  const packet = Buffer.alloc(40 + payload);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet.writeUInt16BE(0x4000, 6);
  packet[8] = 64;
  packet[9] = 6;
  addressBytes(source).copy(packet, 12);
  addressBytes(E4).copy(packet, 16);
  setIpv4HeaderChecksum(packet, 0);
  packet.writeUInt16BE(40000, 20);
  packet.writeUInt16BE(dport, 22);
  packet.writeUInt32BE(1, 24);
  packet.writeUInt32BE(1, 28);
  packet[32] = 5 << 4;
  packet[33] = 0x10; // ACK
  packet.writeUInt16BE(65535, 34);
  for (let i = 40; i < packet.length; i++) packet[i] = i & 0xff;
  packet.writeUInt16BE(pseudoSeed(packet, 20, 6), 36);
  return packet;
}

/** IPv6 UDP to E with `payload` bytes (even), checksum field holding the pseudo-header seed. */
function udp6(source: string, dport: number, payload: number): Buffer {
  const packet = Buffer.alloc(48 + payload);
  packet[0] = 0x60;
  packet.writeUInt16BE(packet.length - 40, 4);
  packet[6] = 17;
  packet[7] = 64;
  addressBytes(source).copy(packet, 8);
  addressBytes(E6).copy(packet, 24);
  packet.writeUInt16BE(40000, 40);
  packet.writeUInt16BE(dport, 42);
  packet.writeUInt16BE(packet.length - 40, 44);
  for (let i = 48; i < packet.length; i++) packet[i] = 0x5a;
  packet.writeUInt16BE(pseudoSeed(packet, 40, 17), 46);
  return packet;
}

/**
 * The finding's first attack: an IPv6 packet from the client's own address whose "checksum", finished by
 * the kernel at csum_start 20 + csum_offset 2 (bytes 22-23: the source address's last group), comes out
 * as the server's own last group. Two payload bytes are tuned so the one's-complement sum lands there.
 */
function sourceRewrite(client6: string, server6: string): { packet: Buffer; offload: OffloadHeader } {
  const packet = udp6(client6, 7100, 32);
  const target = addressBytes(server6).readUInt16BE(14);
  tuneChecksumTo(packet, 48, target);
  const stored = internetChecksum(packet, 20, packet.length - 20);
  assert.equal(stored, target, 'the tuned payload makes the kernel write the server address');
  return { packet, offload: offloadHeader({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 2 }) };
}

describe('offload metadata from a hostile client', { skip: skip ?? false }, () => {
  let dir: string;
  let ns: { s: Netns; a: Netns; e: Netns };
  let server: FacadeProcess;
  let hostile: ChildProcess;
  let egress: string;
  const events: Array<Record<string, unknown>> = [];
  let config: { ipv4: { address: string }; ipv6: { address: string }; serverIpv6: string; mtu: number };
  let sentFrames = 0;

  /** Writes one frame through the hostile client and waits until its socket took it. */
  async function send(frame: Buffer): Promise<void> {
    const n = ++sentFrames;
    hostile.stdin?.write(`${frame.toString('base64')}\n`);
    await until(() => events.some((e) => e.event === 'sent' && e.n === n), `frame ${n} sent`);
  }

  async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(events)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** nftables counters in E, by comment. */
  async function counters(): Promise<Record<string, number>> {
    const out = await ns.e.exec('nft', ['-j', 'list', 'table', 'inet', 'facadetest'], { check: true });
    const result: Record<string, number> = {};
    const parsed = JSON.parse(out.stdout) as {
      nftables: Array<{ rule?: { comment?: string; expr: unknown[] } }>;
    };
    for (const item of parsed.nftables) {
      const rule = item.rule;
      if (rule?.comment === undefined) continue;
      for (const expr of rule.expr as Array<{ counter?: { packets: number } }>) {
        if (expr.counter !== undefined) result[rule.comment] = expr.counter.packets;
      }
    }
    return result;
  }

  /** Packets the kernel tried to put on S's egress veth: sent plus dropped. */
  async function egressPackets(): Promise<number> {
    const out = await ns.s.ip(['-s', '-j', 'link', 'show', 'dev', egress]);
    const [link] = JSON.parse(out) as Array<{ stats64: { tx: { packets: number; dropped: number } } }>;
    return (link?.stats64.tx.packets ?? 0) + (link?.stats64.tx.dropped ?? 0);
  }

  async function offloadDrops(atLeast: number): Promise<number> {
    const status = await waitForStatus(join(dir, 'state'), (st) =>
      st.sessions.some((s) => (s as { offloadDrops?: number }).offloadDrops! >= atLeast),
    ).catch(() => undefined);
    const session = status?.sessions[0] as { offloadDrops?: number } | undefined;
    return session?.offloadDrops ?? -1;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-offload-'));
    // The server runs as nobody after start-up (--run-as): it must reach its files through this one.
    await chmod(dir, 0o755);
    ns = { s: await Netns.create('os'), a: await Netns.create('oa'), e: await Netns.create('oe') };
    await createVethPair(ns.s, ns.a, { addrA: `${LINK_A}.1/24`, addrB: `${LINK_A}.2/24` });
    const link = await createVethPair(ns.s, ns.e, {
      addrA: `${LINK_E}.1/24`,
      addrB: `${E4}/24`,
      addr6A: `${LINK_E6}:1/64`,
      addr6B: `${E6}/64`,
    });
    egress = link.ifA;
    // An egress without offloads: the kernel finishes checksums and cuts GSO packets in software here.
    await ns.s.exec('ethtool', ['-K', egress, 'tx', 'off', 'tso', 'off', 'gso', 'off'], { check: true });
    await ns.s.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1'], { check: true });
    await ns.s.exec('sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1'], { check: true });
    const rules = [
      'add table inet facadetest',
      'add chain inet facadetest pre { type filter hook prerouting priority -300; policy accept; }',
      `add rule inet facadetest pre ip6 saddr ${SERVER_TUNNEL6} counter comment "foreign6"`,
      `add rule inet facadetest pre ip saddr ${SERVER_TUNNEL4} counter comment "foreign4"`,
      'add rule inet facadetest pre udp dport 7100 counter comment "rewrite6"',
      'add rule inet facadetest pre udp dport 7101 counter comment "good6"',
      'add rule inet facadetest pre tcp dport 7001 counter comment "gso1"',
      'add rule inet facadetest pre tcp dport 7002 counter comment "tso"',
    ];
    await ns.e.exec('nft', [rules.join('; ')], { check: true });
    // Resolve E's link-layer addresses now, so no ARP/ND packet counts later.
    await ns.s.exec('ping', ['-c', '1', '-W', '2', E4], { check: true });
    await ns.s.exec('ping', ['-6', '-c', '1', '-W', '2', E6], { check: true });

    await writeFile(join(dir, 'mallory.pw'), 'pw-of-mallory\n');
    await addUser(ns.s, {
      users: join(dir, 'users.json'),
      tunnelPath: PATH,
      name: 'mallory',
      password: 'pw-of-mallory',
    });
    server = startFacade(ns.s, [
      'server',
      '--listen',
      `0.0.0.0:${PORT}`,
      '--http-listen',
      '127.0.0.1:8080',
      '--pool',
      `${POOL}.0/24`,
      '--pool6',
      `${POOL6}:/64`,
      '--mtu',
      String(MTU),
      '--users',
      join(dir, 'users.json'),
      '--tunnel-path',
      PATH,
      '--state-dir',
      join(dir, 'state'),
    ]);
    await server.waitFor(/facade server ready/);

    hostile = ns.a.spawn(process.execPath, [
      HOSTILE,
      `${LINK_A}.1`,
      String(PORT),
      PATH,
      'mallory',
      'pw-of-mallory',
    ]);
    let partial = '';
    hostile.stdout?.on('data', (chunk: Buffer) => {
      partial += chunk.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) events.push(JSON.parse(line) as Record<string, unknown>);
    });
    hostile.stderr?.on('data', (chunk: Buffer) => events.push({ event: 'stderr', text: chunk.toString() }));
    await until(() => events.some((e) => e.event === 'config'), 'CONFIG', 20_000);
    config = events.find((e) => e.event === 'config') as unknown as typeof config;
    assert.equal(config.serverIpv6, SERVER_TUNNEL6);
    assert.equal(config.mtu, MTU);
  });

  after(async () => {
    hostile?.kill('SIGKILL');
    await server?.stop('SIGKILL');
    for (const n of Object.values(ns ?? {})) await n.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('a checksum aimed at the IPv6 source address never leaves with the server address', async () => {
    const client6 = config.ipv6.address;
    // The attack rewrites the last 16 bits: the client and server addresses must differ only there.
    assert.deepEqual(addressBytes(client6).subarray(0, 14), addressBytes(SERVER_TUNNEL6).subarray(0, 14));
    const before = await offloadDrops(0);
    const attack = sourceRewrite(client6, SERVER_TUNNEL6);
    await send(encodeOffloadFrame(attack.offload, attack.packet));
    // A well-formed UDP checksum offload from the same client, after it: it must arrive (the check is not
    // over-eager), and once it has, the attack frame had its chance to arrive too.
    const good = udp6(client6, 7101, 32);
    await send(encodeOffloadFrame(offloadHeader({ flags: NEEDS_CSUM, csumStart: 40, csumOffset: 6 }), good));
    let seen: Record<string, number> = {};
    for (let i = 0; i < 100 && (seen.good6 ?? 0) < 1; i++) {
      seen = await counters();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    seen = await counters();
    assert.equal(seen.good6, 1, 'the well-formed IPv6 checksum offload arrives');
    assert.equal(seen.foreign6, 0, `a packet reached E with the server's own source ${SERVER_TUNNEL6}`);
    assert.equal(seen.rewrite6, 0, 'the attack packet is dropped at the server');
    assert.equal(await offloadDrops(before + 1), before + 1, 'the session counts the drop (offloadDrops)');
  });

  test('gso_size 1 does not turn one frame into 60,000 packets', async () => {
    const client4 = config.ipv4.address;
    const before = await offloadDrops(0);
    const egressBefore = await egressPackets();
    // 60,040 bytes: 40 of headers and 60,000 of payload, one segment per byte.
    const attack = tcp4(client4, 7001, 60_000);
    assert.equal(attack.length, 60_040);
    const gso1 = offloadHeader({
      flags: NEEDS_CSUM,
      gsoType: GsoType.TCPV4,
      hdrLen: 40,
      gsoSize: 1,
      csumStart: 20,
      csumOffset: 16,
    });
    await send(encodeOffloadFrame(gso1, attack));
    // A well-formed TSO frame after it: 3 segments of 1000 bytes (what a TCP socket on a TUN would send).
    const tso = tcp4(client4, 7002, 3000);
    await send(encodeOffloadFrame({ ...gso1, gsoSize: 1000 }, tso));
    let seen: Record<string, number> = {};
    for (let i = 0; i < 100 && (seen.tso ?? 0) < 3; i++) {
      seen = await counters();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    seen = await counters();
    const egressDelta = (await egressPackets()) - egressBefore;
    assert.equal(seen.tso, 3, 'the well-formed TSO frame arrives as its 3 segments');
    assert.equal(seen.gso1, 0, `${seen.gso1} segments of the gso_size 1 frame reached E`);
    // A refused frame yields nothing (at the gso_size floor it would have been ceil(60,000 / 496) = 121
    // segments), so the egress saw the TSO frame's 3 segments and nothing else.
    // (2 of slack for a stray neighbour probe.)
    assert.ok(egressDelta <= 5, `the egress saw ${egressDelta} packets for 2 frames (expected 3)`);
    assert.equal(seen.foreign4, 0);
    assert.equal(await offloadDrops(before + 1), before + 1, 'the session counts the drop (offloadDrops)');
  });
});
