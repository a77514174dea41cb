// The site's head deadline for connections the front door held (src/front/handover-deadlines.ts), on a plain
// node:http server behind the front door over loopback, with Node's timeouts shortened: a held connection is
// closed at the deadline a plain server would have given it, and one whose clock restarted (it sent a request
// after the handover) or whose request completed is left to Node, open as long as Node keeps it.
// test/probe/timing.test.ts compares the close times with a plain site's.

import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { answerClientError } from '../../src/front/client-error.js';
import { installFrontDoor } from '../../src/front/front-door.js';

const TUNNEL_PATH = '/h4nd/over';
const HEADERS_TIMEOUT_MS = 600;
const CHECK_INTERVAL_MS = 200;
const FIRST_BYTES_WAIT_MS = 100;
const TUNNEL_HEAD_WAIT_MS = 150;

async function startServer(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => res.end('ok'));
  Object.assign(server, {
    headersTimeout: HEADERS_TIMEOUT_MS,
    requestTimeout: 4 * HEADERS_TIMEOUT_MS,
    connectionsCheckingInterval: CHECK_INTERVAL_MS,
  });
  server.on('clientError', answerClientError);
  const door = installFrontDoor(server, 'connection', {
    tunnelPath: TUNNEL_PATH,
    authenticate: () => null,
    accept: () => assert.fail('nothing here is a valid tunnel request'),
    firstBytesWaitMs: FIRST_BYTES_WAIT_MS,
    tunnelHeadWaitMs: TUNNEL_HEAD_WAIT_MS,
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      door.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface Watched {
  readonly socket: net.Socket;
  readonly connectedAt: number;
  received(): string;
  /** ms after connect at which the server closed, or null while open. */
  closedAfter(): number | null;
}

function connect(port: number): Promise<Watched> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    let closedAt: number | null = null;
    const connectedAt = Date.now();
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closedAt = Date.now();
    });
    socket.once('connect', () =>
      resolve({
        socket,
        connectedAt,
        received: () => text,
        closedAfter: () => (closedAt === null ? null : closedAt - connectedAt),
      }),
    );
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Long enough for any deadline counted from the connect to have passed and been checked. */
const PAST_EVERY_DEADLINE_MS = FIRST_BYTES_WAIT_MS + HEADERS_TIMEOUT_MS + 2 * CHECK_INTERVAL_MS + 100;

describe('held connections keep a plain server’s head deadline', () => {
  test('an idle connection gets Node’s 408 within one check of accept + headersTimeout', async (t) => {
    const server = await startServer();
    t.after(() => server.close());
    const idle = await connect(server.port);
    await sleep(PAST_EVERY_DEADLINE_MS);
    assert.equal(idle.received(), 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n');
    const closed = idle.closedAfter();
    assert.ok(closed !== null && closed >= HEADERS_TIMEOUT_MS, `closed after ${closed} ms`);
    assert.ok(closed < HEADERS_TIMEOUT_MS + CHECK_INTERVAL_MS + 50, `closed after ${closed} ms`);
  });

  test('a request sent after the handover restarts the clock and is served; keep-alive stays open', async (t) => {
    const server = await startServer();
    t.after(() => server.close());
    const client = await connect(server.port);
    await sleep(FIRST_BYTES_WAIT_MS + 50);
    client.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await sleep(PAST_EVERY_DEADLINE_MS);
    assert.match(client.received(), /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(client.closedAfter(), null, 'Node keeps an idle keep-alive connection 5 s');
    client.socket.destroy();
  });

  test('a head sent after the handover, never finished, gets its deadline from its own first byte', async (t) => {
    const server = await startServer();
    t.after(() => server.close());
    const client = await connect(server.port);
    await sleep(FIRST_BYTES_WAIT_MS + 2 * CHECK_INTERVAL_MS);
    const firstByteAfter = Date.now() - client.connectedAt;
    client.socket.write('GET / HTTP/1.1\r\n');
    await sleep(PAST_EVERY_DEADLINE_MS);
    const closed = client.closedAfter();
    assert.ok(closed !== null, 'still open');
    assert.ok(closed - firstByteAfter >= HEADERS_TIMEOUT_MS, `closed ${closed - firstByteAfter} ms after it`);
    assert.match(client.received(), /^HTTP\/1\.1 408 /);
  });

  test('a slow head on the tunnel path finished after the hold is served and left open', async (t) => {
    const server = await startServer();
    t.after(() => server.close());
    const client = await connect(server.port);
    client.socket.write(`GET ${TUNNEL_PATH} HTTP/1.1\r\n`);
    await sleep(TUNNEL_HEAD_WAIT_MS + 50);
    client.socket.write('Host: x\r\n\r\n');
    await sleep(PAST_EVERY_DEADLINE_MS);
    assert.match(client.received(), /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(client.closedAfter(), null);
    client.socket.destroy();
  });
});
