// Fuzz: the frame decoder (src/protocol/decoder.ts) on arbitrary byte streams cut at arbitrary chunk
// boundaries, and on valid frame sequences. See docs/FUZZING.md.
//
// Properties:
//  1. Any bytes, any chunking, any limits: push() delivers frames or throws a coded error whose consequence
//     is a PROTOCOL_ERROR disconnect, never another exception; once failed it throws that error again; no
//     delivered payload breaks a limit; what stays buffered is less than one frame can need; and the
//     deliveries and the error are those of the same bytes pushed in one piece (chunking changes nothing).
//  2. Valid frame sequences (encodeFrame / encodeOffloadFrame / encodeControlFrame), any chunking: exactly
//     the encoded payloads come out, in order, and nothing stays buffered.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { consequenceOf, FacadeError } from '../../src/core/errors.js';
import { type ControlMessage, encodeControlFrame } from '../../src/protocol/control.js';
import { FrameDecoder, type FrameDecoderOptions, type FrameSink } from '../../src/protocol/decoder.js';
import {
  encodeFrame,
  encodeOffloadFrame,
  FrameType,
  MAX_FRAME_LENGTH,
  OFFLOAD_HEADER_SIZE,
  type OffloadHeader,
} from '../../src/protocol/frame.js';
import { cutPoints, runProperty, splitAt, targetRuns } from './harness.js';

/** Inputs for the whole target; property 1 gets 3/5, property 2 gets 2/5. */
const RUNS = targetRuns(6_000);

interface Delivery {
  readonly kind: 'packet' | 'control';
  readonly hex: string;
  readonly offload: OffloadHeader | null;
}

class Recorder implements FrameSink {
  readonly deliveries: Delivery[] = [];
  constructor(private readonly options: Required<FrameDecoderOptions>) {}
  onPacket(packet: Buffer, offload: OffloadHeader | null): void {
    assert.ok(packet.length >= 1 && packet.length <= this.options.maxPayload, `packet of ${packet.length}`);
    assert.ok(offload === null || this.options.offload, 'offload header without offload');
    this.deliveries.push({ kind: 'packet', hex: packet.toString('hex'), offload: offload && { ...offload } });
  }
  onControl(payload: Buffer): void {
    assert.ok(payload.length >= 1 && payload.length <= this.options.maxControlPayload);
    this.deliveries.push({ kind: 'control', hex: payload.toString('hex'), offload: null });
  }
}

interface Outcome {
  readonly deliveries: Delivery[];
  readonly errorCode: string | null;
}

/** Pushes the chunks in order, checking every push's contract on the way. */
function decode(chunks: readonly Buffer[], options: Required<FrameDecoderOptions>): Outcome {
  const sink = new Recorder(options);
  const decoder = new FrameDecoder(sink, options);
  const holdLimit = Math.max(OFFLOAD_HEADER_SIZE, options.maxPayload, options.maxControlPayload);
  for (const chunk of chunks) {
    try {
      decoder.push(chunk);
    } catch (err) {
      assert.ok(err instanceof FacadeError, `push threw a non-coded ${String(err)}`);
      assert.deepEqual(consequenceOf(err), { kind: 'disconnect', reason: 'PROTOCOL_ERROR' }, err.code);
      assert.equal(decoder.failed, true);
      assert.equal(decoder.bufferedBytes, 0);
      assert.throws(
        () => decoder.push(Buffer.from([1])),
        (again) => again === err,
      );
      return { deliveries: sink.deliveries, errorCode: err.code };
    }
    assert.equal(decoder.failed, false);
    // Never more than one incomplete frame is held, and a frame is never longer than its limit.
    assert.ok(decoder.bufferedBytes < holdLimit, `holds ${decoder.bufferedBytes} bytes`);
  }
  return { deliveries: sink.deliveries, errorCode: null };
}

const limit = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 64 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: MAX_FRAME_LENGTH }) },
  { weight: 1, arbitrary: fc.constant(MAX_FRAME_LENGTH) },
);

const decoderOptions = fc.record({ maxPayload: limit, maxControlPayload: limit, offload: fc.boolean() });

/** Bytes that look like frames often enough to get past the header checks: mostly right, sometimes not. */
const frameish = fc
  .array(
    fc.oneof(
      fc.record({
        version: fc.oneof({ weight: 8, arbitrary: fc.constant(1) }, fc.integer({ min: 0, max: 255 })),
        type: fc.oneof(
          {
            weight: 8,
            arbitrary: fc.constantFrom(FrameType.DATA, FrameType.DATA_OFFLOAD, FrameType.CONTROL),
          },
          fc.integer({ min: 0, max: 255 }),
        ),
        length: fc.oneof(
          { weight: 4, arbitrary: fc.integer({ min: 0, max: 40 }) },
          fc.integer({ min: 0, max: MAX_FRAME_LENGTH }),
        ),
        body: fc.uint8Array({ maxLength: 60 }),
      }),
      fc.uint8Array({ maxLength: 8 }).map((body) => ({ version: -1, type: 0, length: 0, body })),
    ),
    { maxLength: 8 },
  )
  .map((pieces) =>
    Buffer.concat(
      pieces.map(({ version, type, length, body }) =>
        version === -1
          ? Buffer.from(body)
          : Buffer.concat([Buffer.from([version, type, length >>> 8, length & 0xff]), body]),
      ),
    ),
  );

const anyStream = fc.oneof(fc.uint8Array({ maxLength: 200 }), frameish);

test('decoder fuzz: arbitrary bytes at arbitrary chunk boundaries', async (t) => {
  const property = fc.property(anyStream, cutPoints, decoderOptions, (bytes, cuts, options) => {
    const whole = decode(bytes.length === 0 ? [] : [Buffer.from(bytes)], options);
    const chunked = decode(splitAt(bytes, cuts), options);
    assert.deepEqual(chunked, whole);
  });
  await runProperty(t, 'decoder/arbitrary-bytes', property, Math.ceil((RUNS * 3) / 5));
});

// --- valid sequences ----------------------------------------------------------------------------------

const packet = fc.oneof(
  { weight: 10, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 100 }) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 2000 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(MAX_FRAME_LENGTH, MAX_FRAME_LENGTH - 1).map((n) => new Uint8Array(n)),
  },
);

const offloadHeader: fc.Arbitrary<OffloadHeader> = fc.record({
  flags: fc.integer({ min: 0, max: 0xff }),
  gsoType: fc.integer({ min: 0, max: 0xff }),
  hdrLen: fc.integer({ min: 0, max: 0xffff }),
  gsoSize: fc.integer({ min: 0, max: 0xffff }),
  csumStart: fc.integer({ min: 0, max: 0xffff }),
  csumOffset: fc.integer({ min: 0, max: 0xffff }),
});

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const simpleControl: fc.Arbitrary<ControlMessage> = fc.oneof(
  fc.record({ type: fc.constant('echo-request' as const), seq: u32, timestamp: u32 }),
  fc.record({ type: fc.constant('echo-reply' as const), seq: u32, timestamp: u32 }),
  fc.record({
    type: fc.constant('disconnect' as const),
    reason: fc.integer({ min: 0, max: 0xffff }),
    message: fc.string({ maxLength: 40 }),
  }),
);

interface Encoded {
  readonly frame: Buffer;
  readonly expected: Delivery;
}

const validFrame: fc.Arbitrary<Encoded> = fc.oneof(
  packet.map((bytes) => ({
    frame: encodeFrame(FrameType.DATA, Buffer.from(bytes)),
    expected: { kind: 'packet' as const, hex: Buffer.from(bytes).toString('hex'), offload: null },
  })),
  fc.tuple(offloadHeader, packet).map(([header, bytes]) => ({
    frame: encodeOffloadFrame(header, Buffer.from(bytes)),
    expected: { kind: 'packet' as const, hex: Buffer.from(bytes).toString('hex'), offload: { ...header } },
  })),
  fc.uint8Array({ minLength: 1, maxLength: 80 }).map((bytes) => ({
    frame: encodeFrame(FrameType.CONTROL, Buffer.from(bytes)),
    expected: { kind: 'control' as const, hex: Buffer.from(bytes).toString('hex'), offload: null },
  })),
  simpleControl.map((msg) => {
    const frame = encodeControlFrame(msg);
    return {
      frame,
      expected: { kind: 'control' as const, hex: frame.subarray(4).toString('hex'), offload: null },
    };
  }),
);

test('decoder fuzz: valid frame sequences decode the same at any chunking', async (t) => {
  const property = fc.property(fc.array(validFrame, { maxLength: 10 }), cutPoints, (frames, cuts) => {
    const stream = Buffer.concat(frames.map((f) => f.frame));
    const options = { maxPayload: MAX_FRAME_LENGTH, maxControlPayload: MAX_FRAME_LENGTH, offload: true };
    const sink = new Recorder(options);
    const decoder = new FrameDecoder(sink, options);
    for (const chunk of splitAt(stream, cuts)) decoder.push(chunk);
    assert.deepEqual(
      sink.deliveries,
      frames.map((f) => f.expected),
    );
    assert.equal(decoder.bufferedBytes, 0);
    assert.equal(decoder.failed, false);
  });
  await runProperty(t, 'decoder/valid-sequences', property, Math.ceil((RUNS * 2) / 5));
});
