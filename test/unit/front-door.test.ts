// The front door's hold on a head that can still be the tunnel's: one overall deadline from the first byte,
// however slowly the rest trickles in (each byte used to restart the timer, so 1 byte every 4.9 s held a
// connection for hours). Over plain TCP on loopback; the "site" is a listener that records the hand-over.

import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { installFrontDoor } from '../../src/front/front-door.js';

const TUNNEL_PATH = '/dr1p/connect';

interface Harness {
  readonly port: number;
  /** ms from the first byte sent to the hand-over to the site, once it happened. */
  handedAfter(): number | null;
  /** Bytes the site got with the hand-over (what the door read, pushed back). */
  handedBytes(): string;
  close(): Promise<void>;
}

async function startDoor(tunnelHeadWaitMs: number): Promise<Harness> {
  const server = net.createServer();
  let handedAt: number | null = null;
  let handedBytes = '';
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket: net.Socket) => {
    // The "site": it records the hand-over and reads what the door pushed back.
    handedAt = Date.now();
    socket.on('data', (chunk: Buffer) => {
      handedBytes += chunk.toString('latin1');
    });
  });
  server.prependListener('connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const door = installFrontDoor(server, 'connection', {
    tunnelPath: TUNNEL_PATH,
    authenticate: () => null,
    accept: () => assert.fail('nothing here is a valid tunnel request'),
    tunnelHeadWaitMs,
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    handedAfter: () => handedAt,
    handedBytes: () => handedBytes,
    async close() {
      door.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('front door', () => {
  test('a drip-fed head on the tunnel path goes to the site at the overall deadline', async (t) => {
    const waitMs = 1_000;
    const door = await startDoor(waitMs);
    const client = net.connect(door.port, '127.0.0.1');
    t.after(async () => {
      client.destroy();
      await door.close();
    });
    await new Promise<void>((resolve) => client.once('connect', () => resolve()));
    const head = `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: localhost\r\nX-Slow: ${'a'.repeat(200)}`;
    const started = Date.now();
    let sent = 0;
    // One byte every 100 ms: every byte keeps the head a possible tunnel request, none completes it.
    client.write(head.slice(0, ++sent));
    const drip = setInterval(() => client.write(head.slice(sent, ++sent)), 100);
    t.after(() => clearInterval(drip));
    while (door.handedAfter() === null && Date.now() - started < 3 * waitMs)
      await new Promise((resolve) => setTimeout(resolve, 20));
    clearInterval(drip);
    const handed = door.handedAfter();
    assert.notEqual(handed, null, `still held by the front door after ${3 * waitMs} ms of dripping`);
    const after = (handed as number) - started;
    assert.ok(after >= waitMs - 50 && after < waitMs + 500, `handed to the site after ${after} ms`);
    // The site got every byte the door had read, in order.
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.ok(head.startsWith(door.handedBytes()) && door.handedBytes().length >= 5, door.handedBytes());
  });

  test('close() destroys the connections it holds', async (t) => {
    const door = await startDoor(60_000);
    const client = net.connect(door.port, '127.0.0.1');
    t.after(() => client.destroy());
    await new Promise<void>((resolve) => client.once('connect', () => resolve()));
    client.write(`GET ${TUNNEL_PATH} HTTP/1.1\r\n`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    client.on('error', () => undefined);
    const started = Date.now();
    await door.close();
    await closed;
    assert.ok(Date.now() - started < 1_000);
    assert.equal(door.handedAfter(), null, 'not handed to the site on the way out');
  });
});
