import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import { MAX_PACKET_SIZE } from '../../src/core/limits.js';
import {
  createOffloadHeader,
  encodeFrame,
  encodeOffloadFrame,
  FRAME_HEADER_SIZE,
  FrameType,
  frameTypeName,
  GsoType,
  MAX_FRAME_LENGTH,
  OFFLOAD_HEADER_SIZE,
  OffloadFlag,
  type OffloadHeader,
  PROTOCOL_VERSION,
  readOffloadHeader,
  writeFrameHeader,
  writeOffloadHeader,
} from '../../src/protocol/frame.js';

test('constants match the specification', () => {
  assert.equal(FRAME_HEADER_SIZE, 4);
  assert.equal(OFFLOAD_HEADER_SIZE, 10);
  assert.equal(PROTOCOL_VERSION, 1);
  assert.equal(MAX_FRAME_LENGTH, MAX_PACKET_SIZE);
  assert.deepEqual(FrameType, { DATA: 0x01, DATA_OFFLOAD: 0x02, CONTROL: 0x10 });
  assert.equal(frameTypeName(FrameType.DATA_OFFLOAD), 'DATA_OFFLOAD');
  assert.equal(frameTypeName(0x7f), '0x7f');
});

test('writeFrameHeader writes version, type and a big-endian length in place', () => {
  const target = Buffer.alloc(10, 0xee);
  writeFrameHeader(target, 3, FrameType.DATA, 0x0578);
  assert.deepEqual([...target], [0xee, 0xee, 0xee, 0x01, 0x01, 0x05, 0x78, 0xee, 0xee, 0xee]);
  writeFrameHeader(target, 0, FrameType.CONTROL, MAX_FRAME_LENGTH);
  assert.deepEqual([...target.subarray(0, 4)], [0x01, 0x10, 0xff, 0xff]);
  writeFrameHeader(target, 0, FrameType.DATA_OFFLOAD, 1);
  assert.deepEqual([...target.subarray(0, 4)], [0x01, 0x02, 0x00, 0x01]);
});

test('writeFrameHeader refuses what the peer would reject, with coded errors', () => {
  const target = Buffer.alloc(8);
  const code = (fn: () => void, name: Parameters<typeof isFacadeError>[1]) =>
    assert.throws(fn, (err) => isFacadeError(err, name));
  code(() => writeFrameHeader(target, 0, FrameType.DATA, 0), 'FRAME_INVALID');
  code(() => writeFrameHeader(target, 0, FrameType.DATA, 1.5), 'FRAME_INVALID');
  code(() => writeFrameHeader(target, 0, FrameType.DATA, MAX_FRAME_LENGTH + 1), 'FRAME_TOO_LARGE');
  code(() => writeFrameHeader(target, 0, 0x03, 10), 'FRAME_TYPE');
  code(() => writeFrameHeader(target, 5, FrameType.DATA, 10), 'FRAME_INVALID');
  code(() => writeFrameHeader(target, -1, FrameType.DATA, 10), 'FRAME_INVALID');
  // Nothing was written by the failed calls.
  assert.deepEqual([...target], [0, 0, 0, 0, 0, 0, 0, 0]);
});

test('encodeFrame copies the payload after the header', () => {
  const payload = Buffer.from('hello');
  const frame = encodeFrame(FrameType.CONTROL, payload);
  assert.equal(frame.toString('hex'), `01100005${payload.toString('hex')}`);
  payload[0] = 0;
  assert.equal(frame[4], 'h'.charCodeAt(0), 'the frame owns a copy');
  assert.throws(
    () => encodeFrame(FrameType.DATA, Buffer.alloc(MAX_FRAME_LENGTH + 1)),
    (err) => isFacadeError(err, 'FRAME_TOO_LARGE'),
  );
});

test('the offload header is little-endian, laid out like struct virtio_net_hdr', () => {
  const header: OffloadHeader = {
    flags: OffloadFlag.NEEDS_CSUM,
    gsoType: GsoType.TCPV4,
    hdrLen: 0x0036,
    gsoSize: 0x0584,
    csumStart: 0x0022,
    csumOffset: 0x0010,
  };
  const target = Buffer.alloc(12);
  writeOffloadHeader(target, 1, header);
  assert.equal(target.toString('hex'), '000101360084052200100000');
  const back = readOffloadHeader(target, 1, createOffloadHeader());
  assert.deepEqual(back, header);
  // Same reading as the kernel's struct on a little-endian host.
  assert.equal(target.readUInt16LE(1 + 4), 0x0584);
});

test('readOffloadHeader fills the object it is given (no allocation per packet)', () => {
  const into = createOffloadHeader();
  const source = Buffer.from('ff05ffffffffffffffff', 'hex');
  assert.equal(readOffloadHeader(source, 0, into), into);
  assert.deepEqual(into, {
    flags: 0xff,
    gsoType: 5,
    hdrLen: 0xffff,
    gsoSize: 0xffff,
    csumStart: 0xffff,
    csumOffset: 0xffff,
  });
});

test('writeOffloadHeader refuses fields that do not fit their width', () => {
  const target = Buffer.alloc(10);
  const bad: [keyof OffloadHeader, number][] = [
    ['flags', 256],
    ['gsoType', -1],
    ['hdrLen', 65536],
    ['gsoSize', 1.5],
    ['csumStart', Number.NaN],
    ['csumOffset', 70000],
  ];
  for (const [field, value] of bad) {
    const header = { ...createOffloadHeader(), [field]: value };
    assert.throws(
      () => writeOffloadHeader(target, 0, header),
      (err) => isFacadeError(err, 'FRAME_INVALID') && err.message.includes(field),
      `${field}=${value}`,
    );
  }
  assert.throws(
    () => writeOffloadHeader(target, 1, createOffloadHeader()),
    (err) => isFacadeError(err, 'FRAME_INVALID'),
  );
});

test('encodeOffloadFrame: length counts the packet only, the offload header is implied', () => {
  const packet = Buffer.from('4500001c', 'hex');
  const header = { ...createOffloadHeader(), gsoType: GsoType.UDP_L4, gsoSize: 1200 };
  const frame = encodeOffloadFrame(header, packet);
  assert.equal(frame.length, 4 + 10 + 4);
  assert.equal(frame.toString('hex'), `01020004` + `0005` + `0000b004` + `00000000` + `4500001c`);
  // A full 65535-byte super-packet still fits the 16-bit field.
  const big = encodeOffloadFrame(header, Buffer.alloc(MAX_PACKET_SIZE));
  assert.equal(big.readUInt16BE(2), MAX_PACKET_SIZE);
  assert.equal(big.length, MAX_PACKET_SIZE + 14);
});
