// The whole tunnel without root: the server's own front (decoy site, front door, upgrade acceptor) over
// TLS with a self-signed certificate, the real authenticator over a real users file, a TunnelEngine on a
// MemoryTun; and a TunnelClient on a MemoryTun whose network configuration is only recorded. What one
// MemoryTun is given comes out of the other.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createTcpServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { type TestContext, test } from 'node:test';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import { pino } from 'pino';
import { loadOrCreateSelfSigned } from '../../src/certs/self-signed.js';
import { type ClientNetworkLike, TunnelClient } from '../../src/client/client.js';
import { connectTunnel } from '../../src/client/connect.js';
import type { ClientConfig, ClientTransport } from '../../src/config/schema.js';
import { createLogger, type Logger } from '../../src/core/log.js';
import { TunnelEngine } from '../../src/engine/engine.js';
import { AddressPool } from '../../src/engine/pool.js';
import { createFront } from '../../src/front/front.js';
import { MemoryTun } from '../../src/net/memory-tun.js';
import { type ConfigMessage, encodeControlFrame } from '../../src/protocol/control.js';
import { deriveUserKey } from '../../src/protocol/credentials.js';
import { OFFLOAD_HEADER_SIZE } from '../../src/protocol/frame.js';
import type { TransportName } from '../../src/protocol/handshake.js';
import { createAuthenticator } from '../../src/users/authenticator.js';
import { UsersFile } from '../../src/users/users-file.js';
import { echoReply } from '../helpers/icmp.js';
import { icmpEchoRequest4, udp4 } from '../helpers/packets.js';
import { within } from '../helpers/wait.js';

const logger = createLogger({ level: 'silent' });

const TUNNEL_PATH = '/k2b9x7/connect';
const USER = 'alice';
const PASSWORD = 'correct horse battery staple';
const SERVER_V4 = '198.18.4.1';
const CLIENT_V4 = '198.18.4.2';

/** "Checksum already verified" (DATA_VALID): offload metadata any IP packet may carry, ICMP included. */
const VERIFIED_BYTES = Buffer.from([2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

/** The client's network configuration, recorded instead of applied. */
class RecordingNetwork implements ClientNetworkLike {
  readonly applied: ConfigMessage[] = [];
  undos = 0;

  constructor(
    readonly tunName: string,
    private readonly onApply: (config: ConfigMessage) => void,
  ) {}

  async apply(config: ConfigMessage): Promise<string[]> {
    this.applied.push(config);
    this.onApply(config);
    return config.routes.map((r) => `${r.address}/${r.prefix}`);
  }

  async undo(): Promise<void> {
    this.undos++;
  }
}

interface Stack {
  readonly client: TunnelClient;
  readonly serverTun: MemoryTun;
  readonly engine: TunnelEngine;
  /** The client's TUNs as it opened them (one, unless the server's offload setting changed). */
  readonly clientTuns: MemoryTun[];
  readonly networks: RecordingNetwork[];
  /** The first CONFIG the client applied (it opens its TUN and network on that CONFIG). */
  readonly configured: Promise<ConfigMessage>;
  /** Streams the acceptor handed to the engine. */
  readonly attached: Duplex[];
  readonly fatal: Error[];
  /** The client's configuration (its URL has the server's port). */
  readonly config: ClientConfig;
  /** The server's front, for requests made by hand. */
  readonly port: number;
}

/** Server and client on 127.0.0.1; the client is started with `password` (the right one by default). */
async function startStack(
  t: TestContext,
  options: {
    offload: boolean;
    password?: string;
    clientLogger?: Logger;
    plaintext?: boolean;
    transport?: ClientTransport;
  },
): Promise<Stack> {
  const dir = await mkdtemp(join(tmpdir(), 'facade-stack-'));
  const closers: (() => unknown)[] = [() => rm(dir, { recursive: true, force: true })];
  // Last opened, first closed: the client, then the engine's sessions, then the site (its close waits
  // for every connection, tunnels included), the pool, the TUNs.
  t.after(async () => {
    for (const close of closers.reverse()) await close();
  });

  const certificate = await loadOrCreateSelfSigned(dir, { names: ['localhost'] });
  const users = await UsersFile.load(join(dir, 'users.json'), { allowMissing: true });
  await users.add(USER, PASSWORD, TUNNEL_PATH);
  await users.save();

  const pool = new AddressPool({
    ipv4: '198.18.4.0/24',
    ipv6: 'fd00:18:4::/64',
    statePath: join(dir, 'leases.json'),
  });
  closers.push(() => pool.close());
  const serverTun = new MemoryTun({ name: 'mem-s0', vnetHdr: options.offload });
  closers.push(() => serverTun.close());
  const fatal: Error[] = [];
  const engine = new TunnelEngine({
    tun: serverTun,
    pool,
    logger,
    mtu: 1400,
    keepaliveMs: 0,
    clientToClient: false,
    routes: [],
    dns: [],
    dnsDomains: [],
    staticAddresses: () => undefined,
    onFatal: (err) => fatal.push(err),
  });
  const attached: Duplex[] = [];
  const front = await createFront({
    ...(options.plaintext === true ? {} : { tls: { key: certificate.key, cert: certificate.cert } }),
    tunnelPath: TUNNEL_PATH,
    authenticate: createAuthenticator(users),
    host: {
      attach(stream, identity, initialBytes, meta) {
        attached.push(stream);
        engine.attach(stream, identity, initialBytes, meta);
      },
    },
    logger,
  });
  closers.push(() => front.close());
  closers.push(() => engine.close());
  const port = await front.listen('127.0.0.1', 0);

  const passwordFile = join(dir, 'password');
  await writeFile(passwordFile, `${options.password ?? PASSWORD}\n`, { mode: 0o600 });
  const config: ClientConfig = {
    url: new URL(`${options.plaintext === true ? 'http' : 'https'}://127.0.0.1:${port}${TUNNEL_PATH}`),
    user: USER,
    passwordFile,
    pin: certificate.fingerprint,
    fullTunnel: false,
    plaintext: options.plaintext === true,
    tunName: 'mem-c0',
    keepaliveMs: 0,
    dns: false,
    offload: options.offload,
    ...(options.transport === undefined ? {} : { transport: options.transport }),
    logLevel: 'silent',
  };
  const clientTuns: MemoryTun[] = [];
  const networks: RecordingNetwork[] = [];
  let onApply: (config: ConfigMessage) => void = () => undefined;
  const configured = new Promise<ConfigMessage>((resolve) => {
    onApply = resolve;
  });
  const client = new TunnelClient({
    config,
    logger: options.clientLogger ?? logger,
    openTun: ({ vnetHdr }) => {
      const tun = new MemoryTun({ name: config.tunName, vnetHdr });
      clientTuns.push(tun);
      return tun;
    },
    network: (tunName) => {
      const network = new RecordingNetwork(tunName, onApply);
      networks.push(network);
      return network;
    },
  });
  closers.push(() => client.stop());
  await client.start();
  return { client, serverTun, engine, clientTuns, networks, configured, attached, fatal, config, port };
}

/** The IP packet of a packet written to a TUN, and its virtio header when the TUN has one. */
function split(written: Buffer, vnetHdr: boolean): { header: Buffer | undefined; packet: Buffer } {
  if (!vnetHdr) return { header: undefined, packet: written };
  return { header: written.subarray(0, OFFLOAD_HEADER_SIZE), packet: written.subarray(OFFLOAD_HEADER_SIZE) };
}

/** Each client transport, and the one the server sees it arrive on (auto: h2, which the site offers). */
const TRANSPORTS: ReadonlyArray<readonly [ClientTransport, TransportName]> = [
  ['auto', 'h2'],
  ['upgrade', 'upgrade'],
  ['websocket', 'websocket'],
  ['h2', 'h2'],
];

for (const [transport, arrivesAs] of TRANSPORTS)
  for (const offload of [false, true]) {
    test(`a ping crosses the tunnel both ways, offload ${offload ? 'on' : 'off'}, transport ${transport}`, async (t) => {
      const { client, serverTun, engine, clientTuns, networks, configured, fatal } = await startStack(t, {
        offload,
        transport,
      });
      const config = await within(configured, 'the client to apply CONFIG');
      assert.equal(networks.length, 1);
      assert.deepEqual(networks[0]?.applied, [config]);
      assert.equal(networks[0]?.tunName, 'mem-c0', 'configured for the TUN the client opened');
      assert.deepEqual(config.ipv4, { address: CLIENT_V4, prefix: 24 });
      assert.equal(config.serverIpv4, SERVER_V4);
      assert.equal(config.offload, offload);
      const clientTun = clientTuns[0] as MemoryTun;
      assert.equal(clientTuns.length, 1);
      assert.equal(clientTun.vnetHdr, offload, 'the client TUN follows the server offload setting');
      assert.deepEqual(
        engine.sessions().map((s) => [s.user, s.transport, s.ipv4]),
        [[USER, arrivesAs, CLIENT_V4]],
      );
      assert.equal(client.transport, arrivesAs, 'the client says which transport it uses');

      // Client -> server: what the client's kernel would send into its TUN comes out of the server's.
      const request = icmpEchoRequest4(CLIENT_V4, SERVER_V4, 1);
      clientTun.inject([request], offload ? VERIFIED_BYTES : undefined);
      const [atServer] = await within(serverTun.whenWritten(1), 'the echo request on the server TUN');
      const up = split(atServer as Buffer, offload);
      assert.deepEqual(up.packet, request);
      if (offload) assert.deepEqual(up.header, VERIFIED_BYTES, 'offload metadata crossed with the packet');

      // Server -> client: the server's kernel answers; the reply comes out of the client's TUN.
      const reply = echoReply(up.packet, 0, up.packet.length);
      assert.ok(reply !== null, 'what arrived is an ICMP echo request');
      serverTun.inject([reply], offload ? VERIFIED_BYTES : undefined);
      const [atClient] = await within(clientTun.whenWritten(1), 'the echo reply on the client TUN');
      const down = split(atClient as Buffer, offload);
      assert.deepEqual(down.packet, reply);
      if (offload) assert.deepEqual(down.header, VERIFIED_BYTES, 'offload metadata crossed with the packet');

      assert.equal(client.fatalError, undefined);
      assert.equal(client.noSessionDrops, 0);
      assert.deepEqual(fatal, []);
    });
  }

for (const [transport, arrivesAs] of TRANSPORTS) {
  test(`4 MB each way in 3000 packets arrive whole and in order, transport ${transport}`, async (t) => {
    const { serverTun, clientTuns, configured, engine } = await startStack(t, { offload: false, transport });
    await within(configured, 'the client to apply CONFIG');
    assert.equal(engine.sessions()[0]?.transport, arrivesAs);
    const clientTun = clientTuns[0] as MemoryTun;
    const count = 3000;
    const packets = (from: string, to: string): Buffer[] =>
      Array.from({ length: count }, (_, i) => {
        const payload = Buffer.alloc(1272, i & 0xff);
        payload.writeUInt32BE(i, 0);
        return udp4(from, to, payload);
      });
    const up = packets(CLIENT_V4, SERVER_V4);
    // Injected in batches, as a TUN hands them over: frames straddle WebSocket frames and h2 DATA frames.
    // Paced, a batch at a time: the session's output bound (1 MiB) drops what a burst puts beyond it.
    for (let i = 0; i < count; i += 100) {
      clientTun.inject(up.slice(i, i + 100));
      await within(serverTun.whenWritten(i + 100), 'a batch on the server TUN');
    }
    const atServer = await within(serverTun.whenWritten(count), 'every packet on the server TUN');
    assert.deepEqual(atServer, up);
    const down = packets(SERVER_V4, CLIENT_V4);
    for (let i = 0; i < count; i += 100) {
      serverTun.inject(down.slice(i, i + 100));
      await within(clientTun.whenWritten(i + 100), 'a batch on the client TUN');
    }
    const atClient = await within(clientTun.whenWritten(count), 'every packet on the client TUN');
    assert.deepEqual(atClient, down);
  });
}

test('a wrong password makes the client stop with a fatal error', async (t) => {
  const { client, engine, clientTuns, networks, attached } = await startStack(t, {
    offload: false,
    password: 'not the password at all',
  });
  await within(client.done, 'the client to give up');
  // auto opens an h2 CONNECT stream: the site answers CONNECT as Node's h2 does, 405.
  assert.match(client.fatalError?.message ?? '', /answered HTTP 405 like a website/);
  assert.equal(attached.length, 0, 'the front never handed the connection to the engine');
  assert.equal(engine.sessions().length, 0);
  assert.equal(clientTuns.length, 0, 'no TUN was opened');
  assert.equal(networks.length, 0, 'the network was never touched');
});

test('stop() disconnects, undoes the network configuration and closes the TUN', async (t) => {
  const { client, engine, clientTuns, networks, configured, attached } = await startStack(t, {
    offload: false,
  });
  await within(configured, 'the client to apply CONFIG');
  const serverStream = attached[0] as Duplex;
  const closed = once(serverStream, 'close');
  await client.stop();
  await within(client.done, 'done to settle');
  assert.equal(client.fatalError, undefined);
  assert.equal(networks[0]?.undos, 1);
  assert.equal(clientTuns[0]?.closed, true);
  await within(closed, 'the server side of the tunnel to close');
  assert.equal(engine.sessions().length, 0, 'the engine ended the session');
});

test('a second CONFIG from the server is a protocol error: the client ends that session, applies nothing more', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const clientLogger = pino(
    { level: 'debug' },
    { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  const { networks, configured, attached } = await startStack(t, { offload: false, clientLogger });
  const first = await within(configured, 'the client to apply CONFIG');
  const serverStream = attached[0] as Duplex;
  const closed = once(serverStream, 'close');
  // What a hostile server does seconds later: push more routes.
  serverStream.write(
    encodeControlFrame({
      ...first,
      routes: [...first.routes, { family: 4, address: '198.18.96.0', prefix: 19 }],
    }),
  );
  await within(closed, 'the client to end the session');
  const ended = lines.find((l) => l.msg === 'tunnel closed');
  assert.equal(ended?.reason, 'protocol error');
  assert.equal(ended?.byPeer, false, 'the client ended it, the server did not');
  assert.match(String(ended?.message), /second CONFIG/);
  assert.equal(networks[0]?.applied.length, 1, 'the second CONFIG was not applied');
});

/** The Authorization value of the first request head that arrives; the connection is then answered 404. */
function recordAuthorization(
  socket: import('node:net').Socket,
  onHead: (authorization: string) => void,
): void {
  let head = '';
  socket.on('data', (chunk: Buffer) => {
    head += chunk.toString('latin1');
    if (!head.includes('\r\n\r\n')) return;
    onHead(/^authorization: *(.*?)\r$/im.exec(head)?.[1] ?? '');
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
  });
  socket.on('error', () => undefined);
}

/** Sends an upgrade head with `authorization` on a new connection to the real server; the status line. */
function presentAuthorization(port: number, authorization: string, tls: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls
      ? tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
      : tcpConnect({ host: '127.0.0.1', port });
    socket.once(tls ? 'secureConnect' : 'connect', () =>
      socket.write(
        `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: facade\r\n` +
          `Authorization: ${authorization}\r\n\r\n`,
      ),
    );
    socket.once('data', (chunk: Buffer) => {
      resolve(chunk.toString('latin1').split('\r\n', 1)[0] as string);
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

test('replay over TLS: a credential captured by a server posing as facade opens nothing at the real one', async (t) => {
  const { client, engine, configured, attached, config, port } = await startStack(t, { offload: false });
  await within(configured, 'the real client to connect');
  const before = engine.sessions();
  assert.equal(before.length, 1);

  // The attack of the finding: the client (its user, password and the real tunnel path) is pointed at a
  // TLS server the attacker runs, which records the Authorization header.
  const fakeDir = await mkdtemp(join(tmpdir(), 'facade-posing-'));
  t.after(() => rm(fakeDir, { recursive: true, force: true }));
  const fakeCertificate = await loadOrCreateSelfSigned(fakeDir, { names: ['localhost'] });
  let captured: (authorization: string) => void = () => undefined;
  const header = new Promise<string>((resolve) => {
    captured = resolve;
  });
  const posing = createTlsServer({ key: fakeCertificate.key, cert: fakeCertificate.cert }, (socket) =>
    recordAuthorization(socket, captured),
  );
  posing.listen(0, '127.0.0.1');
  await once(posing, 'listening');
  t.after(() => posing.close());
  const posingPort = (posing.address() as import('node:net').AddressInfo).port;
  const key = await deriveUserKey(TUNNEL_PATH, USER, PASSWORD);
  await assert.rejects(
    connectTunnel(
      {
        ...config,
        url: new URL(`https://127.0.0.1:${posingPort}${TUNNEL_PATH}`),
        pin: fakeCertificate.fingerprint,
      },
      key,
    ),
    /answered HTTP 404/,
  );
  const authorization = await within(header, 'the posing server to record the credential');
  assert.match(authorization, /^Basic /);

  // Presented at once to the real server, on a new TLS connection: the site's 404, no tunnel.
  assert.equal(await presentAuthorization(port, authorization, true), 'HTTP/1.1 404 Not Found');
  assert.equal(await presentAuthorization(port, authorization, true), 'HTTP/1.1 404 Not Found');
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(attached.length, 1, 'only the real client was ever attached');
  assert.deepEqual(
    engine.sessions().map((s) => [s.user, s.remote, s.since]),
    before.map((s) => [s.user, s.remote, s.since]),
    'the real session was not replaced',
  );
  assert.equal(client.fatalError, undefined);
});

test('replay without TLS at facade: a credential sniffed off the wire is refused (nonce); the session stays', async (t) => {
  const { client, engine, configured, attached, config, port } = await startStack(t, {
    offload: false,
    plaintext: true,
  });
  await within(configured, 'the client to connect');
  await client.stop();
  await within(client.done, 'the first client to stop');

  // A relay on the path records what the real client sends, and passes everything on.
  let captured: (authorization: string) => void = () => undefined;
  const header = new Promise<string>((resolve) => {
    captured = resolve;
  });
  const relay = createTcpServer((inbound) => {
    const outbound = tcpConnect({ host: '127.0.0.1', port });
    let head = '';
    inbound.on('data', (chunk: Buffer) => {
      if (!head.includes('\r\n\r\n')) {
        head += chunk.toString('latin1');
        if (head.includes('\r\n\r\n')) captured(/^authorization: *(.*?)\r$/im.exec(head)?.[1] ?? '');
      }
    });
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
  });
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  t.after(() => new Promise((resolve) => relay.close(resolve)));
  const relayPort = (relay.address() as import('node:net').AddressInfo).port;
  const viaRelay = new TunnelClient({
    config: { ...config, url: new URL(`http://127.0.0.1:${relayPort}${TUNNEL_PATH}`) },
    logger,
    openTun: ({ vnetHdr }) => new MemoryTun({ name: 'mem-c1', vnetHdr }),
    network: (tunName) => new RecordingNetwork(tunName, () => undefined),
  });
  t.after(() => viaRelay.stop());
  await viaRelay.start();
  const authorization = await within(header, 'the relay to see the credential');
  await within(
    (async () => {
      while (engine.sessions().length !== 1) await new Promise((resolve) => setTimeout(resolve, 20));
    })(),
    'the session through the relay',
  );
  const before = engine.sessions();

  // The sniffed credential, presented again (within the time window): refused, its nonce is spent.
  assert.equal(await presentAuthorization(port, authorization, false), 'HTTP/1.1 404 Not Found');
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(attached.length, 2, 'the first client and the one through the relay, nobody else');
  assert.deepEqual(
    engine.sessions().map((s) => [s.user, s.remote, s.since]),
    before.map((s) => [s.user, s.remote, s.since]),
    'the session was not replaced',
  );
  assert.equal(viaRelay.fatalError, undefined);
});
