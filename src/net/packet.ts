// IP header accessors for the data path, and address conversions for configuration.
//
// Data path rule: an IPv4 packet is inspected without allocating (addresses are unsigned 32-bit
// numbers). IPv6 addresses become 16-character latin1 strings, one byte per character, which V8
// keeps as compact one-byte strings and which serve directly as Map keys.
//
// Functions take (buffer, offset[, length]) so they work on packets inside a batch buffer, with no
// subarray view per packet.

import { isIPv4, isIPv6 } from 'node:net';
import { facadeError } from '../core/errors.js';

/** Minimal IPv4 header (IHL 5). */
export const IPV4_HEADER_MIN = 20;
/** Fixed IPv6 header. */
export const IPV6_HEADER_LENGTH = 40;

/** 4 or 6 from the version nibble of the first byte; 0 for anything else. */
export function ipVersion(buf: Uint8Array, off: number): 4 | 6 | 0 {
  const version = buf[off]! >> 4;
  return version === 4 ? 4 : version === 6 ? 6 : 0;
}

/** IPv4 source address as an unsigned 32-bit number. Assumes checkPacket() passed. */
export function ipv4Source(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 12);
}

/** IPv4 destination address as an unsigned 32-bit number. Assumes checkPacket() passed. */
export function ipv4Destination(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 16);
}

/** IPv6 source address as a 16-byte latin1 key. Assumes checkPacket() passed. */
export function ipv6SourceKey(buf: Buffer, off: number): string {
  return buf.toString('latin1', off + 8, off + 24);
}

/** IPv6 destination address as a 16-byte latin1 key. Assumes checkPacket() passed. */
export function ipv6DestinationKey(buf: Buffer, off: number): string {
  return buf.toString('latin1', off + 24, off + 40);
}

/**
 * null when buf[off .. off+len) is a plausible IPv4 or IPv6 packet (version, header length, and the
 * header's length field equal to len); otherwise a short reason, for a log line or PACKET_INVALID.
 * A good packet costs no allocation; the reason string is built only for a bad one.
 */
export function checkPacket(buf: Uint8Array, off: number, len: number): string | null {
  if (len <= 0) return 'empty packet';
  if (off < 0 || off + len > buf.length)
    return `packet of ${len} bytes at offset ${off} extends past the buffer`;
  const version = buf[off]! >> 4;
  if (version === 4) {
    if (len < IPV4_HEADER_MIN) return `IPv4 packet of ${len} bytes is shorter than the 20-byte header`;
    const headerLength = (buf[off]! & 0x0f) * 4;
    if (headerLength < IPV4_HEADER_MIN) return `IPv4 header length ${headerLength} is below 20`;
    if (headerLength > len) return `IPv4 header length ${headerLength} exceeds the ${len}-byte packet`;
    const totalLength = (buf[off + 2]! << 8) | buf[off + 3]!;
    if (totalLength !== len)
      return `IPv4 total length ${totalLength} does not match the ${len} bytes received`;
    return null;
  }
  if (version === 6) {
    if (len < IPV6_HEADER_LENGTH) return `IPv6 packet of ${len} bytes is shorter than the 40-byte header`;
    const payloadLength = (buf[off + 4]! << 8) | buf[off + 5]!;
    if (payloadLength + IPV6_HEADER_LENGTH !== len) {
      return `IPv6 payload length ${payloadLength} + 40 does not match the ${len} bytes received`;
    }
    return null;
  }
  return `IP version ${version} is neither 4 nor 6`;
}

/**
 * RFC 1071 one's-complement sum of buf[off .. off+len), folded to 16 bits and complemented: the value
 * to store in a checksum field (computed with the field zeroed), or 0 when verifying a correct one.
 * `initial` adds a pre-summed pseudo-header.
 */
export function internetChecksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  const end = off + len - 1;
  let i = off;
  for (; i < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i === end) sum += buf[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Recomputes and stores the IPv4 header checksum in place; returns it. */
export function setIpv4HeaderChecksum(buf: Buffer, off: number): number {
  const headerLength = (buf[off]! & 0x0f) * 4;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  const checksum = internetChecksum(buf, off, headerLength);
  buf.writeUInt16BE(checksum, off + 10);
  return checksum;
}

// --- conversions (configuration, not the data path) ------------------------------------------------

const IPV4_PART = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** '198.18.0.1' -> 3323068417. Throws FACADE_ERR_ADDRESS_INVALID. */
export function ipv4ToNumber(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => IPV4_PART.test(p))) {
    throw facadeError('ADDRESS_INVALID', [text, 'expected an IPv4 address like 198.18.0.1']);
  }
  return (
    ((Number(parts[0]) << 24) | (Number(parts[1]) << 16) | (Number(parts[2]) << 8) | Number(parts[3])) >>> 0
  );
}

/** 3323068417 -> '198.18.0.1'. */
export function numberToIpv4(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw facadeError('ADDRESS_INVALID', [String(n), 'expected an unsigned 32-bit integer']);
  }
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/** The address bytes of an IPv4 (4) or IPv6 (16) address. Throws FACADE_ERR_ADDRESS_INVALID. */
export function addressBytes(text: string): Buffer {
  if (isIPv4(text)) {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32BE(ipv4ToNumber(text));
    return bytes;
  }
  return Buffer.from(ipv6ToBytes(text));
}

/** Zeroes every bit past `prefix`, in place: the network address of `bytes/prefix`. */
export function clearHostBits(bytes: Uint8Array, prefix: number): Uint8Array {
  for (let bit = prefix; bit < bytes.length * 8; bit++) {
    bytes[bit >>> 3] = (bytes[bit >>> 3] as number) & ~(0x80 >>> (bit & 7));
  }
  return bytes;
}

/** 'fd00::1' -> the 16 address bytes as a latin1 string (the key ipv6SourceKey() returns). */
export function ipv6ToKey(text: string): string {
  return Buffer.from(ipv6ToBytes(text)).toString('latin1');
}

/** The 16-byte key back to RFC 5952 text ('fd00::1'). */
export function keyToIpv6(key: string): string {
  if (key.length !== 16) {
    throw facadeError('ADDRESS_INVALID', [key, `an IPv6 key has 16 characters, this one ${key.length}`]);
  }
  const bytes = Buffer.from(key, 'latin1');
  return bytesToIpv6(bytes);
}

function ipv6ToBytes(text: string): Uint8Array {
  if (!isIPv6(text) || text.includes('%')) {
    throw facadeError('ADDRESS_INVALID', [text, 'expected an IPv6 address like fd00::1']);
  }
  const groups: number[] = [];
  let tail = text;
  // An embedded IPv4 address (::ffff:198.18.0.1) counts as two groups.
  const lastColon = tail.lastIndexOf(':');
  const last = tail.slice(lastColon + 1);
  let v4: number | undefined;
  if (last.includes('.')) {
    v4 = ipv4ToNumber(last);
    tail = `${tail.slice(0, lastColon + 1)}0:0`;
  }
  const [head, rest] = tail.split('::') as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const restGroups = rest === undefined || rest === '' ? [] : rest.split(':');
  const zeros = 8 - headGroups.length - restGroups.length;
  for (const g of headGroups) groups.push(Number.parseInt(g, 16));
  if (rest !== undefined) for (let i = 0; i < zeros; i++) groups.push(0);
  for (const g of restGroups) groups.push(Number.parseInt(g, 16));
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    bytes[i * 2] = groups[i]! >> 8;
    bytes[i * 2 + 1] = groups[i]! & 0xff;
  }
  if (v4 !== undefined) {
    bytes[12] = v4 >>> 24;
    bytes[13] = (v4 >>> 16) & 0xff;
    bytes[14] = (v4 >>> 8) & 0xff;
    bytes[15] = v4 & 0xff;
  }
  return bytes;
}

function bytesToIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[i * 2]! << 8) | bytes[i * 2 + 1]!);
  // RFC 5952: compress the longest run of two or more zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

export interface Cidr {
  family: 4 | 6;
  /** The address as written for IPv4, in RFC 5952 form for IPv6. */
  address: string;
  prefix: number;
}

/** '198.18.0.0/24' or 'fd00::/64' -> {family, address, prefix}. Throws FACADE_ERR_ADDRESS_INVALID. */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  if (slash < 0) throw facadeError('ADDRESS_INVALID', [text, 'expected address/prefix, e.g. 198.18.0.0/15']);
  const address = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  let family: 4 | 6;
  if (isIPv4(address)) family = 4;
  else if (isIPv6(address) && !address.includes('%')) family = 6;
  else throw facadeError('ADDRESS_INVALID', [text, `"${address}" is neither an IPv4 nor an IPv6 address`]);
  const maxPrefix = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > maxPrefix) {
    throw facadeError('ADDRESS_INVALID', [text, `the prefix must be an integer in 0..${maxPrefix}`]);
  }
  const canonical = family === 4 ? numberToIpv4(ipv4ToNumber(address)) : bytesToIpv6(ipv6ToBytes(address));
  return { family, address: canonical, prefix: Number(prefixText) };
}
