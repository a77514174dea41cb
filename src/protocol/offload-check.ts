// Validation of a peer's virtio_net_hdr before it reaches our kernel (docs/PROTOCOL.md 2.3).
//
// The kernel trusts the offload header it is handed on a TUN write far more than the packet: it writes a
// checksum wherever csum_start + csum_offset points (into the IP source address, after our anti-spoof
// check looked at it), and cuts a GSO packet into as many segments as gso_size says (gso_size 1: one per
// payload byte). virtio_net_hdr_to_skb only checks that those offsets stay inside the packet. So a
// DATA_OFFLOAD frame is accepted only when its header is one a well-behaved Linux sender produces for
// that very packet: the header a TUN read gives (virtio_net_hdr_from_skb), for TCP or UDP checksum offload
// and TSO/USO. Everything else is refused and the caller drops the packet.
//
// Data path rules: pure, no allocation, no string on the good path. The result is a numeric reason code
// (OFFLOAD_OK = 0); offloadProblemName() names it for logs and tests. The packet must already have passed
// checkPacket() (net/packet.ts): version 4 or 6, header lengths and total length consistent.

import {
  MAX_GSO_SEGMENTS,
  MAX_UDP_GSO_SEGMENTS,
  MIN_GSO_SIZE_IPV4,
  MIN_GSO_SIZE_IPV6,
} from '../core/limits.js';
import { GsoType, OffloadFlag, type OffloadHeader } from './frame.js';

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
/** IPv6 extension headers walked to find the transport header (all with the (len + 1) * 8 layout). */
const IPV6_HOP_BY_HOP = 0;
const IPV6_ROUTING = 43;
const IPV6_FRAGMENT = 44;
const IPV6_DEST_OPTIONS = 60;
/** More than a real packet carries (RFC 8200 4.1 orders at most ~4); bounds the walk. */
const MAX_IPV6_EXTENSION_HEADERS = 8;

const TCP_HEADER_MIN = 20;
const UDP_HEADER_LENGTH = 8;
/** offsetof(struct tcphdr, check) and offsetof(struct udphdr, check): where the kernel stores the sum. */
const TCP_CSUM_OFFSET = 16;
const UDP_CSUM_OFFSET = 6;

const KNOWN_FLAGS = OffloadFlag.NEEDS_CSUM | OffloadFlag.DATA_VALID;

/** Reason codes; 0 means the header is acceptable. Stable: tests and logs use them. */
export const OffloadProblem = {
  OK: 0,
  /** A flag bit other than NEEDS_CSUM and DATA_VALID. */
  UNKNOWN_FLAGS: 1,
  /** NEEDS_CSUM and DATA_VALID together: a kernel sets one or the other, never both. */
  CONFLICTING_FLAGS: 2,
  /** gso_type not NONE, TCPV4, TCPV6 or UDP_L4 (legacy UFO, 3, included: no Linux sender makes it). */
  UNKNOWN_GSO_TYPE: 3,
  /** The ECN bit on a gso_type that is not TCP. */
  ECN_WITHOUT_TCP: 4,
  /** A GSO type without NEEDS_CSUM: segments need their checksums filled in. */
  GSO_WITHOUT_CSUM: 5,
  /** csum_start or csum_offset set without NEEDS_CSUM (a kernel zeroes them). */
  CSUM_FIELDS_WITHOUT_CSUM: 6,
  /** gso_size set while gso_type is NONE (a kernel zeroes it). */
  GSO_SIZE_WITHOUT_GSO: 7,
  /** NEEDS_CSUM on an IP fragment (checksums are filled in before fragmenting), or GSO on one. */
  FRAGMENT: 8,
  /** NEEDS_CSUM on a packet that is not TCP or UDP, or behind IPv6 extension headers we do not walk. */
  NOT_TCP_OR_UDP: 9,
  /** The transport header does not fit in the packet (or a TCP data offset below 20). */
  TRANSPORT_TRUNCATED: 10,
  /** csum_start is not the transport header's offset. */
  CSUM_START: 11,
  /** csum_offset is not 16 (TCP) or 6 (UDP). */
  CSUM_OFFSET: 12,
  /** gso_type does not match the packet: TCPV4 on IPv6 or non-TCP, TCPV6 on IPv4, UDP_L4 on TCP... */
  GSO_TYPE_MISMATCH: 13,
  /** hdr_len past the end of the packet. */
  HDR_LEN: 14,
  /** gso_size below the floor for the IP version (core/limits.ts MIN_GSO_SIZE_IPV4/6). */
  GSO_SIZE_TOO_SMALL: 15,
  /** gso_size so large that one segment would not fit the tunnel MTU. */
  GSO_SIZE_TOO_LARGE: 16,
  /** More segments than MAX_GSO_SEGMENTS, or than MAX_UDP_GSO_SEGMENTS for UDP. */
  TOO_MANY_SEGMENTS: 17,
} as const;

export type OffloadProblemCode = (typeof OffloadProblem)[keyof typeof OffloadProblem];

const PROBLEM_NAMES: readonly string[] = Object.keys(OffloadProblem).map((name) => name.toLowerCase());

/** 'csum_start', 'gso_size_too_small'...: for logs and test messages, not the data path. */
export function offloadProblemName(code: number): string {
  return PROBLEM_NAMES[code] ?? `unknown problem ${code}`;
}

/**
 * OffloadProblem.OK (0) when `header` is what a Linux sender would put in front of `packet`, else the
 * reason it is refused. `mtu` is the tunnel MTU: a segment (headers + gso_size) must fit it, as it does
 * for anything the sender's own TUN of that MTU hands out. Allocation-free; `packet` must have passed
 * checkPacket().
 */
export function offloadProblem(packet: Uint8Array, header: OffloadHeader, mtu: number): OffloadProblemCode {
  const flags = header.flags;
  if ((flags & ~KNOWN_FLAGS) !== 0) return OffloadProblem.UNKNOWN_FLAGS;
  if (flags === KNOWN_FLAGS) return OffloadProblem.CONFLICTING_FLAGS;

  const gso = header.gsoType & ~GsoType.ECN;
  const tcpGso = gso === GsoType.TCPV4 || gso === GsoType.TCPV6;
  if (!tcpGso && gso !== GsoType.NONE && gso !== GsoType.UDP_L4) return OffloadProblem.UNKNOWN_GSO_TYPE;
  if ((header.gsoType & GsoType.ECN) !== 0 && !tcpGso) return OffloadProblem.ECN_WITHOUT_TCP;

  const length = packet.length;
  // hdr_len is only a hint for how much of the packet the kernel keeps linear: Linux sends skb_headlen(),
  // which on the forwarding path may be the whole first segment or less than the headers (wireguard-go does
  // not trust it either), and tun_get_user raises it to csum_start + csum_offset + 2 itself. So a short one
  // is accepted as is; one past the packet the kernel refuses (EINVAL) and so do we.
  if (header.hdrLen > length) return OffloadProblem.HDR_LEN;

  if ((flags & OffloadFlag.NEEDS_CSUM) === 0) {
    // No checksum to fill in: nothing for the kernel to write, so the offsets must be unused (zero) and
    // there is no GSO (segments would need their checksums computed).
    if (gso !== GsoType.NONE) return OffloadProblem.GSO_WITHOUT_CSUM;
    if (header.csumStart !== 0 || header.csumOffset !== 0) return OffloadProblem.CSUM_FIELDS_WITHOUT_CSUM;
    if (header.gsoSize !== 0) return OffloadProblem.GSO_SIZE_WITHOUT_GSO;
    return OffloadProblem.OK;
  }

  // NEEDS_CSUM: find the transport header ourselves; csum_start must point exactly there.
  const version = packet[0]! >> 4;
  let transport: number;
  let protocol: number;
  if (version === 4) {
    // MF flag or a fragment offset: the kernel fills checksums in before fragmenting, never after.
    if ((packet[6]! & 0x3f) !== 0 || packet[7]! !== 0) return OffloadProblem.FRAGMENT;
    transport = (packet[0]! & 0x0f) * 4;
    protocol = packet[9]!;
  } else {
    transport = 40;
    protocol = packet[6]!;
    // Walk hop-by-hop, routing and destination options headers (bounded); refuse fragments and anything
    // else (AH, ESP, mobility...): no Linux sender offloads a checksum behind those.
    for (let i = 0; protocol !== IPPROTO_TCP && protocol !== IPPROTO_UDP; i++) {
      if (protocol === IPV6_FRAGMENT) return OffloadProblem.FRAGMENT;
      if (
        i === MAX_IPV6_EXTENSION_HEADERS ||
        (protocol !== IPV6_HOP_BY_HOP && protocol !== IPV6_ROUTING && protocol !== IPV6_DEST_OPTIONS)
      ) {
        return OffloadProblem.NOT_TCP_OR_UDP;
      }
      if (transport + 8 > length) return OffloadProblem.TRANSPORT_TRUNCATED;
      protocol = packet[transport]!;
      transport += (packet[transport + 1]! + 1) * 8;
    }
  }

  let transportHeader: number;
  let csumOffset: number;
  if (protocol === IPPROTO_TCP) {
    if (transport + TCP_HEADER_MIN > length) return OffloadProblem.TRANSPORT_TRUNCATED;
    transportHeader = (packet[transport + 12]! >> 4) * 4;
    if (transportHeader < TCP_HEADER_MIN || transport + transportHeader > length) {
      return OffloadProblem.TRANSPORT_TRUNCATED;
    }
    csumOffset = TCP_CSUM_OFFSET;
  } else if (protocol === IPPROTO_UDP) {
    transportHeader = UDP_HEADER_LENGTH;
    if (transport + UDP_HEADER_LENGTH > length) return OffloadProblem.TRANSPORT_TRUNCATED;
    csumOffset = UDP_CSUM_OFFSET;
  } else {
    return OffloadProblem.NOT_TCP_OR_UDP;
  }
  // With the transport header inside the packet, csum_start + csum_offset + 2 <= length follows.
  if (header.csumStart !== transport) return OffloadProblem.CSUM_START;
  if (header.csumOffset !== csumOffset) return OffloadProblem.CSUM_OFFSET;

  if (gso === GsoType.NONE) {
    return header.gsoSize === 0 ? OffloadProblem.OK : OffloadProblem.GSO_SIZE_WITHOUT_GSO;
  }

  // GSO: the type must name this packet's version and protocol, as the kernel's own senders set it.
  if (
    gso === GsoType.TCPV4
      ? version !== 4 || protocol !== IPPROTO_TCP
      : gso === GsoType.TCPV6
        ? version !== 6 || protocol !== IPPROTO_TCP
        : protocol !== IPPROTO_UDP
  ) {
    return OffloadProblem.GSO_TYPE_MISMATCH;
  }
  const gsoSize = header.gsoSize;
  if (gsoSize < (version === 4 ? MIN_GSO_SIZE_IPV4 : MIN_GSO_SIZE_IPV6)) {
    return OffloadProblem.GSO_SIZE_TOO_SMALL;
  }
  const headers = transport + transportHeader;
  if (headers + gsoSize > mtu) return OffloadProblem.GSO_SIZE_TOO_LARGE;
  // A payload of gso_size or less is one segment: the kernel then ignores GSO ("not really GSO"), fine.
  const segments = Math.ceil((length - headers) / gsoSize);
  if (segments > (protocol === IPPROTO_UDP ? MAX_UDP_GSO_SEGMENTS : MAX_GSO_SEGMENTS)) {
    return OffloadProblem.TOO_MANY_SEGMENTS;
  }
  return OffloadProblem.OK;
}
