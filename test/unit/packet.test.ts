import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import {
  addressBytes,
  checkPacket,
  clearHostBits,
  internetChecksum,
  ipVersion,
  ipv4Destination,
  ipv4Source,
  ipv4ToNumber,
  ipv6DestinationKey,
  ipv6SourceKey,
  ipv6ToKey,
  keyToIpv6,
  numberToIpv4,
  parseCidr,
  setIpv4HeaderChecksum,
} from '../../src/net/packet.js';
import { echoReply, icmpv6Checksum } from '../helpers/icmp.js';

// The IPv4 header of Wikipedia's checksum example: 192.168.0.1 -> 192.168.0.199, UDP, checksum 0xb861.
const KNOWN_HEADER = Buffer.from('45000073000040004011b861c0a80001c0a800c7', 'hex');

function ipv4Packet(src: string, dst: string, payload: number, pad = 0): Buffer {
  const buf = Buffer.alloc(pad + 20 + payload);
  buf[pad] = 0x45;
  buf.writeUInt16BE(20 + payload, pad + 2);
  buf[pad + 8] = 64;
  buf[pad + 9] = 17;
  buf.writeUInt32BE(ipv4ToNumber(src), pad + 12);
  buf.writeUInt32BE(ipv4ToNumber(dst), pad + 16);
  setIpv4HeaderChecksum(buf, pad);
  return buf;
}

function ipv6Packet(src: string, dst: string, payload: number, pad = 0): Buffer {
  const buf = Buffer.alloc(pad + 40 + payload);
  buf[pad] = 0x60;
  buf.writeUInt16BE(payload, pad + 4);
  buf[pad + 6] = 17;
  buf[pad + 7] = 64;
  Buffer.from(ipv6ToKey(src), 'latin1').copy(buf, pad + 8);
  Buffer.from(ipv6ToKey(dst), 'latin1').copy(buf, pad + 24);
  return buf;
}

test('IPv4 header fields are read at an offset inside a larger buffer', () => {
  const buf = ipv4Packet('198.18.0.1', '198.18.200.7', 12, 4);
  assert.equal(ipVersion(buf, 4), 4);
  assert.equal(checkPacket(buf, 4, 32), null);
  assert.equal(numberToIpv4(ipv4Source(buf, 4)), '198.18.0.1');
  assert.equal(numberToIpv4(ipv4Destination(buf, 4)), '198.18.200.7');
  assert.equal(ipv4Source(buf, 4), 0xc6120001);
  // A correct header sums to zero.
  assert.equal(internetChecksum(buf, 4, 20), 0);
});

test('IPv6 header fields are read as 16-byte keys', () => {
  const buf = ipv6Packet('fd00:1::5', 'fd00:2::abcd', 8, 4);
  assert.equal(ipVersion(buf, 4), 6);
  assert.equal(checkPacket(buf, 4, 48), null);
  assert.equal(ipv6SourceKey(buf, 4).length, 16);
  assert.equal(keyToIpv6(ipv6SourceKey(buf, 4)), 'fd00:1::5');
  assert.equal(keyToIpv6(ipv6DestinationKey(buf, 4)), 'fd00:2::abcd');
  assert.equal(ipv6DestinationKey(buf, 4), ipv6ToKey('fd00:2:0:0::abcd'));
});

test('truncated, inconsistent and wrong-version packets are rejected with a reason', () => {
  const v4 = ipv4Packet('198.18.0.1', '198.18.0.2', 20);
  assert.match(checkPacket(v4, 0, 19) ?? '', /shorter than the 20-byte header/);
  assert.match(checkPacket(v4, 0, 39) ?? '', /total length 40 does not match the 39 bytes/);
  assert.match(checkPacket(v4, 0, 41) ?? '', /extends past the buffer/);
  assert.match(checkPacket(v4, 0, 0) ?? '', /empty/);
  const badIhl = Buffer.from(v4);
  badIhl[0] = 0x44;
  assert.match(checkPacket(badIhl, 0, 40) ?? '', /header length 16 is below 20/);
  badIhl[0] = 0x4f;
  assert.match(checkPacket(badIhl, 0, 40) ?? '', /header length 60 exceeds the 40-byte packet/);

  const v6 = ipv6Packet('fd00::1', 'fd00::2', 10);
  assert.match(checkPacket(v6, 0, 39) ?? '', /shorter than the 40-byte header/);
  assert.match(checkPacket(v6, 0, 49) ?? '', /payload length 10 \+ 40 does not match the 49/);

  const v5 = Buffer.from(v4);
  v5[0] = 0x55;
  assert.equal(ipVersion(v5, 0), 0);
  assert.match(checkPacket(v5, 0, 40) ?? '', /version 5 is neither 4 nor 6/);
});

test('the checksum of a known IPv4 header matches, and setIpv4HeaderChecksum reproduces it', () => {
  assert.equal(internetChecksum(KNOWN_HEADER, 0, 20), 0);
  const copy = Buffer.from(KNOWN_HEADER);
  copy.writeUInt16BE(0, 10);
  assert.equal(internetChecksum(copy, 0, 20), 0xb861);
  assert.equal(setIpv4HeaderChecksum(copy, 0), 0xb861);
  assert.deepEqual(copy, KNOWN_HEADER);
  // Odd length: the last byte is padded with a zero byte.
  assert.equal(internetChecksum(Buffer.from([0x01, 0x02, 0x03]), 0, 3), ~(0x0102 + 0x0300) & 0xffff);
});

test('address conversions round-trip', () => {
  for (const text of ['0.0.0.0', '198.18.0.1', '255.255.255.255', '10.1.2.3']) {
    assert.equal(numberToIpv4(ipv4ToNumber(text)), text);
  }
  assert.equal(ipv4ToNumber('255.255.255.255'), 0xffffffff);
  const v6 = [
    'fd00::1',
    '::',
    '::1',
    'fd00:0:0:1::',
    '2001:db8::1:0:0:1',
    'fd00:1:2:3:4:5:6:7',
    '::ffff:c612:1',
  ];
  for (const text of v6) assert.equal(keyToIpv6(ipv6ToKey(text)), text);
  // RFC 5952 form: lower case, longest zero run compressed, a single zero group not compressed.
  assert.equal(keyToIpv6(ipv6ToKey('FD00:0000:0000:0000:0000:0000:0000:0001')), 'fd00::1');
  assert.equal(keyToIpv6(ipv6ToKey('fd00:0:1:0:0:0:1:1')), 'fd00:0:1::1:1');
  assert.equal(keyToIpv6(ipv6ToKey('::ffff:198.18.0.1')), '::ffff:c612:1');
});

test('invalid addresses and prefixes raise FACADE_ERR_ADDRESS_INVALID naming the value', () => {
  for (const bad of ['198.18.0', '198.18.0.256', '01.2.3.4', 'x', '']) {
    assert.throws(
      () => ipv4ToNumber(bad),
      (err) => isFacadeError(err, 'ADDRESS_INVALID') && err.message.includes(`"${bad}"`),
    );
  }
  assert.throws(
    () => ipv6ToKey('fd00:::1'),
    (err) => isFacadeError(err, 'ADDRESS_INVALID'),
  );
  assert.throws(
    () => numberToIpv4(-1),
    (err) => isFacadeError(err, 'ADDRESS_INVALID'),
  );
  assert.throws(
    () => keyToIpv6('short'),
    (err) => isFacadeError(err, 'ADDRESS_INVALID'),
  );
  for (const bad of ['198.18.0.0', '198.18.0.0/33', 'fd00::/129', 'fd00::/x', '198.18.0.0/-1', 'host/24']) {
    assert.throws(
      () => parseCidr(bad),
      (err) => isFacadeError(err, 'ADDRESS_INVALID') && err.message.includes(bad),
    );
  }
});

test('parseCidr returns family, canonical address and prefix', () => {
  assert.deepEqual(parseCidr('198.18.0.0/15'), { family: 4, address: '198.18.0.0', prefix: 15 });
  assert.deepEqual(parseCidr('fd00:0::1/64'), { family: 6, address: 'fd00::1', prefix: 64 });
  assert.deepEqual(parseCidr('::/0'), { family: 6, address: '::', prefix: 0 });
});

test('the test ICMP responder builds valid echo replies', () => {
  // IPv4 echo request 198.18.0.2 -> 198.18.0.1 with 4 bytes of data.
  const req = Buffer.alloc(32);
  req[0] = 0x45;
  req.writeUInt16BE(32, 2);
  req[8] = 64;
  req[9] = 1;
  req.writeUInt32BE(ipv4ToNumber('198.18.0.2'), 12);
  req.writeUInt32BE(ipv4ToNumber('198.18.0.1'), 16);
  setIpv4HeaderChecksum(req, 0);
  req[20] = 8;
  req.writeUInt32BE(0x12345678, 24);
  req.writeUInt16BE(internetChecksum(req, 20, 12), 22);
  const reply = echoReply(req, 0, 32);
  assert.ok(reply);
  assert.equal(numberToIpv4(ipv4Source(reply, 0)), '198.18.0.1');
  assert.equal(numberToIpv4(ipv4Destination(reply, 0)), '198.18.0.2');
  assert.equal(reply[20], 0);
  assert.equal(internetChecksum(reply, 0, 20), 0);
  assert.equal(internetChecksum(reply, 20, 12), 0);
  assert.equal(reply.readUInt32BE(24), 0x12345678);

  const req6 = ipv6Packet('fd00::2', 'fd00::1', 8);
  req6[6] = 58;
  req6[40] = 128;
  req6.writeUInt16BE(icmpv6Checksum(req6, 0, 48), 42);
  const reply6 = echoReply(req6, 0, 48);
  assert.ok(reply6);
  assert.equal(reply6[40], 129);
  assert.equal(keyToIpv6(ipv6SourceKey(reply6, 0)), 'fd00::1');
  // Verifying: the checksum over data that includes a correct checksum field is 0.
  assert.equal(icmpv6Checksum(reply6, 0, 48), 0);

  // Not an echo request: no reply.
  assert.equal(echoReply(ipv4Packet('198.18.0.1', '198.18.0.2', 8), 0, 28), null);
});

test('addressBytes and clearHostBits give the network address of a prefix', () => {
  assert.deepEqual([...addressBytes('198.18.7.200')], [198, 18, 7, 200]);
  assert.equal(addressBytes('fd00::1').length, 16);
  assert.deepEqual([...clearHostBits(addressBytes('198.18.7.200'), 24)], [198, 18, 7, 0]);
  assert.deepEqual([...clearHostBits(addressBytes('198.19.255.255'), 15)], [198, 18, 0, 0]);
  assert.deepEqual([...clearHostBits(addressBytes('198.18.7.200'), 32)], [198, 18, 7, 200]);
  assert.equal(
    keyToIpv6(Buffer.from(clearHostBits(addressBytes('fd00:8::1:2'), 64)).toString('latin1')),
    'fd00:8::',
  );
  assert.throws(() => addressBytes('not-an-address'), { code: 'FACADE_ERR_ADDRESS_INVALID' });
});
