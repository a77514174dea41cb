// Switching an open socket to reads into one reused buffer (net/socket-reads.ts), on real loopback sockets:
// a server-side TLSSocket made by tls.Server after it was read the usual way (as the front door reads a
// tunnel's upgrade head), and a plain TCP socket. If a Node upgrade renames the internals the switch relies
// on, the first test fails here instead of the server silently going back to a Buffer per read.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { type AddressInfo, connect as netConnect, createServer as netServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect, createServer as tlsServer } from 'node:tls';
import { loadOrCreateSelfSigned } from '../../src/certs/self-signed.js';
import { switchToBufferReads } from '../../src/net/socket-reads.js';

let dir: string;
let cert: { cert: string; key: string };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facade-socket-reads-'));
  const made = await loadOrCreateSelfSigned(dir, { names: ['localhost'] });
  cert = { cert: made.cert, key: made.key };
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Pair {
  server: Socket;
  client: Socket;
  close(): void;
}

async function tlsPair(): Promise<Pair> {
  const listener = tlsServer(cert);
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const accepted = once(listener, 'secureConnection');
  const client = tlsConnect({
    port: (listener.address() as AddressInfo).port,
    host: '127.0.0.1',
    rejectUnauthorized: false,
  });
  await once(client, 'secureConnect');
  const [server] = (await accepted) as [Socket];
  return { server, client, close: () => listener.close() };
}

async function plainPair(): Promise<Pair> {
  const listener = netServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const accepted = once(listener, 'connection');
  const client = netConnect((listener.address() as AddressInfo).port, '127.0.0.1');
  await once(client, 'connect');
  const [server] = (await accepted) as [Socket];
  return { server, client, close: () => listener.close() };
}

/** Reads of `server` the usual way until `head` has arrived, as the front door does; then no listener. */
async function readHead(pair: Pair, head: string): Promise<void> {
  let got = '';
  const onData = (chunk: Buffer): void => {
    got += chunk.toString();
  };
  pair.server.on('data', onData);
  pair.client.write(head);
  while (got.length < head.length) await sleep(5);
  pair.server.removeListener('data', onData);
  assert.equal(got, head);
}

/** Sends `total` bytes of a known pattern in writes of `size`; resolves when all were handed to the socket. */
function sendPattern(socket: Socket, total: number, size: number): void {
  for (let sent = 0; sent < total; sent += size) {
    const chunk = Buffer.alloc(Math.min(size, total - sent));
    for (let i = 0; i < chunk.length; i++) chunk[i] = (sent + i) & 0xff;
    socket.write(chunk);
  }
}

for (const [kind, makePair] of [
  ['TLS', tlsPair],
  ['plain TCP', plainPair],
] as const) {
  test(`${kind}: after the head, every read lands in the one buffer, in order, and the end still comes`, async () => {
    const pair = await makePair();
    try {
      await readHead(pair, 'GET /x HTTP/1.1\r\n\r\n');
      const buffer = Buffer.alloc(64 * 1024);
      let received = 0;
      let reads = 0;
      let outsideBuffer = 0;
      let wrong = -1;
      const reads$ = switchToBufferReads(pair.server, buffer, (chunk) => {
        reads++;
        if (chunk.buffer !== buffer.buffer) outsideBuffer++;
        for (let i = 0; i < chunk.length; i++) {
          if (chunk[i] !== ((received + i) & 0xff) && wrong === -1) wrong = received + i;
        }
        received += chunk.length;
      });
      assert.notEqual(reads$, null, 'this Node allows switching an open socket to buffer reads');
      let dataEvents = 0;
      pair.server.on('data', () => dataEvents++);
      const total = 3 * 1024 * 1024;
      sendPattern(pair.client, total, 40_000);
      const ended = once(pair.server, 'end');
      pair.client.end();
      await ended;
      assert.equal(received, total);
      assert.equal(wrong, -1, 'every byte in order');
      assert.equal(outsideBuffer, 0, 'every read a view of the one buffer');
      assert.equal(dataEvents, 0, 'no data events');
      assert.ok(reads > 1);
    } finally {
      pair.client.destroy();
      pair.server.destroy();
      pair.close();
    }
  });

  test(`${kind}: pause stops the reads until resume`, async () => {
    const pair = await makePair();
    try {
      await readHead(pair, 'x');
      let received = 0;
      const reads = switchToBufferReads(pair.server, Buffer.alloc(16 * 1024), (chunk) => {
        received += chunk.length;
      });
      assert.ok(reads !== null);
      reads.pause();
      sendPattern(pair.client, 256 * 1024, 16 * 1024);
      await sleep(200);
      assert.equal(received, 0, 'nothing read while paused');
      reads.resume();
      for (let i = 0; i < 100 && received < 256 * 1024; i++) await sleep(10);
      assert.equal(received, 256 * 1024);
    } finally {
      pair.client.destroy();
      pair.server.destroy();
      pair.close();
    }
  });
}

test('a socket that still holds unread data is left as it was', async () => {
  const pair = await plainPair();
  try {
    pair.server.pause();
    pair.client.write('pending');
    for (let i = 0; i < 100 && pair.server.readableLength === 0; i++) await sleep(5);
    assert.ok(pair.server.readableLength > 0);
    assert.equal(
      switchToBufferReads(pair.server, Buffer.alloc(1024), () => undefined),
      null,
    );
    const [chunk] = (await once(pair.server.resume(), 'data')) as [Buffer];
    assert.equal(chunk.toString(), 'pending');
  } finally {
    pair.client.destroy();
    pair.server.destroy();
    pair.close();
  }
});
