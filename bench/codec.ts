// Micro-benchmark of the tunnel codec (run: `node dist/bench/codec.js`).
//
// decode: 1400-byte DATA frames arriving in 16 KiB chunks, as a TLS socket delivers them; about one frame
//         in twelve straddles two chunks and is copied, the rest are views.
// encode: the data path's way (header written in place in front of a packet already in a pooled buffer)
//         and the allocating encodeFrame() used for control frames.
// Figures are throughput on this machine, for comparing changes; nothing here asserts a speed.

import { FrameDecoder, type FrameSink } from '../src/protocol/decoder.js';
import {
  encodeFrame,
  FRAME_HEADER_SIZE,
  FrameType,
  type OffloadHeader,
  writeFrameHeader,
} from '../src/protocol/frame.js';

const PACKET_SIZE = 1400;
const CHUNK_SIZE = 16 * 1024;
const FRAME_SIZE = FRAME_HEADER_SIZE + PACKET_SIZE;
const DURATION_NS = 2_000_000_000n;

class CountingSink implements FrameSink {
  packets = 0;
  bytes = 0;
  onPacket(packet: Buffer, _offload: OffloadHeader | null): void {
    this.packets++;
    this.bytes += packet.length;
  }
  onControl(_payload: Buffer): void {}
}

function report(name: string, frames: number, payloadBytes: number, elapsedNs: bigint): void {
  const seconds = Number(elapsedNs) / 1e9;
  const fps = frames / seconds;
  const mbps = payloadBytes / seconds / 1e6;
  console.log(
    `${name.padEnd(34)} ${(fps / 1e6).toFixed(2).padStart(6)} M frames/s  ${mbps.toFixed(0).padStart(6)} MB/s  (${frames} frames in ${seconds.toFixed(2)} s)`,
  );
}

/** Runs `round` until DURATION_NS has passed; returns rounds done and time taken. */
function timed(round: () => void): { rounds: number; elapsed: bigint } {
  for (let i = 0; i < 50; i++) round(); // warm-up: let the JIT settle before timing
  const start = process.hrtime.bigint();
  let rounds = 0;
  let elapsed = 0n;
  do {
    for (let i = 0; i < 20; i++) round();
    rounds += 20;
    elapsed = process.hrtime.bigint() - start;
  } while (elapsed < DURATION_NS);
  return { rounds, elapsed };
}

function benchDecode(): void {
  // 1 MiB-ish stream of frames, cut into 16 KiB chunks once (the socket hands out fresh chunks each time;
  // views of a prepared stream cost the same to the decoder).
  const framesPerRound = 750;
  const stream = Buffer.alloc(framesPerRound * FRAME_SIZE);
  for (let i = 0; i < framesPerRound; i++) {
    writeFrameHeader(stream, i * FRAME_SIZE, FrameType.DATA, PACKET_SIZE);
    stream[i * FRAME_SIZE + FRAME_HEADER_SIZE] = 0x45;
  }
  const chunks: Buffer[] = [];
  for (let at = 0; at < stream.length; at += CHUNK_SIZE) chunks.push(stream.subarray(at, at + CHUNK_SIZE));

  const sink = new CountingSink();
  const decoder = new FrameDecoder(sink, { maxPayload: PACKET_SIZE });
  const { rounds, elapsed } = timed(() => {
    for (const chunk of chunks) decoder.push(chunk);
  });
  const frames = rounds * framesPerRound;
  if (decoder.bufferedBytes !== 0) throw new Error('decoder left bytes over');
  report('decode DATA 1400 B, 16 KiB chunks', frames, frames * PACKET_SIZE, elapsed);
}

function benchEncodeInPlace(): void {
  // A pooled send buffer with headroom: the packet is already there, only the header is written.
  const batch = 64;
  const pool = Buffer.alloc(batch * FRAME_SIZE);
  let sink = 0;
  const { rounds, elapsed } = timed(() => {
    for (let i = 0; i < batch; i++) {
      writeFrameHeader(pool, i * FRAME_SIZE, FrameType.DATA, PACKET_SIZE);
      sink ^= pool[i * FRAME_SIZE + 3]!;
    }
  });
  if (sink === -1) console.log(sink); // keeps the loop observable
  const frames = rounds * batch;
  report('encode header in place (no copy)', frames, frames * PACKET_SIZE, elapsed);
}

function benchEncodeFrame(): void {
  const packet = Buffer.alloc(PACKET_SIZE, 0x45);
  const batch = 64;
  let length = 0;
  const { rounds, elapsed } = timed(() => {
    for (let i = 0; i < batch; i++) length += encodeFrame(FrameType.DATA, packet).length;
  });
  const frames = rounds * batch;
  if (length !== frames * FRAME_SIZE + 50 * batch * FRAME_SIZE)
    throw new Error('encodeFrame length mismatch');
  report('encodeFrame DATA 1400 B (alloc+copy)', frames, frames * PACKET_SIZE, elapsed);
}

console.log(`node ${process.version}, ${PACKET_SIZE}-byte packets, ${CHUNK_SIZE}-byte chunks`);
benchDecode();
benchEncodeInPlace();
benchEncodeFrame();
