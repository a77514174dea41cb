// The WebSocket framer (src/protocol/websocket.ts) between two in-memory socket pairs: bytes cross in both
// directions whatever the chunking, the client masks and the server does not, ping gets pong, close gets
// close, and what RFC 6455 forbids (a text frame, a reserved bit, an unmasked client frame, a masked server
// frame, an oversized control frame) fails the stream with a coded error and close code 1002.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Duplex, PassThrough } from 'node:stream';
import { test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import { applyMask, isWebSocketKey, WebSocketStream, webSocketAccept } from '../../src/protocol/websocket.js';

/** A socket-like Duplex: what is written to it lands in `written`. */
class FakeSocket extends Duplex {
  readonly written: Buffer[] = [];
  override _read(): void {}
  override _write(chunk: Buffer, _e: BufferEncoding, cb: () => void): void {
    this.written.push(Buffer.from(chunk));
    cb();
  }
  bytes(): Buffer {
    return Buffer.concat(this.written);
  }
}

function pair(): {
  client: WebSocketStream;
  server: WebSocketStream;
  toServer: FakeSocket;
  toClient: FakeSocket;
} {
  const toServer = new FakeSocket();
  const toClient = new FakeSocket();
  const client = new WebSocketStream(toServer, { role: 'client' });
  const server = new WebSocketStream(toClient, { role: 'server' });
  return { client, server, toServer, toClient };
}

/** Feeds `bytes` to `stream` in pieces of the given sizes (cycling), as reads of a socket would. */
function feed(stream: WebSocketStream, bytes: Buffer, sizes: readonly number[]): void {
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const size = sizes[i % sizes.length] as number;
    stream.receive(Buffer.from(bytes.subarray(at, at + size)));
    at += size;
  }
}

/** Readable streams start flowing on the next tick. */
function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Waits until everything written to `stream` went to its socket (one write is in flight at a time). */
async function flushed(stream: Duplex): Promise<void> {
  while (stream.writableLength > 0) await tick();
}

function collect(stream: Duplex): Buffer[] {
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  return chunks;
}

test('the accept value of RFC 6455 section 1.3, and which keys are well formed', () => {
  assert.equal(webSocketAccept('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  assert.ok(isWebSocketKey('dGhlIHNhbXBsZSBub25jZQ=='));
  assert.ok(!isWebSocketKey('dGhlIHNhbXBsZSBub25jZQ='));
  assert.ok(!isWebSocketKey('dGhlIHNhbXBsZSBub25jZR=='), 'non-canonical last character');
  assert.ok(!isWebSocketKey(undefined));
});

test('masking: word-wise and byte-wise agree at every phase and alignment', () => {
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const data = randomBytes(300);
  for (const phase of [0, 1, 2, 3]) {
    for (const offset of [0, 1, 4]) {
      const view = Buffer.from(data).subarray(offset, offset + 200);
      const expected = Buffer.from(view.map((b, i) => b ^ (mask[(phase + i) & 3] as number)));
      applyMask(view, mask, phase);
      assert.deepEqual(view, expected, `phase ${phase}, offset ${offset}`);
    }
  }
});

for (const sizes of [[1], [2, 3, 7], [65536], [13, 1000, 1]]) {
  test(`bytes cross both ways whole and in order, socket reads of ${sizes.join('/')} bytes`, async () => {
    const { client, server, toServer, toClient } = pair();
    const atServer = collect(server);
    const atClient = collect(client);
    const up = [randomBytes(10), randomBytes(200), randomBytes(70_000), randomBytes(1)];
    // The client masks in place: keep copies of what it was given.
    for (const chunk of up) client.write(Buffer.from(chunk));
    await flushed(client);
    feed(server, toServer.bytes(), sizes);
    await tick();
    assert.deepEqual(Buffer.concat(atServer), Buffer.concat(up));
    // Masked on the wire: the payload does not appear as is.
    assert.equal(toServer.bytes().indexOf(up[2] as Buffer), -1, 'client frames are masked');

    const down = [randomBytes(125), randomBytes(126), randomBytes(65_536), randomBytes(3)];
    for (const chunk of down) server.write(chunk);
    await flushed(server);
    feed(client, toClient.bytes(), sizes);
    await tick();
    assert.deepEqual(Buffer.concat(atClient), Buffer.concat(down));
    assert.notEqual(toClient.bytes().indexOf(down[2] as Buffer), -1, 'server frames are not masked');
  });
}

test('a fragmented message (binary then continuation) is one byte stream; ping gets pong in between', async () => {
  const { server, toClient } = pair();
  const got = collect(server);
  const mask = Buffer.from([1, 2, 3, 4]);
  const frame = (b0: number, payload: Buffer): Buffer => {
    const masked = Buffer.from(payload);
    applyMask(masked, mask, 0);
    return Buffer.concat([Buffer.from([b0, 0x80 | payload.length]), mask, masked]);
  };
  server.receive(
    Buffer.concat([
      frame(0x02, Buffer.from('hello ')), // binary, not FIN
      frame(0x89, Buffer.from('p1')), // ping, in the middle of the message
      frame(0x80, Buffer.from('world')), // continuation, FIN
    ]),
  );
  await tick();
  assert.equal(Buffer.concat(got).toString(), 'hello world');
  assert.deepEqual(toClient.bytes(), Buffer.from([0x8a, 2, ...Buffer.from('p1')]), 'pong with the same data');
});

test('close is answered with close, and the stream ends', async () => {
  const { server, toClient } = pair();
  collect(server);
  const ended = new Promise((resolve) => server.once('end', resolve));
  const mask = Buffer.from([0, 0, 0, 0]);
  server.receive(Buffer.concat([Buffer.from([0x88, 0x82]), mask, Buffer.from([0x03, 0xe8])]));
  await ended;
  assert.deepEqual(toClient.bytes().subarray(0, 4), Buffer.from([0x88, 2, 0x03, 0xe8]));
});

const violations: Array<[string, 'client' | 'server', Buffer]> = [
  ['a text frame', 'server', Buffer.from([0x81, 0x81, 0, 0, 0, 0, 0x41])],
  ['a reserved bit', 'server', Buffer.from([0xc2, 0x81, 0, 0, 0, 0, 0x41])],
  ['an unmasked client frame', 'server', Buffer.from([0x82, 0x01, 0x41])],
  ['a masked server frame', 'client', Buffer.from([0x82, 0x81, 0, 0, 0, 0, 0x41])],
  ['an oversized ping', 'server', Buffer.from([0x89, 0xfe, 0x00, 0x7e, 0, 0, 0, 0])],
  ['a continuation outside a message', 'server', Buffer.from([0x80, 0x81, 0, 0, 0, 0, 0x41])],
  ['a 2^32-byte frame', 'server', Buffer.from([0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])],
];
for (const [what, role, bytes] of violations) {
  test(`${what} fails the stream (1002)`, async () => {
    const socket = new FakeSocket();
    const stream = new WebSocketStream(socket, { role });
    stream.on('data', () => undefined);
    const failed = new Promise<unknown>((resolve) => stream.once('error', resolve));
    stream.receive(bytes);
    const err = await failed;
    assert.ok(isFacadeError(err, 'WEBSOCKET_INVALID'), String(err));
    const close = socket.bytes();
    assert.equal(close[0], 0x88, 'a close frame went out');
    const body = role === 'client' ? close.subarray(6, 8) : close.subarray(2, 4);
    if (role === 'server') assert.equal(body.readUInt16BE(0), 1002);
  });
}

test('backpressure: a reader that stops pauses the socket, and resumes it', async () => {
  const socket = new PassThrough();
  const stream = new WebSocketStream(socket, { role: 'client' });
  // Nobody reads `stream`: its buffer fills past the high-water mark.
  stream.receive(Buffer.concat([Buffer.from([0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]), Buffer.alloc(65536)]));
  assert.ok(socket.isPaused(), 'the socket is paused while the reader does not read');
  stream.on('data', () => undefined);
  await tick();
  assert.ok(!socket.isPaused());
});
