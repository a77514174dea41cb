// The tunnel's wire framing, shared by server and client: constants, the pure header writer and the
// offload-header codec. docs/PROTOCOL.md is the specification; this file must match it byte for byte.
//
//   frame = [version u8][type u8][length u16 BE] [offload header, 10 bytes, DATA_OFFLOAD only] [payload]
//
// `length` counts the payload only. For DATA_OFFLOAD the 10-byte offload header is implied by the type and
// is not counted, so a full 65535-byte GSO super-packet still fits the 16-bit field.
//
// With IFF_VNET_HDR the kernel puts the virtio_net_hdr in front of each packet itself, so a packet read
// from such a TUN already is a DATA_OFFLOAD body: the session copies it behind a 4-byte header as is.

import { facadeError } from '../core/errors.js';

/** Version byte of every frame. A peer that sees another value ends the session (FRAME_VERSION). */
export const PROTOCOL_VERSION = 1;

/** version u8 + type u8 + length u16. */
export const FRAME_HEADER_SIZE = 4;

/** struct virtio_net_hdr without num_buffers: the size the kernel uses by default with IFF_VNET_HDR. */
export const OFFLOAD_HEADER_SIZE = 10;

/** The 16-bit length field's ceiling; no frame payload (packet or control message) can be longer. */
export const MAX_FRAME_LENGTH = 0xffff;

export const FrameType = {
  /** Payload is exactly one IP packet. */
  DATA: 0x01,
  /** A 10-byte offload header, then one IP packet (possibly a GSO super-packet). Only when negotiated. */
  DATA_OFFLOAD: 0x02,
  /** Payload is one control message (control.ts). */
  CONTROL: 0x10,
} as const;

/** Name of a frame type for logs and error messages; unknown types are shown in hex. */
export function frameTypeName(type: number): string {
  switch (type) {
    case FrameType.DATA:
      return 'DATA';
    case FrameType.DATA_OFFLOAD:
      return 'DATA_OFFLOAD';
    case FrameType.CONTROL:
      return 'CONTROL';
    default:
      return `0x${type.toString(16).padStart(2, '0')}`;
  }
}

/** virtio_net_hdr.flags bits (include/uapi/linux/virtio_net.h). */
export const OffloadFlag = {
  NEEDS_CSUM: 0x01,
  DATA_VALID: 0x02,
} as const;

/** virtio_net_hdr.gso_type values (include/uapi/linux/virtio_net.h); ECN is a bit OR-ed onto the others. */
export const GsoType = {
  NONE: 0x00,
  TCPV4: 0x01,
  UDP: 0x03,
  TCPV6: 0x04,
  UDP_L4: 0x05,
  ECN: 0x80,
} as const;

/**
 * The fields of struct virtio_net_hdr, carried in front of the packet of a DATA_OFFLOAD frame. On the wire
 * the 16-bit fields are little-endian: that is what the kernel reads and writes on a TUN with IFF_VNET_HDR on
 * every little-endian host (TUNSETVNETLE's default there), so the 10 bytes pass between socket and TUN
 * untouched. A big-endian host must set TUNSETVNETLE or swap.
 */
export interface OffloadHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function createOffloadHeader(): OffloadHeader {
  return { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
}

/** Fills `into` from the 10 bytes at `offset` (no allocation) and returns it. */
export function readOffloadHeader(source: Buffer, offset: number, into: OffloadHeader): OffloadHeader {
  into.flags = source[offset]!;
  into.gsoType = source[offset + 1]!;
  into.hdrLen = source[offset + 2]! | (source[offset + 3]! << 8);
  into.gsoSize = source[offset + 4]! | (source[offset + 5]! << 8);
  into.csumStart = source[offset + 6]! | (source[offset + 7]! << 8);
  into.csumOffset = source[offset + 8]! | (source[offset + 9]! << 8);
  return into;
}

/** Writes the 10-byte offload header at `offset`. Every field must fit its width (u8 or u16). */
export function writeOffloadHeader(target: Buffer, offset: number, header: OffloadHeader): void {
  checkRoom(target, offset, OFFLOAD_HEADER_SIZE, 'offload header');
  checkField('flags', header.flags, 0xff);
  checkField('gsoType', header.gsoType, 0xff);
  checkField('hdrLen', header.hdrLen, 0xffff);
  checkField('gsoSize', header.gsoSize, 0xffff);
  checkField('csumStart', header.csumStart, 0xffff);
  checkField('csumOffset', header.csumOffset, 0xffff);
  target[offset] = header.flags;
  target[offset + 1] = header.gsoType;
  target[offset + 2] = header.hdrLen & 0xff;
  target[offset + 3] = header.hdrLen >>> 8;
  target[offset + 4] = header.gsoSize & 0xff;
  target[offset + 5] = header.gsoSize >>> 8;
  target[offset + 6] = header.csumStart & 0xff;
  target[offset + 7] = header.csumStart >>> 8;
  target[offset + 8] = header.csumOffset & 0xff;
  target[offset + 9] = header.csumOffset >>> 8;
}

/**
 * Writes the 4-byte frame header at `offset`. Pure and allocation-free: the data path calls it once per
 * packet. `length` is the payload length (for DATA_OFFLOAD: the packet, without the offload header).
 * Throws FRAME_TYPE, FRAME_INVALID (zero length, no room) or FRAME_TOO_LARGE; those are caller bugs, so they
 * are caught here rather than sent as a frame the peer would reject.
 */
export function writeFrameHeader(target: Buffer, offset: number, type: number, length: number): void {
  if (type !== FrameType.DATA && type !== FrameType.DATA_OFFLOAD && type !== FrameType.CONTROL) {
    throw facadeError('FRAME_TYPE', [`${frameTypeName(type)} (cannot encode it)`]);
  }
  if ((length | 0) !== length || length < 1) {
    throw facadeError('FRAME_INVALID', [
      `payload length ${length} for a ${frameTypeName(type)} frame (must be an integer of at least 1)`,
    ]);
  }
  if (length > MAX_FRAME_LENGTH) throw facadeError('FRAME_TOO_LARGE', [length, MAX_FRAME_LENGTH]);
  checkRoom(target, offset, FRAME_HEADER_SIZE, 'frame header');
  target[offset] = PROTOCOL_VERSION;
  target[offset + 1] = type;
  target[offset + 2] = length >>> 8;
  target[offset + 3] = length & 0xff;
}

/** Allocates one frame holding a copy of `payload`. For control frames and tests, not the data path. */
export function encodeFrame(type: number, payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_SIZE + payload.length);
  writeFrameHeader(frame, 0, type, payload.length);
  payload.copy(frame, FRAME_HEADER_SIZE);
  return frame;
}

/** Allocates one DATA_OFFLOAD frame: header, offload header, a copy of `packet`. */
export function encodeOffloadFrame(header: OffloadHeader, packet: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_SIZE + OFFLOAD_HEADER_SIZE + packet.length);
  writeFrameHeader(frame, 0, FrameType.DATA_OFFLOAD, packet.length);
  writeOffloadHeader(frame, FRAME_HEADER_SIZE, header);
  packet.copy(frame, FRAME_HEADER_SIZE + OFFLOAD_HEADER_SIZE);
  return frame;
}

// A typed array silently drops writes past its end; a truncated header would desynchronise the stream.
function checkRoom(target: Buffer, offset: number, size: number, what: string): void {
  if ((offset | 0) !== offset || offset < 0 || offset + size > target.length) {
    throw facadeError('FRAME_INVALID', [
      `no room for the ${size}-byte ${what} at offset ${offset} of a ${target.length}-byte buffer`,
    ]);
  }
}

function checkField(name: string, value: number, max: number): void {
  if ((value | 0) !== value || value < 0 || value > max) {
    throw facadeError('FRAME_INVALID', [`offload header field ${name} = ${value} (must be 0..${max})`]);
  }
}
