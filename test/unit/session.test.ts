// The shared Session over real loopback TCP sockets: keepalive, dead-peer detection, malformed frames,
// anti-spoofing and the bounded output queue.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { MAX_ECHO_REPLIES_PER_SECOND, MAX_SESSION_BUFFERED_BYTES } from '../../src/core/limits.js';
import { createLogger } from '../../src/core/log.js';
import { ipv4ToNumber, setIpv4HeaderChecksum } from '../../src/net/packet.js';
import { DisconnectReason, decodeControl, encodeControlFrame } from '../../src/protocol/control.js';
import { FrameDecoder } from '../../src/protocol/decoder.js';
import { encodeFrame, FrameType } from '../../src/protocol/frame.js';
import { SessionBuffers } from '../../src/session/buffers.js';
import { Session, type SessionCloseReason, type SessionSink } from '../../src/session/session.js';
import { socketPair } from '../helpers/frame-peer.js';

const logger = createLogger({ level: 'silent' });

class RecordingSink implements SessionSink {
  packets: Buffer[] = [];
  closes: SessionCloseReason[] = [];
  private resolveClosed: (reason: SessionCloseReason) => void = () => {};
  readonly closed = new Promise<SessionCloseReason>((resolve) => {
    this.resolveClosed = resolve;
  });
  onPacket(_s: Session, packet: Buffer): void {
    this.packets.push(Buffer.from(packet));
  }
  onChunkEnd(): void {}
  onControl(): void {}
  onClose(_s: Session, reason: SessionCloseReason): void {
    this.closes.push(reason);
    this.resolveClosed(reason);
  }
}

function ipv4Packet(source: string, destination: string): Buffer {
  const packet = Buffer.alloc(28);
  packet[0] = 0x45;
  packet.writeUInt16BE(28, 2);
  packet[8] = 64;
  packet[9] = 17;
  packet.writeUInt32BE(ipv4ToNumber(source), 12);
  packet.writeUInt32BE(ipv4ToNumber(destination), 16);
  setIpv4HeaderChecksum(packet, 0);
  return packet;
}

test('two live peers keep each other alive with echoes', async () => {
  const [a, b] = await socketPair();
  const sinkA = new RecordingSink();
  const sinkB = new RecordingSink();
  const sessionA = new Session({ socket: a, sink: sinkA, logger, keepaliveMs: 40 });
  const sessionB = new Session({ socket: b, sink: sinkB, logger, keepaliveMs: 40 });
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(sinkA.closes.length, 0);
  assert.equal(sinkB.closes.length, 0);
  assert.ok(sessionA.stats.bytesIn > 0 && sessionB.stats.bytesIn > 0, 'echo traffic flowed both ways');
  sessionA.close(DisconnectReason.NORMAL, 'test done');
  const reason = await sinkB.closed;
  assert.equal(reason.code, DisconnectReason.NORMAL);
  assert.equal(reason.byPeer, true);
  assert.equal(reason.message, 'test done');
});

test('a silent peer is declared dead after the keepalive intervals run out', async () => {
  const [a, b] = await socketPair();
  b.pause(); // reads nothing, answers nothing
  const sink = new RecordingSink();
  new Session({ socket: a, sink, logger, keepaliveMs: 30 });
  const reason = await sink.closed;
  assert.equal(reason.code, DisconnectReason.DEAD_PEER);
  assert.equal(reason.byPeer, false);
  b.destroy();
});

test('a malformed frame ends that session once, and the peer is told why', async () => {
  const [a, b] = await socketPair();
  const sink = new RecordingSink();
  new Session({ socket: a, sink, logger, keepaliveMs: 0 });
  const received: string[] = [];
  const decoder = new FrameDecoder({
    onPacket() {},
    onControl(payload) {
      const message = decodeControl(payload);
      if (message.type === 'disconnect') received.push(`${message.reason}:${message.message}`);
    },
  });
  b.on('data', (chunk: Buffer) => decoder.push(chunk));
  b.write(Buffer.from([9, 1, 0, 4, 1, 2, 3, 4])); // version 9
  const reason = await sink.closed;
  assert.equal(reason.code, DisconnectReason.PROTOCOL_ERROR);
  await once(b, 'end');
  assert.equal(received.length, 1);
  assert.match(received[0] as string, /^1:.*version 9/);
  assert.equal(sink.closes.length, 1);
  b.destroy();
});

test('packets from a source other than the peer address are dropped and counted', async () => {
  const [a, b] = await socketPair();
  const sink = new RecordingSink();
  const session = new Session({
    socket: a,
    sink,
    logger,
    keepaliveMs: 0,
    allowedSources: { ipv4: ipv4ToNumber('198.18.8.2') },
  });
  b.write(encodeFrame(FrameType.DATA, ipv4Packet('198.18.8.99', '198.18.8.1')));
  b.write(encodeFrame(FrameType.DATA, ipv4Packet('198.18.8.2', '198.18.8.1')));
  b.write(encodeFrame(FrameType.DATA, Buffer.from('not an ip packet at all, just text')));
  for (let i = 0; i < 50 && session.stats.bytesIn < 3 * 32; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(session.stats.spoofDrops, 1);
  assert.equal(session.stats.invalidDrops, 1);
  assert.equal(sink.packets.length, 1);
  assert.equal(sink.packets[0]?.readUInt32BE(12), ipv4ToNumber('198.18.8.2'));
  session.close(DisconnectReason.NORMAL, 'done');
  b.destroy();
});

test('a peer that stops reading makes queuePacket drop instead of buffering without bound', async () => {
  const [a, b] = await socketPair();
  b.pause();
  const sink = new RecordingSink();
  const session = new Session({ socket: a, sink, logger, keepaliveMs: 0 });
  const packet = ipv4Packet('198.18.8.1', '198.18.8.2');
  const big = Buffer.alloc(1400);
  packet.copy(big);
  let accepted = 0;
  for (let round = 0; round < 200 && session.stats.queueDrops === 0; round++) {
    for (let i = 0; i < 100; i++) if (session.queuePacket(big, 0, big.length)) accepted++;
    session.flush();
    await new Promise((r) => setImmediate(r));
  }
  assert.ok(session.stats.queueDrops > 0, 'packets were dropped once the peer fell behind');
  assert.ok(session.queuedBytes <= MAX_SESSION_BUFFERED_BYTES + 1404, `queued ${session.queuedBytes} bytes`);
  assert.ok(accepted * 1404 >= MAX_SESSION_BUFFERED_BYTES / 2, 'it did buffer up to the limit first');
  session.close(DisconnectReason.NORMAL, 'done');
  b.destroy();
});

test('a long multi-byte close reason is cut to the protocol limit, not thrown', {
  timeout: 5_000,
}, async () => {
  const [a, b] = await socketPair();
  const sink = new RecordingSink();
  const session = new Session({ socket: a, sink, logger, keepaliveMs: 0 });
  const received: string[] = [];
  const decoder = new FrameDecoder({
    onPacket() {},
    onControl(payload) {
      const message = decodeControl(payload);
      if (message.type === 'disconnect') received.push(message.message);
    },
  });
  b.on('data', (chunk: Buffer) => decoder.push(chunk));
  // 800 characters, 2,400 bytes of UTF-8: over the 1,000-byte limit for DISCONNECT text.
  session.close(DisconnectReason.ADMIN, '€'.repeat(800));
  await once(b, 'end');
  assert.equal(received.length, 1);
  assert.ok(Buffer.byteLength(received[0] as string) <= 1000);
  assert.match(received[0] as string, /^€+/);
  b.destroy();
});

test('a flood of echo requests from a peer that never reads: replies rate-limited, output bounded', async () => {
  const [a, b] = await socketPair();
  b.pause(); // the attacker never reads its replies
  const sink = new RecordingSink();
  const session = new Session({ socket: a, sink, logger, keepaliveMs: 0 });
  const request = encodeControlFrame({ type: 'echo-request', seq: 1, timestamp: 2 });
  const burst = Buffer.concat(Array.from({ length: 10_000 }, () => request));
  for (let i = 0; i < 20; i++) {
    b.write(burst);
    await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, 200));
  const received = session.stats.echoDrops + 10;
  assert.ok(received >= 100_000, `only ${received} requests arrived`);
  assert.ok(
    session.stats.echoDrops >= received - MAX_ECHO_REPLIES_PER_SECOND * 2,
    `answered ${received - session.stats.echoDrops} of ${received}`,
  );
  assert.ok(session.queuedBytes < 1024, `queued ${session.queuedBytes} bytes of replies`);
  assert.equal(sink.closes.length, 0, 'the flood itself is not a protocol error');
  session.close(DisconnectReason.NORMAL, 'done');
  b.destroy();
});

test('control messages count against the output bound like packets', async () => {
  const [a, b] = await socketPair();
  b.pause();
  const sink = new RecordingSink();
  const session = new Session({ socket: a, sink, logger, keepaliveMs: 0 });
  const big = Buffer.alloc(1400);
  ipv4Packet('198.18.8.1', '198.18.8.2').copy(big);
  for (let round = 0; round < 200 && session.stats.queueDrops === 0; round++) {
    for (let i = 0; i < 100; i++) session.queuePacket(big, 0, big.length);
    session.flush();
    await new Promise((r) => setImmediate(r));
  }
  // Top it up with the smallest packets, so what is left is less than one of them.
  const small = ipv4Packet('198.18.8.1', '198.18.8.2');
  while (session.queuePacket(small, 0, small.length));
  const drops = session.stats.queueDrops;
  assert.ok(drops > 0, 'the queue filled');
  // A DISCONNECT-sized message does not fit any more than a packet would.
  const sent = session.sendControl({ type: 'disconnect', reason: 0, message: 'x'.repeat(1000) });
  assert.equal(sent, false);
  assert.equal(session.stats.queueDrops, drops + 1);
  session.close(DisconnectReason.NORMAL, 'done');
  b.destroy();
});

test('output slabs are reused: many batches to a reading peer allocate a few, and an idle session holds none', async () => {
  const [a, b] = await socketPair();
  const buffers = new SessionBuffers();
  const session = new Session({ socket: a, sink: new RecordingSink(), logger, keepaliveMs: 0, buffers });
  let received = 0;
  b.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  const big = Buffer.alloc(1400);
  ipv4Packet('198.18.8.1', '198.18.8.2').copy(big);
  // 64 MB in batches of 64 packets (about a TUN batch each), each batch flushed as the engine does.
  for (let batch = 0; batch < 700; batch++) {
    for (let i = 0; i < 64; i++) session.queuePacket(big, 0, big.length);
    session.flush();
    await new Promise((r) => setImmediate(r));
  }
  const sent = 700 * 64 * (big.length + 4) - session.stats.queueDrops * (big.length + 4);
  while (received < sent) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setImmediate(r));
  assert.ok(buffers.slabs.allocated <= 20, `${buffers.slabs.allocated} slabs allocated for 700 batches`);
  assert.equal(buffers.slabs.free, buffers.slabs.allocated, 'the idle session gave every slab back');
  session.close(DisconnectReason.NORMAL, 'done');
  b.destroy();
});

test('server sessions read into the one shared buffer: every packet intact, frames split across reads', async () => {
  // Two sessions of one engine share one SessionBuffers, so one read buffer: each read is decoded before the
  // next read (of either socket) can overwrite it. Packets of many sizes, written in odd-sized pieces so
  // frames straddle reads; each packet's bytes say which session and which packet it is.
  const buffers = new SessionBuffers();
  const pairs = [await socketPair(), await socketPair()];
  const sinks = [new RecordingSink(), new RecordingSink()];
  const sessions = pairs.map(
    ([server], i) =>
      new Session({
        socket: server,
        sink: sinks[i] as RecordingSink,
        logger,
        keepaliveMs: 0,
        buffers,
        bufferReads: true,
      }),
  );
  try {
    for (const [server] of pairs)
      assert.equal(server.listenerCount('data'), 0, 'no data events: buffer reads');
    const count = 400;
    const expected: Buffer[][] = [[], []];
    for (let n = 0; n < count; n++) {
      for (let i = 0; i < 2; i++) {
        const packet = ipv4Packet('198.18.0.2', '198.18.0.1');
        const body = Buffer.alloc(20 + ((n * 37 + i * 11) % 1400), (n + i * 7) & 0xff);
        const whole = Buffer.concat([packet, body]);
        whole.writeUInt16BE(whole.length, 2);
        setIpv4HeaderChecksum(whole, 0);
        expected[i]?.push(whole);
      }
    }
    for (let i = 0; i < 2; i++) {
      const stream = Buffer.concat((expected[i] as Buffer[]).map((p) => encodeFrame(FrameType.DATA, p)));
      const client = (pairs[i] as [unknown, import('node:net').Socket])[1];
      for (let at = 0; at < stream.length; at += 997) client.write(stream.subarray(at, at + 997));
    }
    for (let wait = 0; wait < 200 && sinks.some((s) => s.packets.length < count); wait++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    for (let i = 0; i < 2; i++) {
      assert.equal(sinks[i]?.packets.length, count, `session ${i}: every packet`);
      for (let n = 0; n < count; n++) {
        assert.ok(
          sinks[i]?.packets[n]?.equals(expected[i]?.[n] as Buffer),
          `session ${i}, packet ${n} intact`,
        );
      }
    }
  } finally {
    for (const session of sessions) session.close(DisconnectReason.NORMAL, 'test done');
    for (const [server, client] of pairs) {
      server.destroy();
      client.destroy();
    }
  }
});

test('a server session reading into the shared buffer still pauses for its inbound rate', async () => {
  const [server, client] = await socketPair();
  const sink = new RecordingSink();
  const session = new Session({
    socket: server,
    sink,
    logger,
    keepaliveMs: 0,
    buffers: new SessionBuffers(),
    bufferReads: true,
  });
  try {
    session.setRateLimit(200_000);
    const packet = ipv4Packet('198.18.0.2', '198.18.0.1');
    const frame = encodeFrame(FrameType.DATA, packet);
    // 2 MB offered at once; at 200 kB/s (plus the burst) far less can have been read after 500 ms.
    for (let i = 0; i < 2_000_000 / frame.length; i++) client.write(frame);
    await new Promise((r) => setTimeout(r, 500));
    const read = session.stats.bytesIn;
    assert.ok(read < 600_000, `read ${read} bytes in 0.5 s at 200 kB/s`);
    assert.ok(read > 50_000, `read ${read}: shaped, not stopped`);
    session.setRateLimit(0);
    for (let wait = 0; wait < 200 && session.stats.bytesIn < 1_900_000; wait++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(session.stats.bytesIn >= 1_900_000, `unshaped again: ${session.stats.bytesIn}`);
  } finally {
    session.close(DisconnectReason.NORMAL, 'test done');
    server.destroy();
    client.destroy();
  }
});
