import assert from 'node:assert/strict';
import { test } from 'node:test';
import { consequenceOf, type ErrorName, isFacadeError } from '../../src/core/errors.js';
import { MAX_PACKET_SIZE } from '../../src/core/limits.js';
import { FrameDecoder, type FrameSink } from '../../src/protocol/decoder.js';
import {
  encodeFrame,
  encodeOffloadFrame,
  FrameType,
  GsoType,
  type OffloadHeader,
} from '../../src/protocol/frame.js';

interface Received {
  kind: 'packet' | 'control';
  bytes: Buffer;
  offload: OffloadHeader | null;
}

/** Copies what it receives, as a sink that keeps data must. */
class CollectingSink implements FrameSink {
  readonly received: Received[] = [];
  readonly views: Buffer[] = [];
  onPacket(packet: Buffer, offload: OffloadHeader | null): void {
    this.views.push(packet);
    this.received.push({
      kind: 'packet',
      bytes: Buffer.from(packet),
      offload: offload === null ? null : { ...offload },
    });
  }
  onControl(payload: Buffer): void {
    this.views.push(payload);
    this.received.push({ kind: 'control', bytes: Buffer.from(payload), offload: null });
  }
}

/** Deterministic PRNG (mulberry32) so a failing split can be reproduced from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function filled(length: number, random: () => number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = Math.floor(random() * 256);
  return b;
}

/** A mixed stream of frames and the deliveries it must produce. */
function makeStream(seed: number, count: number, offload: boolean): { stream: Buffer; expected: Received[] } {
  const random = prng(seed);
  const frames: Buffer[] = [];
  const expected: Received[] = [];
  const sizes = [1, 2, 3, 4, 5, 13, 14, 15, 20, 576, 1280, 1400, 1500, 9000];
  for (let i = 0; i < count; i++) {
    const pick = random();
    const size = sizes[Math.floor(random() * sizes.length)]!;
    const bytes = filled(size, random);
    if (offload && pick < 0.3) {
      const header: OffloadHeader = {
        flags: 1,
        gsoType: GsoType.TCPV6,
        hdrLen: Math.floor(random() * 0x10000),
        gsoSize: Math.floor(random() * 0x10000),
        csumStart: Math.floor(random() * 0x10000),
        csumOffset: Math.floor(random() * 0x10000),
      };
      frames.push(encodeOffloadFrame(header, bytes));
      expected.push({ kind: 'packet', bytes, offload: header });
    } else if (pick < 0.85) {
      frames.push(encodeFrame(FrameType.DATA, bytes));
      expected.push({ kind: 'packet', bytes, offload: null });
    } else {
      frames.push(encodeFrame(FrameType.CONTROL, bytes));
      expected.push({ kind: 'control', bytes, offload: null });
    }
  }
  return { stream: Buffer.concat(frames), expected };
}

function feed(decoder: FrameDecoder, stream: Buffer, cuts: number[]): void {
  let from = 0;
  for (const cut of [...cuts, stream.length]) {
    decoder.push(stream.subarray(from, cut));
    from = cut;
  }
}

function decodeWithCuts(stream: Buffer, cuts: number[], offload: boolean): CollectingSink {
  const sink = new CollectingSink();
  const decoder = new FrameDecoder(sink, { offload });
  feed(decoder, stream, cuts);
  assert.equal(decoder.bufferedBytes, 0, 'nothing left over after whole frames');
  return sink;
}

/** True when `view` shares memory with `chunk` (a subarray of it), i.e. no copy was made. */
function isViewOf(view: Buffer, chunk: Buffer): boolean {
  return (
    view.buffer === chunk.buffer &&
    view.byteOffset >= chunk.byteOffset &&
    view.byteOffset + view.length <= chunk.byteOffset + chunk.length
  );
}

function expectCode(name: ErrorName): (err: unknown) => boolean {
  return (err) => isFacadeError(err, name);
}

test('many frames in one chunk are all delivered, as views into that chunk', () => {
  const { stream, expected } = makeStream(1, 200, true);
  const sink = decodeWithCuts(stream, [], true);
  assert.deepEqual(sink.received, expected);
  for (const view of sink.views) assert.ok(isViewOf(view, stream), 'no copy when in one chunk');
});

test('every byte in its own chunk', () => {
  const { stream, expected } = makeStream(2, 40, true);
  const cuts = Array.from({ length: stream.length - 1 }, (_, i) => i + 1);
  assert.deepEqual(decodeWithCuts(stream, cuts, true).received, expected);
});

test('random splits (20 seeds)', () => {
  for (let seed = 100; seed < 120; seed++) {
    const { stream, expected } = makeStream(seed, 120, true);
    const random = prng(seed * 7);
    const cuts: number[] = [];
    for (let at = 0; ; ) {
      // Mostly small pieces, sometimes large ones, so splits land in headers and payloads alike.
      at += 1 + Math.floor(random() < 0.7 ? random() * 20 : random() * 20000);
      if (at >= stream.length) break;
      cuts.push(at);
    }
    assert.deepEqual(decodeWithCuts(stream, cuts, true).received, expected, `seed ${seed}`);
  }
});

test('a header split across chunks at every position', () => {
  const packet = Buffer.from('450000140000400040010000c6120001c6120002', 'hex');
  const frame = encodeFrame(FrameType.DATA, packet);
  for (const cut of [1, 2, 3]) {
    const sink = new CollectingSink();
    const decoder = new FrameDecoder(sink);
    decoder.push(frame.subarray(0, cut));
    assert.equal(sink.received.length, 0);
    assert.equal(decoder.bufferedBytes, cut);
    decoder.push(frame.subarray(cut));
    assert.deepEqual(sink.received, [{ kind: 'packet', bytes: packet, offload: null }]);
    // The payload came whole in the second chunk: still a view, no copy.
    assert.ok(isViewOf(sink.views[0]!, frame));
  }
});

test('an offload header split across chunks', () => {
  const header: OffloadHeader = {
    flags: 1,
    gsoType: GsoType.TCPV4,
    hdrLen: 54,
    gsoSize: 1448,
    csumStart: 34,
    csumOffset: 16,
  };
  const packet = filled(3000, prng(9));
  const frame = encodeOffloadFrame(header, packet);
  for (let cut = 5; cut < 14; cut++) {
    const sink = decodeWithCuts(frame, [cut], true);
    assert.deepEqual(sink.received, [{ kind: 'packet', bytes: packet, offload: header }], `cut ${cut}`);
  }
});

test('a payload split across 3 chunks is reassembled into one fresh buffer', () => {
  const packet = filled(1400, prng(3));
  const frame = encodeFrame(FrameType.DATA, packet);
  const sink = new CollectingSink();
  const decoder = new FrameDecoder(sink);
  decoder.push(frame.subarray(0, 500));
  decoder.push(frame.subarray(500, 1000));
  assert.equal(sink.received.length, 0);
  // The 4 header bytes are parsed already; the 996 payload bytes wait.
  assert.equal(decoder.bufferedBytes, 996);
  decoder.push(frame.subarray(1000));
  assert.deepEqual(sink.received, [{ kind: 'packet', bytes: packet, offload: null }]);
  assert.ok(!isViewOf(sink.views[0]!, frame), 'straddling payload is copied');
  assert.equal(decoder.bufferedBytes, 0);
});

test('largest packet (65535 bytes) passes with the default limit', () => {
  const packet = filled(MAX_PACKET_SIZE, prng(4));
  const { received } = decodeWithCuts(encodeFrame(FrameType.DATA, packet), [3, 30000], false);
  assert.deepEqual(received, [{ kind: 'packet', bytes: packet, offload: null }]);
});

test('the offload header object is the decoder’s single reused instance', () => {
  const seen: (OffloadHeader | null)[] = [];
  const decoder = new FrameDecoder(
    { onPacket: (_p, offload) => seen.push(offload), onControl: () => {} },
    { offload: true },
  );
  const header = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
  decoder.push(
    Buffer.concat([
      encodeOffloadFrame(header, Buffer.from([1])),
      encodeOffloadFrame({ ...header, gsoSize: 7 }, Buffer.from([2])),
    ]),
  );
  assert.equal(seen.length, 2);
  assert.equal(seen[0], seen[1]);
  assert.equal(seen[1]!.gsoSize, 7);
});

test('unknown version: FRAME_VERSION, and the decoder stays failed', () => {
  const sink = new CollectingSink();
  const decoder = new FrameDecoder(sink);
  const frame = encodeFrame(FrameType.DATA, Buffer.from([0x45]));
  frame[0] = 2;
  assert.throws(() => decoder.push(frame), expectCode('FRAME_VERSION'));
  assert.ok(decoder.failed);
  assert.equal(decoder.bufferedBytes, 0);
  assert.throws(
    () => decoder.push(encodeFrame(FrameType.DATA, Buffer.from([0x45]))),
    expectCode('FRAME_VERSION'),
  );
  assert.equal(sink.received.length, 0);
});

test('unknown type: FRAME_TYPE, naming the type', () => {
  const decoder = new FrameDecoder(new CollectingSink());
  assert.throws(
    () => decoder.push(Buffer.from([1, 0x03, 0, 1, 0])),
    (err) => isFacadeError(err, 'FRAME_TYPE') && /0x03/.test(err.message),
  );
});

test('DATA_OFFLOAD when offload was not negotiated: FRAME_OFFLOAD', () => {
  const decoder = new FrameDecoder(new CollectingSink());
  const frame = encodeOffloadFrame(
    { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 },
    Buffer.from([0x45]),
  );
  assert.throws(() => decoder.push(frame), expectCode('FRAME_OFFLOAD'));
});

test('zero-length DATA and CONTROL: FRAME_INVALID', () => {
  for (const type of [FrameType.DATA, FrameType.CONTROL]) {
    const decoder = new FrameDecoder(new CollectingSink());
    assert.throws(() => decoder.push(Buffer.from([1, type, 0, 0])), expectCode('FRAME_INVALID'));
  }
  const decoder = new FrameDecoder(new CollectingSink(), { offload: true });
  assert.throws(
    () => decoder.push(Buffer.from([1, FrameType.DATA_OFFLOAD, 0, 0])),
    expectCode('FRAME_INVALID'),
  );
});

test('oversize length is refused at the header, before any payload arrives', () => {
  const decoder = new FrameDecoder(new CollectingSink(), { maxPayload: 1400 });
  // Only the 4 header bytes are pushed: the limit must already be enforced.
  assert.throws(
    () => decoder.push(Buffer.from([1, FrameType.DATA, 0x05, 0x79])),
    (err) =>
      isFacadeError(err, 'FRAME_TOO_LARGE') && /1401 bytes exceeds the limit of 1400/.test(err.message),
  );
  // Exactly at the limit is fine.
  const ok = new CollectingSink();
  new FrameDecoder(ok, { maxPayload: 1400 }).push(encodeFrame(FrameType.DATA, Buffer.alloc(1400)));
  assert.equal(ok.received.length, 1);
});

test('the control limit is separate: a CONFIG longer than the MTU still passes', () => {
  const sink = new CollectingSink();
  const decoder = new FrameDecoder(sink, { maxPayload: 1280 });
  decoder.push(encodeFrame(FrameType.CONTROL, Buffer.alloc(5000, 1)));
  assert.equal(sink.received.length, 1);
  const strict = new FrameDecoder(new CollectingSink(), { maxControlPayload: 100 });
  assert.throws(
    () => strict.push(Buffer.from([1, FrameType.CONTROL, 0, 101])),
    expectCode('FRAME_TOO_LARGE'),
  );
});

test('configure() from inside onControl applies to the next frame of the same chunk', () => {
  const packets: Buffer[] = [];
  const decoder: FrameDecoder = new FrameDecoder({
    onPacket: (packet) => packets.push(packet),
    onControl: () => decoder.configure({ offload: true, maxPayload: 1300 }),
  });
  const header = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
  const chunk = Buffer.concat([
    encodeFrame(FrameType.CONTROL, Buffer.from([1])),
    encodeOffloadFrame(header, Buffer.from([0x60])),
    encodeFrame(FrameType.DATA, Buffer.alloc(1301)),
  ]);
  // The offload frame is accepted (offload now on), then the 1301-byte packet hits the new limit.
  assert.throws(() => decoder.push(chunk), expectCode('FRAME_TOO_LARGE'));
  assert.deepEqual(packets, [Buffer.from([0x60])]);
});

test('configure() validates its limits', () => {
  for (const bad of [0, -1, 1.5, 65536, Number.NaN]) {
    assert.throws(
      () => new FrameDecoder(new CollectingSink(), { maxPayload: bad }),
      expectCode('CONFIG_INVALID'),
    );
  }
});

test('an error thrown by the sink propagates and leaves the decoder failed', () => {
  const boom = new Error('sink failed');
  const decoder = new FrameDecoder({
    onPacket: () => {
      throw boom;
    },
    onControl: () => {},
  });
  assert.throws(() => decoder.push(encodeFrame(FrameType.DATA, Buffer.from([1]))), boom);
  assert.deepEqual(consequenceOf(boom), { kind: 'disconnect', reason: 'INTERNAL' });
  assert.throws(() => decoder.push(encodeFrame(FrameType.DATA, Buffer.from([1]))), boom);
});

test('the decoder’s errors blame the peer: their consequence is a PROTOCOL_ERROR disconnect', () => {
  const decoder = new FrameDecoder(new CollectingSink());
  try {
    decoder.push(Buffer.from([9, 1, 0, 1]));
    assert.fail('should have thrown');
  } catch (err) {
    assert.deepEqual(consequenceOf(err), { kind: 'disconnect', reason: 'PROTOCOL_ERROR' });
  }
});

test('empty chunks are harmless', () => {
  const sink = new CollectingSink();
  const decoder = new FrameDecoder(sink);
  decoder.push(Buffer.alloc(0));
  decoder.push(encodeFrame(FrameType.DATA, Buffer.from([7])));
  decoder.push(Buffer.alloc(0));
  assert.equal(sink.received.length, 1);
});

test('a frame split across reads is copied into the straddle buffer when one is given, not a fresh one', () => {
  const straddle = Buffer.alloc(MAX_PACKET_SIZE);
  const sink = new CollectingSink();
  const decoder = new FrameDecoder(sink, {}, () => straddle);
  const payload = Buffer.alloc(3000, 7);
  const frame = encodeFrame(FrameType.DATA, payload);
  for (let round = 0; round < 3; round++) {
    decoder.push(frame.subarray(0, 1000));
    decoder.push(frame.subarray(1000));
  }
  assert.equal(sink.received.length, 3);
  for (const view of sink.views)
    assert.equal(view.buffer, straddle.buffer, 'the copy lives in the straddle buffer');
  assert.deepEqual(sink.received[2]?.bytes, payload);
  // A frame that sits in one read is still a view of that read, never copied.
  decoder.push(frame);
  assert.equal(sink.views[3]?.buffer, frame.buffer);
});

test('transient chunks (a reused read buffer): what push() has not decoded is copied, not kept', () => {
  const sink = new CollectingSink();
  const decoder = new FrameDecoder(sink, {}, undefined, storePool());
  const frames = [
    encodeFrame(FrameType.DATA, Buffer.alloc(3000, 1)),
    encodeFrame(FrameType.DATA, Buffer.alloc(70, 2)),
    encodeFrame(FrameType.DATA, Buffer.alloc(5000, 3)),
  ];
  const stream = Buffer.concat(frames);
  // One read buffer, overwritten with garbage after every push, as a socket's onread buffer would be.
  const readBuffer = Buffer.alloc(1024);
  for (let at = 0; at < stream.length; at += 1000) {
    const n = Math.min(1000, stream.length - at);
    stream.copy(readBuffer, 0, at, at + n);
    decoder.push(readBuffer.subarray(0, n));
    readBuffer.fill(0xee);
  }
  assert.deepEqual(
    sink.received.map((r) => r.bytes),
    [Buffer.alloc(3000, 1), Buffer.alloc(70, 2), Buffer.alloc(5000, 3)],
  );
});

test('transient chunks of every size: frames up to the largest come out intact (store append and compaction)', () => {
  let seed = 12345;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  const payloads = Array.from({ length: 120 }, (_, i) =>
    Buffer.alloc(i % 7 === 0 ? MAX_PACKET_SIZE : 1 + random(20_000), i & 0xff),
  );
  const stream = Buffer.concat(payloads.map((p) => encodeFrame(FrameType.DATA, p)));
  const sink = new CollectingSink();
  const decoder = new FrameDecoder(sink, {}, () => Buffer.alloc(MAX_PACKET_SIZE), storePool());
  const readBuffer = Buffer.alloc(70_000);
  for (let at = 0; at < stream.length; ) {
    const n = Math.min(1 + random(randomChunkCeiling(random)), stream.length - at);
    stream.copy(readBuffer, 0, at, at + n);
    decoder.push(readBuffer.subarray(0, n));
    readBuffer.fill(0xee);
    at += n;
  }
  assert.equal(sink.received.length, payloads.length);
  for (const [i, r] of sink.received.entries())
    assert.ok(r.bytes.equals(payloads[i] as Buffer), `frame ${i}`);
});

/** Mostly TLS-record-sized reads, sometimes tiny or large ones. */
function randomChunkCeiling(random: (n: number) => number): number {
  const pick = random(10);
  return pick < 2 ? 10 : pick < 8 ? 16_384 : 65_536;
}

/** Stores for a transient decoder, counting what is held. */
function storePool(): { take(): Buffer; give(store: Buffer): void; held: number } {
  return {
    held: 0,
    take() {
      this.held++;
      return Buffer.alloc(2 * 0xffff);
    },
    give() {
      this.held--;
    },
  };
}

test('a transient decoder holds a store only while part of a frame is kept', () => {
  const stores = storePool();
  const decoder = new FrameDecoder(new CollectingSink(), {}, undefined, stores);
  const frame = encodeFrame(FrameType.DATA, Buffer.alloc(3000, 5));
  decoder.push(frame.subarray(0, 100));
  assert.equal(stores.held, 1);
  decoder.push(frame.subarray(100));
  assert.equal(stores.held, 0, 'given back once the frame was complete');
  decoder.push(frame);
  assert.equal(stores.held, 0, 'a whole frame needs none');
});
