// CONTROL messages: their types and binary codec. A CONTROL frame's payload is
//
//   [message type u8][body]
//
// CONFIG's body is a TLV list ([tag u8][length u16 BE][value]) so fields can be added without a version
// bump: a receiver skips tags it does not know. Every other body has a fixed layout. docs/PROTOCOL.md is the
// specification. Decoding is strict: anything malformed throws CONTROL_INVALID and the session ends.

import { isIPv6 } from 'node:net';
import { consequenceOf, facadeError, isFacadeError } from '../core/errors.js';
import { DEFAULT_KEEPALIVE_MS, DEFAULT_TUNNEL_MTU, MIN_TUNNEL_MTU } from '../core/limits.js';
import { clearHostBits, ipv4ToNumber, ipv6ToKey, keyToIpv6, numberToIpv4 } from '../net/packet.js';
import { FRAME_HEADER_SIZE, FrameType, MAX_FRAME_LENGTH, writeFrameHeader } from './frame.js';

export const ControlType = {
  CONFIG: 0x01,
  ECHO_REQUEST: 0x02,
  ECHO_REPLY: 0x03,
  DISCONNECT: 0x04,
} as const;

/** CONFIG tags. ROUTE and DNS may repeat; every other tag may appear at most once. */
export const ConfigTag = {
  /** 4 address bytes + prefix u8 (0..32). Required. */
  IPV4_ADDRESS: 0x01,
  /** 16 address bytes + prefix u8 (0..128). */
  IPV6_ADDRESS: 0x02,
  /** The server's own tunnel IPv4 address, 4 bytes. */
  SERVER_IPV4: 0x03,
  /** The server's own tunnel IPv6 address, 16 bytes. */
  SERVER_IPV6: 0x04,
  /** u16, MIN_TUNNEL_MTU..65535. Absent: DEFAULT_TUNNEL_MTU. */
  MTU: 0x05,
  /** family u8 (4 or 6) + prefix u8 + 4 or 16 address bytes, host bits zero. Repeatable. */
  ROUTE: 0x06,
  /** 4 or 16 address bytes (the family follows from the length). Repeatable. */
  DNS: 0x07,
  /** u32 milliseconds, at least 1. Absent: DEFAULT_KEEPALIVE_MS. */
  KEEPALIVE_MS: 0x08,
  /** u8 0 or 1: whether DATA_OFFLOAD frames are in use in this session. Absent: 0. */
  OFFLOAD: 0x09,
  /**
   * A DNS domain the pushed DNS servers answer for (ASCII, letters/digits/hyphens, dot-separated, 1..253
   * bytes). Repeatable. Without --full-tunnel a client sends only these domains to the pushed servers.
   */
  DNS_DOMAIN: 0x0a,
} as const;

/** Why a session ended, carried by DISCONNECT. Codes are never reused; a receiver accepts unknown ones. */
export const DisconnectReason = {
  /** The peer shut down normally (client exit, user request). */
  NORMAL: 0,
  /** The peer broke the protocol (bad frame or control message). */
  PROTOCOL_ERROR: 1,
  /** The server has no free address for this user. */
  POOL_EXHAUSTED: 2,
  /** No traffic or echo reply for too long. */
  DEAD_PEER: 3,
  /** The server is stopping; reconnecting later may succeed. */
  SERVER_SHUTDOWN: 4,
  /** The same user connected again elsewhere; this older session was replaced. */
  REPLACED: 5,
  /** An administrator ended the session. */
  ADMIN: 6,
  /** An internal error on the sender's side. */
  INTERNAL: 7,
} as const;

const REASON_TEXT: readonly string[] = [
  'normal shutdown by the peer',
  'protocol error',
  'address pool exhausted',
  'dead peer (keepalive timeout)',
  'server shutting down',
  'replaced by a newer session of the same user',
  'ended by an administrator',
  'internal error',
];

/** A human phrase for a reason code, e.g. for the log line; unknown codes (from newer peers) included. */
export function describeReason(code: number): string {
  return REASON_TEXT[code] ?? `unknown reason ${code}`;
}

/**
 * The reason to send when a session ends on `err`, from the error table's consequence (core/errors.ts):
 * PROTOCOL_ERROR for the peer's framing or control violations, INTERNAL for our own failures.
 */
export function reasonForError(err: unknown): number {
  const consequence = consequenceOf(err);
  return consequence.kind === 'disconnect' ? DisconnectReason[consequence.reason] : DisconnectReason.INTERNAL;
}

/** Longest DISCONNECT text in UTF-8 bytes: enough for a sentence, small enough to log as one line. */
export const MAX_DISCONNECT_TEXT_BYTES = 1000;

/**
 * Cuts `text` to at most MAX_DISCONNECT_TEXT_BYTES UTF-8 bytes on a character boundary, for DISCONNECT texts
 * built from error messages (which may quote peer input of any length). encodeControlFrame() refuses longer.
 */
export function clampDisconnectText(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= MAX_DISCONNECT_TEXT_BYTES) return text;
  let end = MAX_DISCONNECT_TEXT_BYTES;
  // Back off over continuation bytes (10xxxxxx) so no character is cut in half.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.toString('utf8', 0, end);
}

export interface InterfaceAddress {
  address: string;
  prefix: number;
}

export interface Route {
  family: 4 | 6;
  /** Network address, host bits zero (as `ip route` requires). */
  address: string;
  prefix: number;
}

export interface ConfigMessage {
  type: 'config';
  ipv4: InterfaceAddress;
  ipv6?: InterfaceAddress;
  serverIpv4?: string;
  serverIpv6?: string;
  mtu: number;
  routes: Route[];
  dns: string[];
  /** Domains the pushed DNS servers answer for (absent: none pushed). */
  dnsDomains?: string[];
  keepaliveMs: number;
  offload: boolean;
}

/**
 * `timestamp` is the requester's own clock in ms mod 2^32 (see echoClock()); the replier copies seq and
 * timestamp unchanged, so only the requester ever interprets them and the two clocks need not agree.
 */
export interface EchoRequestMessage {
  type: 'echo-request';
  seq: number;
  timestamp: number;
}

export interface EchoReplyMessage {
  type: 'echo-reply';
  seq: number;
  timestamp: number;
}

export interface DisconnectMessage {
  type: 'disconnect';
  reason: number;
  message: string;
}

export type ControlMessage = ConfigMessage | EchoRequestMessage | EchoReplyMessage | DisconnectMessage;

/** A monotonic millisecond clock mod 2^32 for echo timestamps. */
export function echoClock(): number {
  return Math.floor(performance.now()) >>> 0;
}

/** Round-trip time of an echo whose reply carries `timestamp`, correct across the 2^32 wrap. */
export function echoRoundTripMs(timestamp: number, now: number = echoClock()): number {
  return (now - timestamp) >>> 0;
}

// --- encoding ------------------------------------------------------------------------------------------

const TLV_HEADER_SIZE = 3;
const ECHO_BODY_SIZE = 8;

/** Encodes a control message as a whole CONTROL frame (frame header included). Throws CONTROL_INVALID. */
export function encodeControlFrame(msg: ControlMessage): Buffer {
  switch (msg.type) {
    case 'config':
      return encodeConfig(msg);
    case 'echo-request':
      return encodeEcho(ControlType.ECHO_REQUEST, msg.seq, msg.timestamp);
    case 'echo-reply':
      return encodeEcho(ControlType.ECHO_REPLY, msg.seq, msg.timestamp);
    case 'disconnect':
      return encodeDisconnect(msg);
    default:
      throw invalid(`unknown message type ${JSON.stringify((msg as { type?: unknown }).type)}`);
  }
}

/** Allocates a CONTROL frame whose payload is `bodyLength` + 1 bytes, with header and type byte written. */
function allocControlFrame(messageType: number, bodyLength: number): Buffer {
  const payloadLength = 1 + bodyLength;
  if (payloadLength > MAX_FRAME_LENGTH) {
    throw invalid(
      `message of ${payloadLength} bytes exceeds the frame limit of ${MAX_FRAME_LENGTH} (too many routes or DNS servers?)`,
    );
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_SIZE + payloadLength);
  writeFrameHeader(frame, 0, FrameType.CONTROL, payloadLength);
  frame[FRAME_HEADER_SIZE] = messageType;
  return frame;
}

function encodeEcho(messageType: number, seq: number, timestamp: number): Buffer {
  checkUint('echo seq', seq, 0xffffffff);
  checkUint('echo timestamp', timestamp, 0xffffffff);
  const frame = allocControlFrame(messageType, ECHO_BODY_SIZE);
  frame.writeUInt32BE(seq, FRAME_HEADER_SIZE + 1);
  frame.writeUInt32BE(timestamp, FRAME_HEADER_SIZE + 5);
  return frame;
}

function encodeDisconnect(msg: DisconnectMessage): Buffer {
  checkUint('disconnect reason', msg.reason, 0xffff);
  const text = Buffer.from(msg.message, 'utf8');
  checkTextLength(text.length);
  const frame = allocControlFrame(ControlType.DISCONNECT, 2 + text.length);
  frame.writeUInt16BE(msg.reason, FRAME_HEADER_SIZE + 1);
  text.copy(frame, FRAME_HEADER_SIZE + 3);
  return frame;
}

function encodeConfig(msg: ConfigMessage): Buffer {
  // Validate and size everything first, then allocate once.
  const ipv4 = parseAddress(msg.ipv4?.address, 4, 'ipv4 address');
  checkPrefix('ipv4', msg.ipv4.prefix, 32);
  const ipv6 = msg.ipv6 === undefined ? null : parseAddress(msg.ipv6.address, 6, 'ipv6 address');
  if (msg.ipv6 !== undefined) checkPrefix('ipv6', msg.ipv6.prefix, 128);
  const serverIpv4 = msg.serverIpv4 === undefined ? null : parseAddress(msg.serverIpv4, 4, 'server ipv4');
  const serverIpv6 = msg.serverIpv6 === undefined ? null : parseAddress(msg.serverIpv6, 6, 'server ipv6');
  checkMtu(msg.mtu);
  checkKeepalive(msg.keepaliveMs);
  const routes = msg.routes.map((route) => {
    if (route.family !== 4 && route.family !== 6) {
      throw invalid(`route family ${route.family} (must be 4 or 6)`);
    }
    const bytes = parseAddress(route.address, route.family, 'route address');
    checkPrefix(`route ${route.address}`, route.prefix, route.family === 4 ? 32 : 128);
    checkHostBitsZero(bytes, route.prefix, route.address);
    return { family: route.family, prefix: route.prefix, bytes };
  });
  const dns = msg.dns.map((text) => parseAddress(text, isIPv6(text) ? 6 : 4, 'dns server'));
  const dnsDomains = (msg.dnsDomains ?? []).map((name) => {
    if (!isDnsDomain(name)) throw invalid(`dns domain ${JSON.stringify(name)} is not a domain name`);
    return Buffer.from(name, 'latin1');
  });

  let size = TLV_HEADER_SIZE + 5 + TLV_HEADER_SIZE + 2 + TLV_HEADER_SIZE + 4 + TLV_HEADER_SIZE + 1;
  if (ipv6 !== null) size += TLV_HEADER_SIZE + 17;
  if (serverIpv4 !== null) size += TLV_HEADER_SIZE + 4;
  if (serverIpv6 !== null) size += TLV_HEADER_SIZE + 16;
  for (const route of routes) size += TLV_HEADER_SIZE + 2 + route.bytes.length;
  for (const server of dns) size += TLV_HEADER_SIZE + server.length;
  for (const domain of dnsDomains) size += TLV_HEADER_SIZE + domain.length;

  const frame = allocControlFrame(ControlType.CONFIG, size);
  let at = FRAME_HEADER_SIZE + 1;
  const tlv = (tag: number, length: number): number => {
    frame[at] = tag;
    frame.writeUInt16BE(length, at + 1);
    const valueAt = at + TLV_HEADER_SIZE;
    at = valueAt + length;
    return valueAt;
  };
  let v = tlv(ConfigTag.IPV4_ADDRESS, 5);
  ipv4.copy(frame, v);
  frame[v + 4] = msg.ipv4.prefix;
  if (ipv6 !== null) {
    v = tlv(ConfigTag.IPV6_ADDRESS, 17);
    ipv6.copy(frame, v);
    frame[v + 16] = msg.ipv6!.prefix;
  }
  if (serverIpv4 !== null) serverIpv4.copy(frame, tlv(ConfigTag.SERVER_IPV4, 4));
  if (serverIpv6 !== null) serverIpv6.copy(frame, tlv(ConfigTag.SERVER_IPV6, 16));
  frame.writeUInt16BE(msg.mtu, tlv(ConfigTag.MTU, 2));
  for (const route of routes) {
    v = tlv(ConfigTag.ROUTE, 2 + route.bytes.length);
    frame[v] = route.family;
    frame[v + 1] = route.prefix;
    route.bytes.copy(frame, v + 2);
  }
  for (const server of dns) server.copy(frame, tlv(ConfigTag.DNS, server.length));
  for (const domain of dnsDomains) domain.copy(frame, tlv(ConfigTag.DNS_DOMAIN, domain.length));
  frame.writeUInt32BE(msg.keepaliveMs, tlv(ConfigTag.KEEPALIVE_MS, 4));
  frame[tlv(ConfigTag.OFFLOAD, 1)] = msg.offload ? 1 : 0;
  return frame;
}

// --- decoding ------------------------------------------------------------------------------------------

// fatal: invalid UTF-8 is an error, not U+FFFD. ignoreBOM: keep the text exactly as sent.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Decodes a CONTROL payload (as given to FrameSink.onControl). Throws CONTROL_INVALID. */
export function decodeControl(payload: Buffer): ControlMessage {
  if (payload.length < 1) throw invalid('empty payload (expected a message type byte)');
  const messageType = payload[0]!;
  switch (messageType) {
    case ControlType.CONFIG:
      return decodeConfig(payload);
    case ControlType.ECHO_REQUEST:
    case ControlType.ECHO_REPLY: {
      const name = messageType === ControlType.ECHO_REQUEST ? 'echo-request' : 'echo-reply';
      if (payload.length !== 1 + ECHO_BODY_SIZE) {
        throw invalid(`${name} body of ${payload.length - 1} bytes (expected ${ECHO_BODY_SIZE})`);
      }
      return { type: name, seq: payload.readUInt32BE(1), timestamp: payload.readUInt32BE(5) };
    }
    case ControlType.DISCONNECT: {
      if (payload.length < 3) {
        throw invalid(`disconnect body of ${payload.length - 1} bytes (expected at least 2)`);
      }
      checkTextLength(payload.length - 3);
      let message: string;
      try {
        message = utf8.decode(payload.subarray(3));
      } catch {
        throw invalid('disconnect text is not valid UTF-8');
      }
      return { type: 'disconnect', reason: payload.readUInt16BE(1), message };
    }
    default:
      throw invalid(
        `unknown message type 0x${messageType.toString(16).padStart(2, '0')} (known: 0x01..0x04)`,
      );
  }
}

function decodeConfig(payload: Buffer): ConfigMessage {
  let ipv4: InterfaceAddress | undefined;
  let ipv6: InterfaceAddress | undefined;
  let serverIpv4: string | undefined;
  let serverIpv6: string | undefined;
  let mtu = DEFAULT_TUNNEL_MTU;
  let keepaliveMs = DEFAULT_KEEPALIVE_MS;
  let offload = false;
  const routes: Route[] = [];
  const dns: string[] = [];
  const dnsDomains: string[] = [];
  let seen = 0;

  let at = 1;
  while (at < payload.length) {
    if (payload.length - at < TLV_HEADER_SIZE) {
      throw invalid(`config: truncated TLV header at byte ${at} (${payload.length - at} bytes left)`);
    }
    const tag = payload[at]!;
    const length = payload.readUInt16BE(at + 1);
    const v = at + TLV_HEADER_SIZE;
    if (length > payload.length - v) {
      throw invalid(
        `config: tag 0x${tag.toString(16)} at byte ${at} claims ${length} bytes, only ${payload.length - v} left`,
      );
    }
    at = v + length;
    if (tag !== ConfigTag.ROUTE && tag !== ConfigTag.DNS && tag <= ConfigTag.OFFLOAD) {
      const bit = 1 << tag;
      if ((seen & bit) !== 0) throw invalid(`config: tag 0x${tag.toString(16)} appears twice`);
      seen |= bit;
    }
    switch (tag) {
      case ConfigTag.IPV4_ADDRESS:
        expectLength('ipv4 address', length, 5);
        ipv4 = { address: formatIpv4(payload, v), prefix: prefixAt(payload, v + 4, 32, 'ipv4') };
        break;
      case ConfigTag.IPV6_ADDRESS:
        expectLength('ipv6 address', length, 17);
        ipv6 = { address: formatIpv6(payload, v), prefix: prefixAt(payload, v + 16, 128, 'ipv6') };
        break;
      case ConfigTag.SERVER_IPV4:
        expectLength('server ipv4', length, 4);
        serverIpv4 = formatIpv4(payload, v);
        break;
      case ConfigTag.SERVER_IPV6:
        expectLength('server ipv6', length, 16);
        serverIpv6 = formatIpv6(payload, v);
        break;
      case ConfigTag.MTU:
        expectLength('mtu', length, 2);
        mtu = payload.readUInt16BE(v);
        checkMtu(mtu);
        break;
      case ConfigTag.ROUTE:
        routes.push(decodeRoute(payload, v, length));
        break;
      case ConfigTag.DNS:
        if (length === 4) dns.push(formatIpv4(payload, v));
        else if (length === 16) dns.push(formatIpv6(payload, v));
        else throw invalid(`config: dns server of ${length} bytes (expected 4 or 16)`);
        break;
      case ConfigTag.KEEPALIVE_MS:
        expectLength('keepalive interval', length, 4);
        keepaliveMs = payload.readUInt32BE(v);
        checkKeepalive(keepaliveMs);
        break;
      case ConfigTag.DNS_DOMAIN: {
        const name = payload.toString('latin1', v, v + length);
        if (!isDnsDomain(name))
          throw invalid(`config: dns domain ${JSON.stringify(name)} is not a domain name`);
        dnsDomains.push(name);
        break;
      }
      case ConfigTag.OFFLOAD: {
        expectLength('offload', length, 1);
        const flag = payload[v]!;
        if (flag > 1) throw invalid(`config: offload value ${flag} (expected 0 or 1)`);
        offload = flag === 1;
        break;
      }
      default:
      // An unknown tag comes from a newer server: skipping it is what keeps CONFIG extensible.
    }
  }
  if (ipv4 === undefined) throw invalid('config without an ipv4 address (tag 0x01 is required)');

  const msg: ConfigMessage = { type: 'config', ipv4, mtu, routes, dns, keepaliveMs, offload };
  if (ipv6 !== undefined) msg.ipv6 = ipv6;
  if (serverIpv4 !== undefined) msg.serverIpv4 = serverIpv4;
  if (serverIpv6 !== undefined) msg.serverIpv6 = serverIpv6;
  if (dnsDomains.length > 0) msg.dnsDomains = dnsDomains;
  return msg;
}

function decodeRoute(payload: Buffer, v: number, length: number): Route {
  if (length < 2) throw invalid(`config: route of ${length} bytes (expected 6 or 18)`);
  const family = payload[v]!;
  if (family !== 4 && family !== 6) throw invalid(`config: route family ${family} (expected 4 or 6)`);
  const addressLength = family === 4 ? 4 : 16;
  if (length !== 2 + addressLength) {
    throw invalid(`config: IPv${family} route of ${length} bytes (expected ${2 + addressLength})`);
  }
  const prefix = prefixAt(payload, v + 1, family === 4 ? 32 : 128, `IPv${family} route`);
  const bytes = payload.subarray(v + 2, v + 2 + addressLength);
  const address = family === 4 ? formatIpv4(payload, v + 2) : formatIpv6(payload, v + 2);
  checkHostBitsZero(bytes, prefix, address);
  return { family, address, prefix };
}

// --- validation helpers ----------------------------------------------------------------------------------

/** LDH labels of 1..63 bytes joined by dots, 253 bytes at most (RFC 1035); a trailing dot is not taken. */
export function isDnsDomain(name: string): boolean {
  return (
    name.length >= 1 &&
    name.length <= 253 &&
    /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(name)
  );
}

function invalid(reason: string) {
  return facadeError('CONTROL_INVALID', [reason]);
}

function expectLength(what: string, length: number, expected: number): void {
  if (length !== expected) throw invalid(`config: ${what} of ${length} bytes (expected ${expected})`);
}

function prefixAt(payload: Buffer, at: number, max: number, what: string): number {
  const prefix = payload[at]!;
  if (prefix > max) throw invalid(`config: ${what} prefix /${prefix} (must be 0..${max})`);
  return prefix;
}

function checkPrefix(what: string, prefix: number, max: number): void {
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) {
    throw invalid(`${what} prefix /${prefix} (must be 0..${max})`);
  }
}

function checkMtu(mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < MIN_TUNNEL_MTU || mtu > 0xffff) {
    throw invalid(`mtu ${mtu} (must be ${MIN_TUNNEL_MTU}..65535; IPv6 needs at least ${MIN_TUNNEL_MTU})`);
  }
}

/** 0 turns keepalive and dead-peer detection off (`--keepalive 0`); anything else is an interval in ms. */
function checkKeepalive(ms: number): void {
  if (!Number.isInteger(ms) || ms < 0 || ms > 0xffffffff) {
    throw invalid(`keepalive interval ${ms} ms (must be 0 (off) or 1..4294967295)`);
  }
}

function checkUint(what: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw invalid(`${what} ${value} (must be an integer 0..${max})`);
  }
}

function checkTextLength(bytes: number): void {
  if (bytes > MAX_DISCONNECT_TEXT_BYTES) {
    throw invalid(`disconnect text of ${bytes} bytes (limit ${MAX_DISCONNECT_TEXT_BYTES} UTF-8 bytes)`);
  }
}

/** `ip route` refuses a route whose address has bits set past the prefix; so do we, at the source. */
function checkHostBitsZero(bytes: Buffer, prefix: number, text: string): void {
  if (!bytes.equals(clearHostBits(Buffer.from(bytes), prefix))) {
    throw invalid(`route ${text}/${prefix} has host bits set (use the network address)`);
  }
}

// --- address text <-> bytes (src/net/packet.ts converts; CONTROL keeps its own error code) -------------

function parseAddress(text: unknown, family: 4 | 6, what: string): Buffer {
  if (typeof text !== 'string') throw invalid(`${what} ${String(text)} is not an IPv${family} address`);
  try {
    if (family === 6) return Buffer.from(ipv6ToKey(text), 'latin1');
    const bytes = Buffer.allocUnsafe(4);
    bytes.writeUInt32BE(ipv4ToNumber(text));
    return bytes;
  } catch (err) {
    // A caller of the codec sees CONTROL_INVALID for any bad field; packet.ts's reason stays as the cause.
    if (!isFacadeError(err, 'ADDRESS_INVALID')) throw err;
    throw facadeError('CONTROL_INVALID', [`${what} "${text}" is not an IPv${family} address`], {
      cause: err,
    });
  }
}

function formatIpv4(source: Buffer, at: number): string {
  return numberToIpv4(source.readUInt32BE(at));
}

function formatIpv6(source: Buffer, at: number): string {
  return keyToIpv6(source.toString('latin1', at, at + 16));
}
