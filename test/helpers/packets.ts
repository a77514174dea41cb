// IP packets for tests that need only plausible ones (src/net/packet.ts's checkPacket passes them): the
// right version, lengths and addresses, an IPv4 header checksum. Nothing on the in-memory path checks
// transport checksums, so UDP carries none; the ICMP echo request is complete, for echoReply().

import { addressBytes, internetChecksum, setIpv4HeaderChecksum } from '../../src/net/packet.js';
import type { OffloadHeader } from '../../src/protocol/frame.js';

const IPPROTO_ICMP = 1;
const IPPROTO_UDP = 17;
const UDP_HEADER = 8;

function ipv4Header(packet: Buffer, protocol: number, source: string, destination: string): void {
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = protocol;
  addressBytes(source).copy(packet, 12);
  addressBytes(destination).copy(packet, 16);
  setIpv4HeaderChecksum(packet, 0);
}

/** An IPv4 UDP datagram (ports 40000 -> 5201) carrying `payload`. */
export function udp4(source: string, destination: string, payload: Buffer = Buffer.from('facade')): Buffer {
  const packet = Buffer.alloc(20 + UDP_HEADER + payload.length);
  ipv4Header(packet, IPPROTO_UDP, source, destination);
  packet.writeUInt16BE(40000, 20);
  packet.writeUInt16BE(5201, 22);
  packet.writeUInt16BE(UDP_HEADER + payload.length, 24);
  payload.copy(packet, 20 + UDP_HEADER);
  return packet;
}

/** An IPv6 UDP datagram (ports 40000 -> 5201) carrying `payload`. */
export function udp6(source: string, destination: string, payload: Buffer = Buffer.from('facade')): Buffer {
  const packet = Buffer.alloc(40 + UDP_HEADER + payload.length);
  packet[0] = 0x60;
  packet.writeUInt16BE(UDP_HEADER + payload.length, 4);
  packet[6] = IPPROTO_UDP;
  packet[7] = 64;
  addressBytes(source).copy(packet, 8);
  addressBytes(destination).copy(packet, 24);
  packet.writeUInt16BE(40000, 40);
  packet.writeUInt16BE(5201, 42);
  packet.writeUInt16BE(UDP_HEADER + payload.length, 44);
  payload.copy(packet, 40 + UDP_HEADER);
  return packet;
}

/** An ICMP echo request (what `ping` sends), identifier 0x4641, with 32 bytes of data. */
export function icmpEchoRequest4(source: string, destination: string, seq: number): Buffer {
  const packet = Buffer.alloc(20 + 8 + 32);
  ipv4Header(packet, IPPROTO_ICMP, source, destination);
  packet[20] = 8; // echo request
  packet.writeUInt16BE(0x4641, 24);
  packet.writeUInt16BE(seq, 26);
  for (let i = 0; i < 32; i++) packet[28 + i] = i;
  packet.writeUInt16BE(internetChecksum(packet, 20, packet.length - 20), 22);
  return packet;
}

// --- offload metadata, for the virtio_net_hdr attack tests ------------------------------------------------

/** A virtio_net_hdr with the given fields, zeros elsewhere. */
export function offloadHeader(fields: Partial<OffloadHeader>): OffloadHeader {
  return { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0, ...fields };
}

/** One's-complement 16-bit add. */
export function onesAdd(a: number, b: number): number {
  const sum = a + b;
  return (sum & 0xffff) + (sum >>> 16);
}

/** The folded pseudo-header sum a kernel leaves in the checksum field of a CHECKSUM_PARTIAL packet. */
export function pseudoSeed(packet: Buffer, transport: number, protocol: number): number {
  const v6 = packet[0]! >> 4 === 6;
  const pseudo = Buffer.alloc(v6 ? 40 : 12);
  const l4Length = packet.length - transport;
  if (v6) {
    packet.copy(pseudo, 0, 8, 40);
    pseudo.writeUInt32BE(l4Length, 32);
    pseudo[39] = protocol;
  } else {
    packet.copy(pseudo, 0, 12, 20);
    pseudo[9] = protocol;
    pseudo.writeUInt16BE(l4Length, 10);
  }
  return ~internetChecksum(pseudo, 0, pseudo.length) & 0xffff;
}

/**
 * The security review's first offload attack, on an IPv6 packet whose checksum field already holds its
 * pseudo-header seed: tunes the two bytes at `tune` so that the "checksum" a kernel finishes at csum_start
 * 20 (over [20, end)) is `target` — written at csum_offset 2, that is the source address's last group.
 */
export function tuneChecksumTo(packet: Buffer, tune: number, target: number): void {
  packet.writeUInt16BE(0, tune);
  const stored0 = internetChecksum(packet, 20, packet.length - 20);
  packet.writeUInt16BE(onesAdd(~target & 0xffff, stored0), tune);
}
