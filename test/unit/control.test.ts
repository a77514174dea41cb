import assert from 'node:assert/strict';
import { test } from 'node:test';
import { facadeError, isFacadeError } from '../../src/core/errors.js';
import { DEFAULT_KEEPALIVE_MS, DEFAULT_TUNNEL_MTU } from '../../src/core/limits.js';
import {
  type ConfigMessage,
  ConfigTag,
  type ControlMessage,
  ControlType,
  clampDisconnectText,
  DisconnectReason,
  decodeControl,
  describeReason,
  echoRoundTripMs,
  encodeControlFrame,
  MAX_DISCONNECT_TEXT_BYTES,
  reasonForError,
} from '../../src/protocol/control.js';
import { FrameDecoder } from '../../src/protocol/decoder.js';
import { FrameType } from '../../src/protocol/frame.js';

const fullConfig: ConfigMessage = {
  type: 'config',
  ipv4: { address: '198.18.0.2', prefix: 24 },
  ipv6: { address: 'fd00:fa:ca:de::2', prefix: 64 },
  serverIpv4: '198.18.0.1',
  serverIpv6: 'fd00:fa:ca:de::1',
  mtu: 1400,
  routes: [
    { family: 4, address: '198.18.0.0', prefix: 24 },
    { family: 4, address: '0.0.0.0', prefix: 0 },
    { family: 6, address: 'fd00::', prefix: 8 },
  ],
  dns: ['198.18.0.1', 'fd00:fa:ca:de::1'],
  keepaliveMs: 10_000,
  offload: true,
};

/** The CONTROL payload of an encoded frame (checking the frame header on the way). */
function payloadOf(frame: Buffer): Buffer {
  assert.equal(frame[0], 1);
  assert.equal(frame[1], FrameType.CONTROL);
  assert.equal(frame.readUInt16BE(2), frame.length - 4);
  return frame.subarray(4);
}

function roundTrip(msg: ControlMessage): ControlMessage {
  return decodeControl(payloadOf(encodeControlFrame(msg)));
}

function tlv(tag: number, value: number[] | Buffer): Buffer {
  const v = Buffer.from(value);
  const head = Buffer.alloc(3);
  head[0] = tag;
  head.writeUInt16BE(v.length, 1);
  return Buffer.concat([head, v]);
}

const ipv4Tlv = tlv(ConfigTag.IPV4_ADDRESS, [198, 18, 0, 2, 24]);

function configPayload(...tlvs: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from([ControlType.CONFIG]), ...tlvs]);
}

function rejects(payload: Buffer, pattern: RegExp): void {
  assert.throws(
    () => decodeControl(payload),
    (err) => isFacadeError(err, 'CONTROL_INVALID') && pattern.test(err.message),
    `expected CONTROL_INVALID matching ${pattern}`,
  );
}

function encodeRejects(msg: ControlMessage, pattern: RegExp): void {
  assert.throws(
    () => encodeControlFrame(msg),
    (err) => isFacadeError(err, 'CONTROL_INVALID') && pattern.test(err.message),
    `expected CONTROL_INVALID matching ${pattern}`,
  );
}

test('CONFIG with every field round-trips', () => {
  assert.deepEqual(roundTrip(fullConfig), fullConfig);
});

test('CONFIG keepalive 0 (off) round-trips', () => {
  assert.deepEqual(roundTrip({ ...fullConfig, keepaliveMs: 0 }), { ...fullConfig, keepaliveMs: 0 });
});

test('CONFIG minimal: absent optional fields stay absent, defaults fill the rest', () => {
  const decoded = decodeControl(configPayload(ipv4Tlv));
  assert.deepEqual(decoded, {
    type: 'config',
    ipv4: { address: '198.18.0.2', prefix: 24 },
    mtu: DEFAULT_TUNNEL_MTU,
    routes: [],
    dns: [],
    keepaliveMs: DEFAULT_KEEPALIVE_MS,
    offload: false,
  });
});

test('CONFIG addresses come back in canonical text', () => {
  const msg: ConfigMessage = {
    ...fullConfig,
    ipv6: { address: 'FD00:0:0:0:0:0:0:2', prefix: 128 },
    serverIpv6: 'fd00:0000:0000:0001:0000:0000:0000:0001',
    dns: ['::ffff:198.18.0.1', 'fd00::1:0:0:0:1'],
    routes: [],
  };
  const decoded = roundTrip(msg) as ConfigMessage;
  assert.equal(decoded.ipv6?.address, 'fd00::2');
  assert.equal(decoded.serverIpv6, 'fd00:0:0:1::1');
  assert.deepEqual(decoded.dns, ['::ffff:c612:1', 'fd00:0:0:1::1']);
  assert.deepEqual(
    (roundTrip({ ...msg, dns: ['::', 'fd00:1:2:3:4:5:6:7', 'fd00::'] }) as ConfigMessage).dns,
    ['::', 'fd00:1:2:3:4:5:6:7', 'fd00::'],
  );
});

test('CONFIG: unknown tags are skipped (forward compatibility)', () => {
  const decoded = decodeControl(
    configPayload(tlv(0xee, [1, 2, 3]), ipv4Tlv, tlv(0x7f, []), tlv(ConfigTag.MTU, [0x05, 0x00])),
  ) as ConfigMessage;
  assert.equal(decoded.ipv4.address, '198.18.0.2');
  assert.equal(decoded.mtu, 1280);
});

test('CONFIG: malformed bodies are refused with CONTROL_INVALID', () => {
  rejects(configPayload(), /without an ipv4 address/);
  rejects(configPayload(tlv(ConfigTag.MTU, [0x05, 0x78])), /without an ipv4 address/);
  rejects(configPayload(ipv4Tlv, ipv4Tlv), /tag 0x1 appears twice/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.MTU, [5, 0]), tlv(ConfigTag.MTU, [5, 0])), /appears twice/);
  rejects(configPayload(ipv4Tlv, Buffer.from([ConfigTag.MTU, 0])), /truncated TLV header/);
  rejects(configPayload(ipv4Tlv, Buffer.from([ConfigTag.MTU, 0, 2, 5])), /claims 2 bytes, only 1 left/);
  rejects(configPayload(tlv(ConfigTag.IPV4_ADDRESS, [198, 18, 0, 2, 33])), /prefix \/33/);
  rejects(configPayload(tlv(ConfigTag.IPV4_ADDRESS, [198, 18, 0, 2])), /ipv4 address of 4 bytes/);
  rejects(
    configPayload(ipv4Tlv, tlv(ConfigTag.IPV6_ADDRESS, [...Buffer.alloc(16), 129])),
    /ipv6 prefix \/129/,
  );
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.SERVER_IPV6, [0xfd, 0])), /server ipv6 of 2 bytes/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.MTU, [0x04, 0xff])), /mtu 1279/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.MTU, [0x05])), /mtu of 1 bytes/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.OFFLOAD, [2])), /offload value 2/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.DNS, [198, 18, 0])), /dns server of 3 bytes/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.ROUTE, [5, 8, 10, 0, 0, 0])), /route family 5/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.ROUTE, [4, 33, 10, 0, 0, 0])), /prefix \/33/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.ROUTE, [4, 24, 198, 18, 0])), /IPv4 route of 5 bytes/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.ROUTE, [6, 64, 198, 18, 0, 0])), /IPv6 route of 6 bytes/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.ROUTE, [4])), /route of 1 bytes/);
  rejects(configPayload(ipv4Tlv, tlv(ConfigTag.ROUTE, [4, 15, 198, 19, 0, 0])), /host bits set/);
});

test('CONFIG encoder refuses bad input before writing anything', () => {
  encodeRejects({ ...fullConfig, ipv4: { address: '198.18.0.300', prefix: 24 } }, /not an IPv4 address/);
  encodeRejects({ ...fullConfig, ipv4: { address: '198.18.0.2', prefix: 33 } }, /prefix \/33/);
  encodeRejects({ ...fullConfig, ipv6: { address: 'fd00::1%eth0', prefix: 64 } }, /not an IPv6 address/);
  encodeRejects({ ...fullConfig, serverIpv4: 'fd00::1' }, /not an IPv4 address/);
  encodeRejects({ ...fullConfig, mtu: 1279 }, /mtu 1279/);
  encodeRejects({ ...fullConfig, mtu: 65536 }, /mtu 65536/);
  encodeRejects({ ...fullConfig, keepaliveMs: -1 }, /keepalive/);
  encodeRejects({ ...fullConfig, dns: ['example.org'] }, /not an IPv4 address/);
  encodeRejects(
    { ...fullConfig, routes: [{ family: 4, address: 'fd00::', prefix: 8 }] },
    /route address "fd00::" is not an IPv4 address/,
  );
  encodeRejects({ ...fullConfig, routes: [{ family: 4, address: '198.18.0.1', prefix: 15 }] }, /host bits/);
  encodeRejects({ ...fullConfig, routes: [{ family: 6, address: 'fd00::1', prefix: 64 }] }, /host bits/);
  const many = Array.from({ length: 8000 }, (_, i) => ({
    family: 4 as const,
    address: `198.18.${i >> 8}.${i & 0xff}`,
    prefix: 32,
  }));
  encodeRejects({ ...fullConfig, routes: many }, /exceeds the frame limit of 65535/);
});

test('ECHO_REQUEST and ECHO_REPLY round-trip and have a fixed 8-byte body', () => {
  const request: ControlMessage = { type: 'echo-request', seq: 0xffffffff, timestamp: 123456 };
  const frame = encodeControlFrame(request);
  assert.equal(frame.toString('hex'), '0110000902ffffffff0001e240');
  assert.deepEqual(roundTrip(request), request);
  const reply: ControlMessage = { type: 'echo-reply', seq: 7, timestamp: 0 };
  assert.deepEqual(roundTrip(reply), reply);
  rejects(Buffer.from([ControlType.ECHO_REQUEST, 0, 0, 0, 1]), /echo-request body of 4 bytes/);
  rejects(Buffer.from([ControlType.ECHO_REPLY, ...Buffer.alloc(9)]), /echo-reply body of 9 bytes/);
  encodeRejects({ type: 'echo-request', seq: -1, timestamp: 0 }, /echo seq -1/);
  encodeRejects({ type: 'echo-request', seq: 0, timestamp: 2 ** 32 }, /echo timestamp/);
});

test('echoRoundTripMs is right across the 2^32 wrap', () => {
  assert.equal(echoRoundTripMs(100, 150), 50);
  assert.equal(echoRoundTripMs(0xfffffff0, 0x10), 0x20);
});

test('DISCONNECT round-trips with UTF-8 text and refuses long or invalid text', () => {
  const msg: ControlMessage = {
    type: 'disconnect',
    reason: DisconnectReason.POOL_EXHAUSTED,
    message: 'pool 198.18.0.0/24 — plein ✓',
  };
  assert.deepEqual(roundTrip(msg), msg);
  const empty: ControlMessage = { type: 'disconnect', reason: 0xffff, message: '' };
  assert.deepEqual(roundTrip(empty), empty);
  const longest: ControlMessage = { type: 'disconnect', reason: 6, message: 'é'.repeat(500) };
  assert.deepEqual(roundTrip(longest), longest);
  encodeRejects({ ...longest, message: `${longest.message}x` }, /1001 bytes \(limit 1000/);
  rejects(
    Buffer.concat([
      Buffer.from([ControlType.DISCONNECT, 0, 1]),
      Buffer.alloc(MAX_DISCONNECT_TEXT_BYTES + 1, 0x41),
    ]),
    /1001 bytes/,
  );
  rejects(Buffer.from([ControlType.DISCONNECT, 0, 1, 0xc3, 0x28]), /not valid UTF-8/);
  rejects(Buffer.from([ControlType.DISCONNECT, 0, 1, 0xed, 0xa0, 0x80]), /not valid UTF-8/);
  rejects(Buffer.from([ControlType.DISCONNECT, 0]), /body of 1 bytes/);
  encodeRejects({ type: 'disconnect', reason: 65536, message: '' }, /reason 65536/);
});

test('clampDisconnectText cuts long texts on a character boundary', () => {
  assert.equal(clampDisconnectText('short'), 'short');
  const clamped = clampDisconnectText(`x${'€'.repeat(400)}`); // 1 + 1200 bytes
  assert.equal(Buffer.byteLength(clamped), 1 + 333 * 3);
  assert.equal(clamped, `x${'€'.repeat(333)}`);
  const msg: ControlMessage = { type: 'disconnect', reason: 1, message: clamped };
  assert.deepEqual(roundTrip(msg), msg);
});

test('unknown or empty control payloads are refused', () => {
  rejects(Buffer.from([0x05, 0]), /unknown message type 0x05/);
  rejects(Buffer.alloc(0), /empty payload/);
});

test('reason codes are the documented ones and each has a description', () => {
  assert.deepEqual(DisconnectReason, {
    NORMAL: 0,
    PROTOCOL_ERROR: 1,
    POOL_EXHAUSTED: 2,
    DEAD_PEER: 3,
    SERVER_SHUTDOWN: 4,
    REPLACED: 5,
    ADMIN: 6,
    INTERNAL: 7,
  });
  const texts = Object.values(DisconnectReason).map(describeReason);
  assert.equal(new Set(texts).size, texts.length);
  for (const text of texts) assert.doesNotMatch(text, /unknown/);
  assert.equal(describeReason(42), 'unknown reason 42');
});

test('encoded control frames pass through the frame decoder unchanged', () => {
  const messages: ControlMessage[] = [
    fullConfig,
    { type: 'echo-request', seq: 1, timestamp: 2 },
    { type: 'disconnect', reason: DisconnectReason.SERVER_SHUTDOWN, message: 'bye' },
  ];
  const decoded: ControlMessage[] = [];
  const decoder = new FrameDecoder({
    onPacket: () => assert.fail('no packets expected'),
    onControl: (payload) => decoded.push(decodeControl(payload)),
  });
  const stream = Buffer.concat(messages.map(encodeControlFrame));
  for (let i = 0; i < stream.length; i += 7) decoder.push(stream.subarray(i, i + 7));
  assert.deepEqual(decoded, messages);
});

test('the CONFIG example of docs/PROTOCOL.md section 6.2 is what the encoder produces', () => {
  const example: ConfigMessage = {
    type: 'config',
    ipv4: { address: '198.18.0.2', prefix: 24 },
    ipv6: { address: 'fd00:fa::2', prefix: 64 },
    serverIpv4: '198.18.0.1',
    mtu: 1400,
    routes: [{ family: 4, address: '198.19.0.0', prefix: 16 }],
    dns: ['198.18.0.1'],
    keepaliveMs: 10_000,
    offload: false,
  };
  const golden =
    '01100044' +
    '01' +
    '010005c612000218' +
    '020011fd0000fa00000000000000000000000240' +
    '030004c6120001' +
    '0500020578' +
    '0600060410c6130000' +
    '070004c6120001' +
    '08000400002710' +
    '09000100';
  assert.equal(encodeControlFrame(example).toString('hex'), golden);
  assert.deepEqual(decodeControl(Buffer.from(golden, 'hex').subarray(4)), example);
});

test('reasonForError: the peer’s violations are PROTOCOL_ERROR, anything else INTERNAL', () => {
  const decoder = new FrameDecoder({ onPacket: () => {}, onControl: () => {} });
  let frameError: unknown;
  try {
    decoder.push(Buffer.from([1, 0x7f, 0, 1]));
  } catch (err) {
    frameError = err;
  }
  assert.ok(isFacadeError(frameError, 'FRAME_TYPE'));
  assert.equal(reasonForError(frameError), DisconnectReason.PROTOCOL_ERROR);
  assert.equal(reasonForError(facadeError('CONTROL_INVALID', ['x'])), DisconnectReason.PROTOCOL_ERROR);
  assert.equal(reasonForError(facadeError('TUN_IO', ['tun0', 'write', 'EIO'])), DisconnectReason.INTERNAL);
  assert.equal(reasonForError(new Error('plain')), DisconnectReason.INTERNAL);
});

test('DNS_DOMAIN: repeatable domains round-trip; a malformed one ends the session like any bad field', () => {
  const withDomains: ConfigMessage = { ...fullConfig, dnsDomains: ['corp.example', 'lab.corp.example'] };
  assert.deepEqual(roundTrip(withDomains), withDomains);
  assert.equal((roundTrip(fullConfig) as ConfigMessage).dnsDomains, undefined, 'absent when none pushed');
  for (const bad of ['', 'a..b', '-x.example', 'x'.repeat(64), 'bad domain', 'ünï.example', '~.']) {
    const payload = Buffer.concat([
      Buffer.from([ControlType.CONFIG]),
      ipv4Tlv,
      tlv(ConfigTag.DNS_DOMAIN, Buffer.from(bad, 'utf8')),
    ]);
    assert.throws(
      () => decodeControl(payload),
      (err) => isFacadeError(err, 'CONTROL_INVALID'),
      bad,
    );
    assert.throws(
      () => encodeControlFrame({ ...fullConfig, dnsDomains: [bad] }),
      (err) => isFacadeError(err, 'CONTROL_INVALID'),
    );
  }
});
