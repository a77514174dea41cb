// An ICMP echo responder's core for tests: turn an echo request read from a TUN into the echo reply
// `ping` expects. Tests only: the VPN itself never answers pings on behalf of a peer.

import { internetChecksum, setIpv4HeaderChecksum } from '../../src/net/packet.js';

const IPPROTO_ICMP = 1;
const IPPROTO_ICMPV6 = 58;
const ICMP_ECHO_REQUEST = 8;
const ICMP_ECHO_REPLY = 0;
const ICMPV6_ECHO_REQUEST = 128;
const ICMPV6_ECHO_REPLY = 129;

/**
 * The echo reply to the packet at buf[off .. off+len), as a new Buffer of the same length, or null when
 * the packet is not an ICMP/ICMPv6 echo request (IPv6 extension headers are not followed).
 */
export function echoReply(buf: Buffer, off: number, len: number): Buffer | null {
  const version = buf[off]! >> 4;
  if (version === 4) return echoReplyV4(buf, off, len);
  if (version === 6) return echoReplyV6(buf, off, len);
  return null;
}

function echoReplyV4(buf: Buffer, off: number, len: number): Buffer | null {
  const ihl = (buf[off]! & 0x0f) * 4;
  if (len < ihl + 8 || buf[off + 9] !== IPPROTO_ICMP || buf[off + ihl] !== ICMP_ECHO_REQUEST) return null;
  const reply = Buffer.from(buf.subarray(off, off + len));
  // Swap source and destination.
  buf.copy(reply, 12, off + 16, off + 20);
  buf.copy(reply, 16, off + 12, off + 16);
  reply[8] = 64; // fresh TTL
  setIpv4HeaderChecksum(reply, 0);
  reply[ihl] = ICMP_ECHO_REPLY;
  reply.writeUInt16BE(0, ihl + 2);
  reply.writeUInt16BE(internetChecksum(reply, ihl, len - ihl), ihl + 2);
  return reply;
}

function echoReplyV6(buf: Buffer, off: number, len: number): Buffer | null {
  if (len < 48 || buf[off + 6] !== IPPROTO_ICMPV6 || buf[off + 40] !== ICMPV6_ECHO_REQUEST) return null;
  const reply = Buffer.from(buf.subarray(off, off + len));
  buf.copy(reply, 8, off + 24, off + 40);
  buf.copy(reply, 24, off + 8, off + 24);
  reply[7] = 64; // hop limit
  reply[40] = ICMPV6_ECHO_REPLY;
  reply.writeUInt16BE(0, 42);
  reply.writeUInt16BE(icmpv6Checksum(reply, 0, len), 42);
  return reply;
}

/** ICMPv6 checksum over the RFC 8200 pseudo-header (addresses, upper-layer length, next header). */
export function icmpv6Checksum(buf: Buffer, off: number, len: number): number {
  const upperLength = len - 40;
  let pseudo = 0;
  for (let i = off + 8; i < off + 40; i += 2) pseudo += buf.readUInt16BE(i);
  pseudo += (upperLength >>> 16) + (upperLength & 0xffff) + IPPROTO_ICMPV6;
  return internetChecksum(buf, off + 40, upperLength, pseudo);
}
