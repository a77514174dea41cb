// A port bound before it is served (src/server/bound-port.ts): while nothing serves it, a connection is
// reset without a byte read; after handOver() the real server serves it, and closes it.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { BoundPort } from '../../src/server/bound-port.js';

function roundTrip(port: number, request: string): Promise<{ data: string; error?: string }> {
  return new Promise((resolve) => {
    const socket: Socket = connect(port, '127.0.0.1', () => socket.write(request));
    let data = '';
    socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')));
    socket.on('error', (err: NodeJS.ErrnoException) => resolve({ data, error: err.code ?? err.message }));
    socket.on('close', () => resolve({ data }));
  });
}

test('before handOver a connection is reset unanswered; after it the real server answers', async () => {
  const bound = await BoundPort.bind('127.0.0.1', 0);
  assert.ok(bound.port > 0);
  const early = await roundTrip(bound.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal(early.data, '');
  assert.equal(early.error, 'ECONNRESET');

  let served = 0;
  const server = createServer((_req, res) => {
    served += 1;
    res.end('hello');
  });
  await new Promise<void>((resolve) => server.listen(bound.handOver(), () => resolve()));
  const address = server.address();
  assert.ok(typeof address === 'object' && address !== null && address.port === bound.port);
  const late = await roundTrip(bound.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(late.data, /^HTTP\/1\.1 200 [\s\S]*hello$/);
  assert.equal(served, 1, 'only the connection after the hand-over reached the server');
  assert.throws(() => bound.handOver());
  await bound.close(); // does nothing now: the server owns the socket
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const closed = await roundTrip(bound.port, 'x');
  assert.equal(closed.error, 'ECONNREFUSED');
});

test('close() without a hand-over frees the port', async () => {
  const bound = await BoundPort.bind('127.0.0.1', 0);
  const port = bound.port;
  await bound.close();
  await bound.close();
  const again = await BoundPort.bind('127.0.0.1', port);
  await again.close();
});
