// Fuzz: the CONTROL codec (src/protocol/control.ts): decodeControl on arbitrary and TLV-shaped payloads,
// and the round trip of generated valid messages. See docs/FUZZING.md.
//
// Properties:
//  1. decodeControl on any payload returns a message or throws CONTROL_INVALID, never anything else; and
//     what it accepts means the same once re-encoded: encodeControlFrame() takes it (no throw) and decoding
//     that gives the same message back (for ECHO and DISCONNECT: the very same bytes).
//  2. For generated valid messages, decodeControl(encodeControlFrame(m)) equals m (addresses compared in
//     their RFC 5952 form, text after UTF-8's replacement of lone surrogates).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { FacadeError, isFacadeError } from '../../src/core/errors.js';
import { clearHostBits, ipv6ToKey, keyToIpv6, numberToIpv4 } from '../../src/net/packet.js';
import {
  type ConfigMessage,
  ConfigTag,
  type ControlMessage,
  ControlType,
  decodeControl,
  encodeControlFrame,
  MAX_DISCONNECT_TEXT_BYTES,
  type Route,
} from '../../src/protocol/control.js';
import { runProperty, targetRuns } from './harness.js';

/** Inputs for the whole target: property 1 gets 3/5, property 2 gets 2/5. */
const RUNS = targetRuns(8_000);

const payloadOf = (frame: Buffer): Buffer => frame.subarray(4);

// --- arbitrary and TLV-shaped payloads -----------------------------------------------------------------

const TAGS = Object.values(ConfigTag);

/** A value of the length a tag expects, or of any length; sometimes text (for DNS_DOMAIN). */
const tlvValue = fc.oneof(
  fc.constantFrom(1, 2, 4, 5, 6, 16, 17, 18).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
  fc.uint8Array({ maxLength: 40 }),
  fc.stringMatching(/^[A-Za-z0-9.-]{0,70}$/).map((text) => new Uint8Array(Buffer.from(text, 'latin1'))),
  // A route: family 4/6 (or not), a prefix, an address.
  fc
    .tuple(fc.constantFrom(4, 6, 0, 5), fc.integer({ min: 0, max: 255 }), fc.boolean())
    .chain(([family, prefix, short]) =>
      fc.uint8Array({ minLength: family === 6 ? 16 : 4, maxLength: family === 6 ? 16 : 4 }).map((address) => {
        const cleared = short ? address : clearHostBits(address, Math.min(prefix, address.length * 8));
        return new Uint8Array([family, prefix, ...cleared]);
      }),
    ),
);

const bytesOf = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const withTag = (tag: number, value: fc.Arbitrary<Uint8Array>) => value.map((v) => ({ tag, value: v }));

/** A well-formed TLV of a known tag (the decoder may still refuse its value), or an unknown tag. */
const plausibleTlv = fc.oneof(
  withTag(
    ConfigTag.IPV6_ADDRESS,
    fc.tuple(bytesOf(16), fc.integer({ min: 0, max: 130 })).map(([a, p]) => new Uint8Array([...a, p])),
  ),
  withTag(ConfigTag.SERVER_IPV4, bytesOf(4)),
  withTag(ConfigTag.SERVER_IPV6, bytesOf(16)),
  withTag(
    ConfigTag.MTU,
    fc.integer({ min: 1200, max: 0xffff }).map((m) => new Uint8Array([m >>> 8, m & 0xff])),
  ),
  withTag(ConfigTag.DNS, fc.oneof(bytesOf(4), bytesOf(16))),
  withTag(ConfigTag.KEEPALIVE_MS, bytesOf(4)),
  withTag(
    ConfigTag.OFFLOAD,
    fc.integer({ min: 0, max: 2 }).map((b) => new Uint8Array([b])),
  ),
  withTag(
    ConfigTag.DNS_DOMAIN,
    fc
      .stringMatching(/^[A-Za-z0-9]([A-Za-z0-9.-]{0,70}[A-Za-z0-9])?$/)
      .map((text) => new Uint8Array(Buffer.from(text, 'latin1'))),
  ),
  fc
    .tuple(fc.integer({ min: 0x0b, max: 255 }), fc.uint8Array({ maxLength: 8 }))
    .map(([tag, value]) => ({ tag, value })),
);

const tlv = fc
  .record({
    tagged: fc.oneof(
      { weight: 3, arbitrary: plausibleTlv },
      fc.record({
        tag: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...TAGS) }, fc.integer({ min: 0, max: 255 })),
        value: tlvValue,
      }),
    ),
    lengthDelta: fc.oneof({ weight: 20, arbitrary: fc.constant(0) }, fc.integer({ min: -3, max: 3 })),
  })
  .map(({ tagged: { tag, value }, lengthDelta }) => {
    const length = Math.max(0, Math.min(0xffff, value.length + lengthDelta));
    return Buffer.concat([Buffer.from([tag, length >>> 8, length & 0xff]), value]);
  });

const configIpv4 = fc
  .tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 40 }))
  .map(([address, prefix]) => Buffer.from([ConfigTag.IPV4_ADDRESS, 0, 5, ...address, prefix]));

const tlvPayload = fc
  .tuple(
    fc.oneof({ weight: 6, arbitrary: fc.constant(ControlType.CONFIG) }, fc.integer({ min: 0, max: 255 })),
    fc.option(configIpv4, { freq: 8 }),
    fc.array(tlv, { maxLength: 8 }),
    fc.uint8Array({ maxLength: 3 }),
  )
  .map(([type, ipv4, tlvs, trailer]) => {
    const body = [...tlvs];
    if (ipv4 !== null) body.splice(Math.min(1, body.length), 0, ipv4);
    return Buffer.concat([Buffer.from([type]), ...body, trailer]);
  });

const otherPayload = fc
  .tuple(
    fc.constantFrom(ControlType.ECHO_REQUEST, ControlType.ECHO_REPLY, ControlType.DISCONNECT),
    fc.oneof(
      fc.uint8Array({ maxLength: 12 }),
      fc.string({ unit: 'binary', maxLength: 20 }).map((s) => new Uint8Array(Buffer.from(`\0\x01${s}`))),
      fc.uint8Array({ minLength: 999, maxLength: 1003 }),
    ),
  )
  .map(([type, body]) => Buffer.concat([Buffer.from([type]), body]));

const anyPayload = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  { weight: 4, arbitrary: tlvPayload },
  otherPayload,
);

test('control fuzz: arbitrary payloads decode or throw CONTROL_INVALID, and mean what they re-encode to', async (t) => {
  const accepted = { config: 0, other: 0 };
  const property = fc.property(anyPayload, (payload) => {
    let msg: ControlMessage;
    try {
      msg = decodeControl(payload);
    } catch (err) {
      assert.ok(err instanceof FacadeError, `decodeControl threw a non-coded ${String(err)}`);
      assert.ok(isFacadeError(err, 'CONTROL_INVALID'), err.code);
      return;
    }
    accepted[msg.type === 'config' ? 'config' : 'other']++;
    const again = payloadOf(encodeControlFrame(msg));
    assert.deepEqual(decodeControl(again), msg);
    if (msg.type !== 'config') assert.deepEqual(again, payload, 'a fixed-layout message re-encodes as sent');
  });
  await runProperty(t, 'control/arbitrary-payloads', property, Math.ceil((RUNS * 3) / 5));
  t.diagnostic(`accepted: ${accepted.config} CONFIG, ${accepted.other} other messages (the rest refused)`);
});

// --- valid messages round trip ---------------------------------------------------------------------------

const ipv4Text = fc.integer({ min: 0, max: 0xffffffff }).map(numberToIpv4);
/** Canonical (from bytes) or any textual form fast-check writes (compressed, embedded IPv4, ...). */
const ipv6Text = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => keyToIpv6(Buffer.from(b).toString('latin1'))),
  fc.ipV6(),
);
const canonical6 = (text: string): string => keyToIpv6(ipv6ToKey(text));

const route: fc.Arbitrary<Route> = fc.oneof(
  fc
    .tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 32 }))
    .map(([b, prefix]) => ({
      family: 4 as const,
      address: numberToIpv4(Buffer.from(clearHostBits(b, prefix)).readUInt32BE(0)),
      prefix,
    })),
  fc
    .tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 128 }))
    .map(([b, prefix]) => ({
      family: 6 as const,
      address: keyToIpv6(Buffer.from(clearHostBits(b, prefix)).toString('latin1')),
      prefix,
    })),
);

const label = fc.stringMatching(/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/);
const domain = fc
  .array(label, { minLength: 1, maxLength: 4 })
  .map((labels) => labels.join('.'))
  .filter((name) => name.length <= 253);

const config: fc.Arbitrary<ConfigMessage> = fc
  .record({
    ipv4: fc.record({ address: ipv4Text, prefix: fc.integer({ min: 0, max: 32 }) }),
    ipv6: fc.option(fc.record({ address: ipv6Text, prefix: fc.integer({ min: 0, max: 128 }) })),
    serverIpv4: fc.option(ipv4Text),
    serverIpv6: fc.option(ipv6Text),
    mtu: fc.integer({ min: 1280, max: 0xffff }),
    routes: fc.array(route, { maxLength: 12 }),
    dns: fc.array(fc.oneof(ipv4Text, ipv6Text), { maxLength: 6 }),
    dnsDomains: fc.option(fc.array(domain, { minLength: 1, maxLength: 4 })),
    keepaliveMs: fc.integer({ min: 0, max: 0xffffffff }),
    offload: fc.boolean(),
  })
  .map((r) => {
    const msg: ConfigMessage = {
      type: 'config',
      ipv4: { ...r.ipv4 },
      mtu: r.mtu,
      routes: r.routes.map((x) => ({ ...x })),
      dns: r.dns,
      keepaliveMs: r.keepaliveMs,
      offload: r.offload,
    };
    if (r.ipv6 !== null) msg.ipv6 = { ...r.ipv6 };
    if (r.serverIpv4 !== null) msg.serverIpv4 = r.serverIpv4;
    if (r.serverIpv6 !== null) msg.serverIpv6 = r.serverIpv6;
    if (r.dnsDomains !== null) msg.dnsDomains = r.dnsDomains;
    return msg;
  });

/** What a message is once it has crossed the wire: IPv6 in RFC 5952 form, text as UTF-8 carries it. */
function normalized(msg: ControlMessage): ControlMessage {
  if (msg.type === 'disconnect')
    return { ...msg, message: Buffer.from(msg.message, 'utf8').toString('utf8') };
  if (msg.type !== 'config') return msg;
  const out: ConfigMessage = {
    ...msg,
    routes: msg.routes.map((r) => ({ ...r })),
    dns: msg.dns.map((d) => (d.includes(':') ? canonical6(d) : d)),
  };
  if (msg.ipv6 !== undefined) out.ipv6 = { ...msg.ipv6, address: canonical6(msg.ipv6.address) };
  if (msg.serverIpv6 !== undefined) out.serverIpv6 = canonical6(msg.serverIpv6);
  return out;
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const message: fc.Arbitrary<ControlMessage> = fc.oneof(
  { weight: 4, arbitrary: config },
  fc.record({ type: fc.constant('echo-request' as const), seq: u32, timestamp: u32 }),
  fc.record({ type: fc.constant('echo-reply' as const), seq: u32, timestamp: u32 }),
  fc.record({
    type: fc.constant('disconnect' as const),
    reason: fc.integer({ min: 0, max: 0xffff }),
    message: fc
      .string({
        unit: fc.oneof(fc.constant('\uFEFF'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })),
        maxLength: 120,
      })
      .filter((s) => Buffer.byteLength(s, 'utf8') <= MAX_DISCONNECT_TEXT_BYTES),
  }),
);

test('control fuzz: valid messages round-trip through encodeControlFrame and decodeControl', async (t) => {
  const property = fc.property(message, (msg) => {
    const decoded = decodeControl(payloadOf(encodeControlFrame(msg)));
    assert.deepEqual(decoded, { ...normalized(msg) });
  });
  await runProperty(t, 'control/round-trip', property, Math.ceil((RUNS * 2) / 5));
});
