// Connection exhaustion against the real front (site + front door + acceptor, as the server wires it), on
// loopback: TCP connections that never finish a TLS handshake are destroyed at the handshake deadline,
// whatever they send; the total and per-address limits close the connection beyond them without a byte;
// and close() does not wait for connections nobody is serving yet. Timeouts are shortened through the
// front's options so the whole file runs in seconds.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { createLogger } from '../../src/core/log.js';
import { addressKey, ConnectionGuard } from '../../src/front/connection-guard.js';
import { createFront, type Front, type FrontOptions } from '../../src/front/front.js';
import { siteConnectionGuard } from '../../src/front/site.js';
import { makeTestCertificate } from '../helpers/tls-fixture.js';

const TUNNEL_PATH = '/c0nnLim/connect';
/** The start of a TLS 1.2 ClientHello record that announces 512 bytes and never delivers them. */
const PARTIAL_CLIENT_HELLO = Buffer.from('160301020001000001fc0303', 'hex');

let workDir: string;
let certificate: { key: string; cert: string };

before(async () => {
  workDir = mkdtempSync(path.join(os.tmpdir(), 'facade-connections-'));
  const { key, cert } = await makeTestCertificate(workDir, ['localhost']);
  certificate = { key, cert };
});

after(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

type Limits = Pick<
  FrontOptions,
  'maxConnections' | 'maxConnectionsPerAddress' | 'handshakeTimeoutMs' | 'closeGraceMs'
>;

async function startFront(limits: Limits): Promise<{ front: Front; port: number }> {
  const front = await createFront({
    tls: certificate,
    tunnelPath: TUNNEL_PATH,
    authenticate: () => null,
    host: { attach: (stream) => stream.destroy() },
    logger: createLogger({ level: 'silent' }),
    ...limits,
  });
  const port = await front.listen('127.0.0.1', 0);
  return { front, port };
}

interface RawConnection {
  readonly socket: net.Socket;
  /** ms after the connect() call at which the socket closed, or null while open. */
  closedAfter(): number | null;
  readonly closed: Promise<void>;
  /** Bytes the server sent. */
  received(): number;
}

/** A TCP connection that sends what `send` says (nothing by default) and records when it is closed. */
function rawConnect(
  port: number,
  options: { localAddress?: string; send?: Buffer; dripMs?: number } = {},
): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let closedAt: number | null = null;
    let received = 0;
    let drip: NodeJS.Timeout | undefined;
    const socket = net.connect({
      port,
      host: '127.0.0.1',
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
    });
    const closed = new Promise<void>((done) => {
      socket.on('close', () => {
        closedAt = Date.now() - started;
        if (drip !== undefined) clearInterval(drip);
        done();
      });
    });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      // A reset is one way a server closes; anything before the connect is a failed test setup.
      if (!socket.connecting) return;
      reject(err);
    });
    socket.once('connect', () => {
      socket.on('error', () => undefined);
      if (options.send !== undefined) socket.write(options.send);
      if (options.dripMs !== undefined) {
        let offset = 0;
        drip = setInterval(() => {
          if (!socket.destroyed) socket.write(PARTIAL_CLIENT_HELLO.subarray(offset % 12, (offset % 12) + 1));
          offset++;
        }, options.dripMs);
      }
      resolve({ socket, closedAfter: () => closedAt, closed, received: () => received });
    });
  });
}

/** A TLS connection (ALPN http/1.1) whose handshake finished; resolves at secureConnect. */
function tlsConnect(port: number, localAddress?: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      port,
      host: '127.0.0.1',
      servername: 'localhost',
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
      ...(localAddress === undefined ? {} : { localAddress }),
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Sends one request on a finished TLS connection and resolves with the status line of the answer. */
function statusLine(socket: tls.TLSSocket, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n');
      if (end !== -1) resolve(text.slice(0, end));
    });
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`closed before an answer: ${JSON.stringify(text)}`)));
    socket.write(request);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves after `ms` without keeping the process alive (for races). */
function deadline(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** close(), bounded: a regression must fail its test, not hang the file. */
async function closeWithin(front: Front, ms: number): Promise<void> {
  await Promise.race([front.close(), deadline(ms)]);
}

/** Waits until `all` have closed or `ms` passed. */
async function settle(all: readonly RawConnection[], ms: number): Promise<void> {
  await Promise.race([Promise.all(all.map((c) => c.closed)), deadline(ms)]);
}

describe('stalled TLS handshakes', () => {
  test('300 silent connections, partial and drip-fed ClientHellos are all destroyed at the deadline', async (t) => {
    const handshakeTimeoutMs = 1_000;
    const { front, port } = await startFront({ handshakeTimeoutMs, maxConnectionsPerAddress: 1_000 });
    const connections: RawConnection[] = [];
    t.after(async () => {
      for (const c of connections) c.socket.destroy();
      await closeWithin(front, 3_000);
    });
    for (let i = 0; i < 300; i++) connections.push(await rawConnect(port));
    for (let i = 0; i < 10; i++) connections.push(await rawConnect(port, { send: PARTIAL_CLIENT_HELLO }));
    // One byte every 200 ms: Node's own handshake timer (an idle timer) would never fire.
    for (let i = 0; i < 5; i++) connections.push(await rawConnect(port, { dripMs: 200 }));
    // A connection that finished its handshake is not touched by the deadline.
    const finished = await tlsConnect(port);
    t.after(() => finished.destroy());
    let finishedClosed = false;
    finished.on('close', () => {
      finishedClosed = true;
    });

    await settle(connections, handshakeTimeoutMs + 2_000);
    const open = connections.filter((c) => c.closedAfter() === null).length;
    assert.equal(
      open,
      0,
      `${open} of ${connections.length} stalled connections still open after the deadline`,
    );
    const earliest = Math.min(...connections.map((c) => c.closedAfter() ?? 0));
    assert.ok(earliest >= handshakeTimeoutMs - 400, `closed after ${earliest} ms, before the deadline`);
    assert.ok(
      connections.every((c) => c.received() === 0),
      'a stalled handshake is closed without a byte',
    );
    assert.equal(finishedClosed, false, 'a finished handshake outlives the handshake deadline');
    await sleep(100); // the server sees the last closes a moment after the client
    assert.equal(siteConnectionGuard(front.app)?.size, 1, 'only the finished connection is still counted');
  });
});

describe('connection limits', () => {
  test('the connection beyond the per-address limit is closed at once; another address still gets in', async (t) => {
    const perAddress = 5;
    const { front, port } = await startFront({ maxConnectionsPerAddress: perAddress });
    const connections: RawConnection[] = [];
    const sockets: net.Socket[] = [];
    t.after(async () => {
      for (const c of connections) c.socket.destroy();
      for (const s of sockets) s.destroy();
      await closeWithin(front, 3_000);
    });
    for (let i = 0; i < perAddress; i++) connections.push(await rawConnect(port));
    const refused = await rawConnect(port);
    connections.push(refused);
    await settle([refused], 1_000);
    assert.notEqual(
      refused.closedAfter(),
      null,
      `connection ${perAddress + 1} from one address was admitted`,
    );
    assert.equal(refused.received(), 0, 'refused without a byte');
    assert.ok(
      connections.slice(0, perAddress).every((c) => c.closedAfter() === null),
      'the first connections stay',
    );

    // 127.0.0.2 is loopback too, and a different source address: it gets the site.
    const other = await tlsConnect(port, '127.0.0.2');
    sockets.push(other);
    assert.match(await statusLine(other, 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'), /^HTTP\/1\.1 200 /);

    // A closed connection frees its place, and the count does not outlive the connections.
    const first = connections[0] as RawConnection;
    first.socket.destroy();
    await first.closed;
    await sleep(50);
    const again = await rawConnect(port);
    connections.push(again);
    await settle([again], 500);
    assert.equal(again.closedAfter(), null, 'a freed place is given again');
    for (const c of connections) c.socket.destroy();
    other.destroy();
    await Promise.all(connections.map((c) => c.closed));
    await sleep(100);
    assert.equal(
      siteConnectionGuard(front.app)?.addresses,
      0,
      'no address is remembered without connections',
    );
  });

  test('the connection beyond the total limit is closed at once', async (t) => {
    const { front, port } = await startFront({ maxConnections: 4 });
    const connections: RawConnection[] = [];
    t.after(async () => {
      for (const c of connections) c.socket.destroy();
      await closeWithin(front, 3_000);
    });
    for (let i = 0; i < 4; i++)
      connections.push(await rawConnect(port, { localAddress: `127.0.1.${i + 1}` }));
    const refused = await rawConnect(port, { localAddress: '127.0.1.9' });
    await settle([refused], 1_000);
    assert.notEqual(refused.closedAfter(), null, 'connection 5 was admitted');
    assert.equal(refused.received(), 0);
    assert.ok(connections.every((c) => c.closedAfter() === null));
  });
});

describe('accepted tunnels and the total limit', () => {
  test('a released connection (an accepted tunnel) no longer counts: a full house of tunnels leaves the site open', async (t) => {
    const guard = new ConnectionGuard({
      maxConnections: 2,
      maxConnectionsPerAddress: 64,
      handshakeTimeoutMs: 0,
      closeGraceMs: 100,
    });
    const accepted: net.Socket[] = [];
    const server = net.createServer((socket) => accepted.push(socket));
    guard.install(server, false);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const connections: RawConnection[] = [];
    t.after(async () => {
      for (const c of connections) c.socket.destroy();
      guard.close();
      await new Promise((resolve) => server.close(resolve));
    });
    connections.push(await rawConnect(port), await rawConnect(port));
    await sleep(50);
    const refused = await rawConnect(port);
    connections.push(refused);
    await settle([refused], 500);
    assert.notEqual(refused.closedAfter(), null, 'the third connection is over the total');
    // The first one becomes a tunnel: released, it frees its place for the website.
    guard.release(accepted[0] as net.Socket);
    const admitted = await rawConnect(port);
    connections.push(admitted);
    await settle([admitted], 500);
    assert.equal(admitted.closedAfter(), null, 'admitted once the tunnel no longer counts');
    assert.equal(guard.size, 3, 'the tunnel is still a connection the guard ends on close()');
  });
});

describe('address keys of the per-address limit', () => {
  test('IPv4 (also IPv4-mapped) as is, IPv6 by its /64', () => {
    assert.equal(addressKey('203.0.113.7'), '203.0.113.7');
    assert.equal(addressKey('::ffff:203.0.113.7'), '203.0.113.7');
    assert.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8:1:2:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:0DB8:0001:0002::9'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(addressKey('::1'), '0:0:0:0::/64');
    assert.equal(addressKey(undefined), undefined);
  });
});

describe('TLS settings', () => {
  test('a renewed certificate keeps TLS 1.2 to AEAD suites', async (t) => {
    const { front, port } = await startFront({});
    t.after(() => closeWithin(front, 3_000));
    // setSecureContext resets whatever it is not given: the front must pass the TLS settings again.
    front.setCertificate(certificate);
    const connect = (ciphers: string): Promise<string | undefined> =>
      new Promise((resolve, reject) => {
        const socket = tls.connect({
          port,
          host: '127.0.0.1',
          servername: 'localhost',
          rejectUnauthorized: false,
          maxVersion: 'TLSv1.2',
          ciphers,
        });
        socket.once('secureConnect', () => {
          resolve(socket.getCipher().standardName);
          socket.destroy();
        });
        socket.once('error', (err) => {
          socket.destroy();
          reject(err);
        });
      });
    await assert.rejects(connect('ECDHE-RSA-AES128-SHA'));
    assert.equal(await connect('ECDHE-RSA-AES128-GCM-SHA256'), 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256');
  });
});

describe('close()', () => {
  test('with 300 stalled handshakes and connections held by the front door, it takes under 2 s', async (t) => {
    // Default handshake deadline (60 s): close must not wait for it.
    const { front, port } = await startFront({ maxConnectionsPerAddress: 1_000, closeGraceMs: 500 });
    const connections: RawConnection[] = [];
    const sockets: tls.TLSSocket[] = [];
    let closed = false;
    t.after(async () => {
      for (const c of connections) c.socket.destroy();
      for (const s of sockets) s.destroy();
      if (!closed) await closeWithin(front, 3_000);
    });
    for (let i = 0; i < 300; i++) connections.push(await rawConnect(port));
    for (let i = 0; i < 5; i++) connections.push(await rawConnect(port, { send: PARTIAL_CLIENT_HELLO }));
    // Held by the front door: nothing sent yet, and a head that can still be the tunnel's.
    sockets.push(await tlsConnect(port));
    const partial = await tlsConnect(port);
    partial.write(`GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: localhost\r\n`);
    sockets.push(partial);
    // Held by the site: a slow head on another path (Node would wait up to its headers timeout).
    const slow = await tlsConnect(port);
    slow.write('GET / HTTP/1.1\r\nHost: localhost\r\n');
    sockets.push(slow);
    await sleep(100);

    const started = Date.now();
    const closing = front.close().then(() => {
      closed = true;
    });
    await Promise.race([closing, deadline(5_000)]);
    const took = Date.now() - started;
    t.diagnostic(`close() took ${took} ms`);
    assert.ok(closed, `close() still waiting after ${took} ms`);
    assert.ok(took < 2_000, `close() took ${took} ms`);
    await settle(connections, 1_000);
    assert.equal(connections.filter((c) => c.closedAfter() === null).length, 0);
  });
});
