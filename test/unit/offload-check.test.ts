// offloadProblem(): the virtio_net_hdr a peer sends is accepted only when a Linux sender would have put it
// in front of that packet. Good shapes are the ones virtio_net_hdr_from_skb() writes on a TUN read (TSO,
// USO, checksum offload, DATA_VALID); each bad shape is an attack or a header no kernel produces.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  MAX_GSO_SEGMENTS,
  MAX_PACKET_SIZE,
  MIN_GSO_SIZE_IPV4,
  MIN_GSO_SIZE_IPV6,
} from '../../src/core/limits.js';
import { addressBytes, checkPacket } from '../../src/net/packet.js';
import { GsoType, OffloadFlag, type OffloadHeader } from '../../src/protocol/frame.js';
import {
  OffloadProblem,
  type OffloadProblemCode,
  offloadProblem,
  offloadProblemName,
} from '../../src/protocol/offload-check.js';

const MTU = 1400;
const TCP = 6;
const UDP = 17;
const ICMP = 1;
const ICMPV6 = 58;

interface Shape {
  /** Transport protocol number. */
  protocol?: number;
  /** Transport header length (TCP: 20..60, a multiple of 4). */
  transportHeader?: number;
  /** Payload bytes after the transport header. */
  payload?: number;
  /** IPv4 only: header length (20..60). */
  ipv4Header?: number;
  /** IPv4 only: flags + fragment offset word (e.g. 0x2000 MF, 0x4000 DF). */
  fragment?: number;
  /** IPv6 only: extension headers, each [next-header number of this header, length in bytes]. */
  extensions?: Array<[number, number]>;
}

function ipv4(shape: Shape = {}): Buffer {
  const protocol = shape.protocol ?? TCP;
  const ihl = shape.ipv4Header ?? 20;
  const th = shape.transportHeader ?? (protocol === TCP ? 20 : 8);
  const packet = Buffer.alloc(ihl + th + (shape.payload ?? 0));
  packet[0] = 0x40 | (ihl / 4);
  packet.writeUInt16BE(packet.length, 2);
  packet.writeUInt16BE(shape.fragment ?? 0x4000, 6);
  packet[8] = 64;
  packet[9] = protocol;
  addressBytes('198.18.0.2').copy(packet, 12);
  addressBytes('198.19.0.1').copy(packet, 16);
  if (protocol === TCP) packet[ihl + 12] = (th / 4) << 4;
  return packet;
}

function ipv6(shape: Shape = {}): Buffer {
  const protocol = shape.protocol ?? TCP;
  const th = shape.transportHeader ?? (protocol === TCP ? 20 : 8);
  const extensions = shape.extensions ?? [];
  const extLength = extensions.reduce((sum, [, length]) => sum + length, 0);
  const packet = Buffer.alloc(40 + extLength + th + (shape.payload ?? 0));
  packet[0] = 0x60;
  packet.writeUInt16BE(packet.length - 40, 4);
  packet[6] = extensions[0]?.[0] ?? protocol;
  packet[7] = 64;
  addressBytes('fd00:18::2').copy(packet, 8);
  addressBytes('fd00:99::1').copy(packet, 24);
  let at = 40;
  for (let i = 0; i < extensions.length; i++) {
    const [, length] = extensions[i] as [number, number];
    packet[at] = extensions[i + 1]?.[0] ?? protocol;
    packet[at + 1] = length / 8 - 1;
    at += length;
  }
  if (protocol === TCP) packet[at + 12] = (th / 4) << 4;
  return packet;
}

function header(fields: Partial<OffloadHeader>): OffloadHeader {
  return { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0, ...fields };
}

const NEEDS_CSUM = OffloadFlag.NEEDS_CSUM;

// Real kernel shapes: TSO from a local TCP socket on a TUN of MTU 1400 with timestamps (32-byte TCP
// header): gso_size = 1400 - 20 - 32 = 1348 on IPv4, 1400 - 40 - 32 = 1328 on IPv6; hdr_len = the headers.
const tso4 = header({
  flags: NEEDS_CSUM,
  gsoType: GsoType.TCPV4,
  hdrLen: 52,
  gsoSize: 1348,
  csumStart: 20,
  csumOffset: 16,
});
const tso6 = header({
  flags: NEEDS_CSUM,
  gsoType: GsoType.TCPV6,
  hdrLen: 72,
  gsoSize: 1328,
  csumStart: 40,
  csumOffset: 16,
});
const tsoPacket4 = ipv4({ transportHeader: 32, payload: 1348 * 40 });
const tsoPacket6 = ipv6({ transportHeader: 32, payload: 1328 * 40 + 7 });

const accepted: Array<[string, Buffer, OffloadHeader, number?]> = [
  ['no offload (all zeros)', ipv4({ protocol: ICMP, transportHeader: 8 }), header({})],
  ['DATA_VALID alone (a checksum the kernel already verified)', ipv4(), header({ flags: 2 })],
  ['DATA_VALID on ICMPv6', ipv6({ protocol: ICMPV6, transportHeader: 8 }), header({ flags: 2 })],
  ['TCPv4 checksum offload (an ACK)', ipv4(), header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 16 })],
  [
    'TCPv4 checksum offload behind IPv4 options',
    ipv4({ ipv4Header: 24, payload: 10 }),
    header({ flags: NEEDS_CSUM, csumStart: 24, csumOffset: 16 }),
  ],
  [
    'UDPv4 checksum offload',
    ipv4({ protocol: UDP, payload: 100 }),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 6 }),
  ],
  [
    'UDPv6 checksum offload',
    ipv6({ protocol: UDP, payload: 100 }),
    header({ flags: NEEDS_CSUM, csumStart: 40, csumOffset: 6 }),
  ],
  [
    'TCPv6 checksum offload behind hop-by-hop and destination options',
    ipv6({
      extensions: [
        [0, 8],
        [60, 16],
      ],
      payload: 10,
    }),
    header({ flags: NEEDS_CSUM, csumStart: 64, csumOffset: 16 }),
  ],
  ['TCPv4 TSO', tsoPacket4, tso4],
  ['TCPv4 TSO with the ECN bit', tsoPacket4, { ...tso4, gsoType: GsoType.TCPV4 | GsoType.ECN }],
  [
    'TCPv4 TSO with hdr_len = the whole first segment (forwarding path)',
    tsoPacket4,
    { ...tso4, hdrLen: 1400 },
  ],
  ['TCPv4 TSO with hdr_len below the headers (a linear-size hint only)', tsoPacket4, { ...tso4, hdrLen: 20 }],
  ['TCPv6 TSO', tsoPacket6, tso6],
  [
    'TCPv6 TSO at the smallest MTU and largest TCP header (gso_size at the floor)',
    ipv6({ transportHeader: 60, payload: 1180 * 3 }),
    { ...tso6, hdrLen: 100, gsoSize: 1180 },
    1280,
  ],
  [
    'TCPv4 TSO to a peer with the default MSS 536 and timestamps',
    ipv4({ transportHeader: 32, payload: 524 * 100 }),
    { ...tso4, gsoSize: 524 },
  ],
  [
    'UDP GSO (QUIC, 1200-byte segments) on IPv4',
    ipv4({ protocol: UDP, payload: 1200 * 20 }),
    header({
      flags: NEEDS_CSUM,
      gsoType: GsoType.UDP_L4,
      hdrLen: 28,
      gsoSize: 1200,
      csumStart: 20,
      csumOffset: 6,
    }),
  ],
  [
    'UDP GSO on IPv6',
    ipv6({ protocol: UDP, payload: 1232 * 10 + 1 }),
    header({
      flags: NEEDS_CSUM,
      gsoType: GsoType.UDP_L4,
      hdrLen: 48,
      gsoSize: 1232,
      csumStart: 40,
      csumOffset: 6,
    }),
  ],
  [
    'a full 64 KiB TSO packet',
    ipv4({ transportHeader: 20, payload: MAX_PACKET_SIZE - 40 }),
    { ...tso4, hdrLen: 40, gsoSize: 1360 },
  ],
];

for (const [name, packet, offload, mtu] of accepted) {
  test(`accepted: ${name}`, () => {
    assert.equal(checkPacket(packet, 0, packet.length), null, 'the test packet itself is plausible');
    const code = offloadProblem(packet, offload, mtu ?? MTU);
    assert.equal(code, OffloadProblem.OK, offloadProblemName(code));
  });
}

const refused: Array<[string, Buffer, OffloadHeader, OffloadProblemCode]> = [
  // The two attacks of the finding.
  [
    'IPv6 checksum written into the source address (csum_start 20, csum_offset 2)',
    ipv6({ protocol: UDP, payload: 32 }),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 2 }),
    OffloadProblem.CSUM_START,
  ],
  [
    'gso_size 1: 60,000 segments of 41 bytes from one frame',
    ipv4({ payload: 60_000 }),
    { ...tso4, hdrLen: 40, gsoSize: 1 },
    OffloadProblem.GSO_SIZE_TOO_SMALL,
  ],
  // Checksum placement.
  [
    'IPv4 checksum aimed at the IPv4 header (csum_start 0, csum_offset 12: the source address)',
    ipv4(),
    header({ flags: NEEDS_CSUM, csumStart: 0, csumOffset: 12 }),
    OffloadProblem.CSUM_START,
  ],
  [
    'csum_start past the transport header (into the payload)',
    ipv4({ payload: 100 }),
    header({ flags: NEEDS_CSUM, csumStart: 60, csumOffset: 16 }),
    OffloadProblem.CSUM_START,
  ],
  [
    'TCP with the UDP csum_offset',
    ipv4(),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 6 }),
    OffloadProblem.CSUM_OFFSET,
  ],
  [
    'UDP with the TCP csum_offset (would write into the payload)',
    ipv4({ protocol: UDP, payload: 100 }),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 16 }),
    OffloadProblem.CSUM_OFFSET,
  ],
  [
    'csum_offset pointing past the end of the packet',
    ipv4(),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 0xfff0 }),
    OffloadProblem.CSUM_OFFSET,
  ],
  [
    'checksum offload on ICMP (no Linux sender offloads it)',
    ipv4({ protocol: ICMP, transportHeader: 8 }),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 2 }),
    OffloadProblem.NOT_TCP_OR_UDP,
  ],
  [
    'checksum offload on ICMPv6',
    ipv6({ protocol: ICMPV6, transportHeader: 8 }),
    header({ flags: NEEDS_CSUM, csumStart: 40, csumOffset: 2 }),
    OffloadProblem.NOT_TCP_OR_UDP,
  ],
  [
    'TCP header cut short (data offset past the end)',
    ipv4({ transportHeader: 20 }).fill(0xf0, 32, 33),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 16 }),
    OffloadProblem.TRANSPORT_TRUNCATED,
  ],
  [
    'TCP data offset below 5 words',
    ipv4({ payload: 40 }).fill(0x10, 32, 33),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 16 }),
    OffloadProblem.TRANSPORT_TRUNCATED,
  ],
  [
    'UDP header cut short',
    ipv4({ protocol: UDP, transportHeader: 4 }),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 6 }),
    OffloadProblem.TRANSPORT_TRUNCATED,
  ],
  [
    'IPv6 extension header running past the end',
    ipv6({ extensions: [[60, 8]], transportHeader: 0 }).fill(0xff, 41, 42),
    header({ flags: NEEDS_CSUM, csumStart: 48, csumOffset: 16 }),
    OffloadProblem.TRANSPORT_TRUNCATED,
  ],
  // Fragments.
  [
    'checksum offload on an IPv4 first fragment (MF)',
    ipv4({ fragment: 0x2000, payload: 100 }),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 16 }),
    OffloadProblem.FRAGMENT,
  ],
  [
    'checksum offload on a later IPv4 fragment (offset 185)',
    ipv4({ fragment: 185, payload: 100 }),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 16 }),
    OffloadProblem.FRAGMENT,
  ],
  [
    'TSO on an IPv4 fragment',
    ipv4({ fragment: 0x2000, transportHeader: 32, payload: 1348 * 3 }),
    tso4,
    OffloadProblem.FRAGMENT,
  ],
  [
    'TSO on an IPv6 fragment',
    ipv6({ extensions: [[44, 8]], transportHeader: 32, payload: 1328 * 3 }),
    { ...tso6, csumStart: 48 },
    OffloadProblem.FRAGMENT,
  ],
  [
    'checksum offload behind an IPv6 AH header',
    ipv6({ extensions: [[51, 16]], payload: 8 }),
    header({ flags: NEEDS_CSUM, csumStart: 56, csumOffset: 16 }),
    OffloadProblem.NOT_TCP_OR_UDP,
  ],
  // Flags and types.
  ['an unknown flag bit', ipv4(), header({ flags: 0x04 }), OffloadProblem.UNKNOWN_FLAGS],
  [
    'NEEDS_CSUM and DATA_VALID together',
    ipv4(),
    header({ flags: 3, csumStart: 20, csumOffset: 16 }),
    OffloadProblem.CONFLICTING_FLAGS,
  ],
  [
    'legacy UFO (gso_type 3)',
    ipv4({ protocol: UDP, payload: 3000 }),
    header({ flags: NEEDS_CSUM, gsoType: GsoType.UDP, gsoSize: 1200, csumStart: 20, csumOffset: 6 }),
    OffloadProblem.UNKNOWN_GSO_TYPE,
  ],
  ['gso_type 2', tsoPacket4, { ...tso4, gsoType: 2 }, OffloadProblem.UNKNOWN_GSO_TYPE],
  ['gso_type 0x40', tsoPacket4, { ...tso4, gsoType: 0x41 }, OffloadProblem.UNKNOWN_GSO_TYPE],
  [
    'the ECN bit on UDP GSO',
    ipv4({ protocol: UDP, payload: 3600 }),
    header({
      flags: NEEDS_CSUM,
      gsoType: GsoType.UDP_L4 | GsoType.ECN,
      gsoSize: 1200,
      csumStart: 20,
      csumOffset: 6,
    }),
    OffloadProblem.ECN_WITHOUT_TCP,
  ],
  ['the ECN bit alone', ipv4(), header({ gsoType: GsoType.ECN }), OffloadProblem.ECN_WITHOUT_TCP],
  ['GSO without NEEDS_CSUM', tsoPacket4, { ...tso4, flags: 0 }, OffloadProblem.GSO_WITHOUT_CSUM],
  [
    'GSO with DATA_VALID instead of NEEDS_CSUM',
    tsoPacket4,
    { ...tso4, flags: OffloadFlag.DATA_VALID },
    OffloadProblem.GSO_WITHOUT_CSUM,
  ],
  [
    'csum fields without NEEDS_CSUM',
    ipv6({ protocol: UDP }),
    header({ csumStart: 20, csumOffset: 2 }),
    OffloadProblem.CSUM_FIELDS_WITHOUT_CSUM,
  ],
  ['gso_size without a GSO type', ipv4(), header({ gsoSize: 1 }), OffloadProblem.GSO_SIZE_WITHOUT_GSO],
  [
    'gso_size with NEEDS_CSUM but no GSO type',
    ipv4(),
    header({ flags: NEEDS_CSUM, csumStart: 20, csumOffset: 16, gsoSize: 1 }),
    OffloadProblem.GSO_SIZE_WITHOUT_GSO,
  ],
  // GSO type against the packet.
  [
    'TCPV4 on an IPv6 packet',
    tsoPacket6,
    { ...tso6, gsoType: GsoType.TCPV4 },
    OffloadProblem.GSO_TYPE_MISMATCH,
  ],
  [
    'TCPV6 on an IPv4 packet',
    tsoPacket4,
    { ...tso4, gsoType: GsoType.TCPV6 },
    OffloadProblem.GSO_TYPE_MISMATCH,
  ],
  [
    'TCPV4 on a UDP packet',
    ipv4({ protocol: UDP, payload: 3600 }),
    header({ flags: NEEDS_CSUM, gsoType: GsoType.TCPV4, gsoSize: 1200, csumStart: 20, csumOffset: 6 }),
    OffloadProblem.GSO_TYPE_MISMATCH,
  ],
  [
    'UDP_L4 on a TCP packet',
    tsoPacket4,
    { ...tso4, gsoType: GsoType.UDP_L4 },
    OffloadProblem.GSO_TYPE_MISMATCH,
  ],
  // Sizes.
  [
    'hdr_len past the end of the packet',
    tsoPacket4,
    { ...tso4, hdrLen: tsoPacket4.length + 1 },
    OffloadProblem.HDR_LEN,
  ],
  ['hdr_len past the end without GSO', ipv4(), header({ hdrLen: 41 }), OffloadProblem.HDR_LEN],
  [
    'gso_size one below the IPv4 floor',
    tsoPacket4,
    { ...tso4, gsoSize: MIN_GSO_SIZE_IPV4 - 1 },
    OffloadProblem.GSO_SIZE_TOO_SMALL,
  ],
  [
    'gso_size below the IPv6 floor',
    tsoPacket6,
    { ...tso6, gsoSize: MIN_GSO_SIZE_IPV6 - 1 },
    OffloadProblem.GSO_SIZE_TOO_SMALL,
  ],
  [
    'UDP GSO with 8-byte segments',
    ipv4({ protocol: UDP, payload: 512 }),
    header({ flags: NEEDS_CSUM, gsoType: GsoType.UDP_L4, gsoSize: 8, csumStart: 20, csumOffset: 6 }),
    OffloadProblem.GSO_SIZE_TOO_SMALL,
  ],
  [
    'gso_size whose segment exceeds the MTU',
    tsoPacket4,
    { ...tso4, gsoSize: MTU - 52 + 1 },
    OffloadProblem.GSO_SIZE_TOO_LARGE,
  ],
  ['gso_size 65535', tsoPacket4, { ...tso4, gsoSize: 0xffff }, OffloadProblem.GSO_SIZE_TOO_LARGE],
  [
    'UDP GSO with more segments than Linux sends (129 x 500)',
    ipv4({ protocol: UDP, payload: 129 * 500 }),
    header({ flags: NEEDS_CSUM, gsoType: GsoType.UDP_L4, gsoSize: 500, csumStart: 20, csumOffset: 6 }),
    OffloadProblem.TOO_MANY_SEGMENTS,
  ],
];

for (const [name, packet, offload, expected] of refused) {
  test(`refused (${offloadProblemName(expected)}): ${name}`, () => {
    assert.equal(checkPacket(packet, 0, packet.length), null, 'the test packet itself is plausible');
    const code = offloadProblem(packet, offload, MTU);
    assert.equal(offloadProblemName(code), offloadProblemName(expected));
  });
}

test('every refusal reason has a name; OK is 0', () => {
  assert.equal(OffloadProblem.OK, 0);
  assert.equal(offloadProblemName(OffloadProblem.CSUM_START), 'csum_start');
  for (const code of Object.values(OffloadProblem))
    assert.doesNotMatch(offloadProblemName(code), /^unknown problem/);
  assert.equal(offloadProblemName(99), 'unknown problem 99');
});

test('the segment bounds follow from the floors and the 64 KiB packet limit', () => {
  assert.equal(MIN_GSO_SIZE_IPV4, 496);
  assert.equal(MIN_GSO_SIZE_IPV6, 1180);
  assert.equal(MAX_GSO_SEGMENTS, 133);
  // The worst accepted frame: a 65535-byte IPv4 TCP packet cut at the floor.
  const packet = ipv4({ payload: MAX_PACKET_SIZE - 40 });
  const worst = { ...tso4, hdrLen: 40, gsoSize: MIN_GSO_SIZE_IPV4 };
  assert.equal(offloadProblem(packet, worst, MAX_PACKET_SIZE), OffloadProblem.OK);
  assert.equal(Math.ceil((packet.length - 40) / MIN_GSO_SIZE_IPV4), MAX_GSO_SEGMENTS);
});

test('the check reads its inputs only', () => {
  const packet = Buffer.from(tsoPacket4);
  const offload = { ...tso4 };
  offloadProblem(packet, offload, MTU);
  offloadProblem(packet, { ...tso4, gsoSize: 1 }, MTU);
  assert.deepEqual(packet, tsoPacket4);
  assert.deepEqual(offload, tso4);
});
