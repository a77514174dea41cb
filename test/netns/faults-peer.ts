// The attacker's side of test/netns/faults*.test.ts, run inside a test namespace (a socket cannot be
// opened in another namespace from the test process). One JSON line per event on stdout. Modes:
//
//   tunnel HOST PORT PATH USER PASSWORD [no-offload]
//       test/helpers/hostile-client.ts with more levers: a real upgrade with valid credentials (and the
//       offload capability unless no-offload), then stdin lines are commands (JSON):
//         {"op":"send","b64":…}   write these bytes as they are (any frames, or none)
//         {"op":"pause"} / {"op":"resume"}   stop / restart reading the socket
//         {"op":"end"}            FIN        {"op":"rst","b64":…}   write, then reset the TCP connection
//       Prints {"event":"authorization"} (the header it sent), "config", "sent", "disconnect" (reason,
//       message), "refused" (status), "closed". Echo requests are answered; packets are ignored.
//   cycles HOST PORT PATH USER PASSWORD N
//       N upgrades in a row (one scrypt): each waits for CONFIG, then FIN, then the close.
//   raw JSON
//       Opens `count` connections (TLS or plain TCP) to host:port at once, plays `steps` on each and
//       reports, per connection, whether and when it closed, the bytes received and their first line.
//   fake-server PORT KEY CERT
//       A hostile facade server: answers any head with 101 and then sends CONFIG twice.

import { readFileSync } from 'node:fs';
import { type Socket, connect as tcpConnect } from 'node:net';
import { createServer, type TLSSocket, connect as tlsConnect } from 'node:tls';
import { type ConfigMessage, encodeControlFrame } from '../../src/protocol/control.js';
import {
  connectionBinding,
  createAuthorization,
  deriveUserKey,
  passwordFromText,
  type UserKey,
} from '../../src/protocol/credentials.js';
import type { FrameDecoder } from '../../src/protocol/decoder.js';
import { findHeadEnd } from '../../src/protocol/http-head.js';
import { speakTunnel } from '../helpers/tunnel-peer.js';

function say(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Upgraded {
  readonly raw: Socket;
  readonly socket: TLSSocket;
  readonly decoder: FrameDecoder;
  readonly config: Promise<ConfigMessage>;
  readonly closed: Promise<void>;
}

/** A TLS connection over a TCP socket we keep (to reset it), the upgrade sent, frames decoded. */
async function upgrade(
  host: string,
  port: number,
  path: string,
  key: UserKey,
  offload: boolean,
): Promise<Upgraded & { authorization: string }> {
  const raw = tcpConnect({ host, port });
  raw.on('error', () => undefined);
  const socket = tlsConnect({ socket: raw, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
  socket.on('error', (err) => say({ event: 'error', message: err.message }));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  let gotConfig: (config: ConfigMessage) => void = () => undefined;
  const config = new Promise<ConfigMessage>((resolve) => {
    gotConfig = resolve;
  });
  // A fresh credential for this connection, bound to its TLS exporter (credentials.ts, v2).
  const { decoder, authorization } = speakTunnel(
    socket,
    { path, host: `${host}:${port}`, key, offload },
    {
      config: gotConfig,
      disconnect: (reason, message) => say({ event: 'disconnect', reason, message }),
      refused: (status) => say({ event: 'refused', status }),
      decodeError: (err) => say({ event: 'decode-error', message: String(err) }),
    },
  );
  return { raw, socket, decoder, config, closed, authorization };
}

/** The user's key pair; the realm of a v2 credential is the tunnel path. */
function keyOf(path: string, user: string, password: string): Promise<UserKey> {
  return deriveUserKey(path, user, passwordFromText(password));
}

async function tunnelMode(args: string[]): Promise<void> {
  const [host, port, path, user, password, flag] = args as [string, string, string, string, string, string?];
  const up = await upgrade(
    host,
    Number(port),
    path,
    await keyOf(path, user, password),
    flag !== 'no-offload',
  );
  say({ event: 'authorization', value: up.authorization });
  void up.closed.then(() => {
    say({ event: 'closed' });
    process.exit(0);
  });
  void up.config.then((config) => say({ event: 'config', ...config }));
  let sent = 0;
  let pending = '';
  process.stdin.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      const command = JSON.parse(line) as { op: string; b64?: string };
      const bytes = Buffer.from(command.b64 ?? '', 'base64');
      switch (command.op) {
        case 'send':
          up.socket.write(bytes, () => say({ event: 'sent', n: ++sent }));
          break;
        case 'pause':
          up.socket.pause();
          break;
        case 'resume':
          up.socket.resume();
          break;
        case 'end':
          up.socket.end();
          break;
        case 'rst':
          up.socket.write(bytes, () => {
            say({ event: 'sent', n: ++sent });
            setTimeout(() => up.raw.resetAndDestroy(), 100);
          });
          break;
        default:
          say({ event: 'error', message: `unknown op ${command.op}` });
      }
    }
  });
}

async function cyclesMode(args: string[]): Promise<void> {
  const [host, port, path, user, password, n] = args as [string, string, string, string, string, string];
  const key = await keyOf(path, user, password);
  let done = 0;
  for (let i = 0; i < Number(n); i++) {
    const up = await upgrade(host, Number(port), path, key, true);
    const config = await Promise.race([up.config, sleep(10_000).then(() => undefined)]);
    if (config === undefined) {
      say({ event: 'error', message: `cycle ${i}: no CONFIG` });
      up.socket.destroy();
      continue;
    }
    up.socket.end();
    await Promise.race([up.closed, sleep(5_000)]);
    up.socket.destroy();
    done++;
  }
  say({ event: 'cycles', done });
  process.exit(0);
}

interface Step {
  /** Bytes to write (base64). */
  readonly send?: string;
  /** Text to write; {{AUTH}} becomes a credential made for this connection (needs RawOptions.auth). */
  readonly sendText?: string;
  /** The same, dripped one byte at a time, `everyMs` apart. */
  readonly dripText?: string;
  /** Write these bytes one at a time, `everyMs` apart. */
  readonly drip?: string;
  readonly everyMs?: number;
  /** Then wait this long. */
  readonly waitMs?: number;
  /** Half-close (FIN) our side. */
  readonly end?: boolean;
}

interface RawOptions {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly count?: number;
  readonly steps?: readonly Step[];
  /** After the steps: report once the server closed, or after this long (default 2000). */
  readonly holdMs?: number;
  /** A user whose credential {{AUTH}} stands for. */
  readonly auth?: { readonly path: string; readonly user: string; readonly password: string };
  readonly ciphers?: string;
  readonly minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  readonly maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
}

/** What `raw` mode reports for each connection (faults-fixture.ts reads it back). */
export interface RawResult {
  closed: boolean;
  closedAfterMs: number | null;
  bytes: number;
  firstLine: string;
  error?: string;
  cipher?: string;
  protocol?: string | null;
}

async function rawOne(options: RawOptions, key: UserKey | undefined): Promise<RawResult> {
  const started = Date.now();
  const result: RawResult = { closed: false, closedAfterMs: null, bytes: 0, firstLine: '' };
  const chunks: Buffer[] = [];
  let socket: Socket;
  if (options.tls) {
    const secure = tlsConnect({
      host: options.host,
      port: options.port,
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
      ...(options.ciphers === undefined ? {} : { ciphers: options.ciphers }),
      ...(options.minVersion === undefined ? {} : { minVersion: options.minVersion }),
      ...(options.maxVersion === undefined ? {} : { maxVersion: options.maxVersion }),
    });
    socket = secure;
    const ok = await new Promise<boolean>((resolve) => {
      secure.once('secureConnect', () => resolve(true));
      secure.once('error', (err) => {
        result.error = err.message;
        resolve(false);
      });
    });
    if (!ok) {
      secure.destroy();
      return { ...result, closed: true, closedAfterMs: Date.now() - started };
    }
    result.cipher = secure.getCipher().standardName;
    result.protocol = secure.getProtocol();
  } else {
    socket = tcpConnect({ host: options.host, port: options.port });
    const ok = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(true));
      socket.once('error', (err) => {
        result.error = err.message;
        resolve(false);
      });
    });
    if (!ok) return { ...result, closed: true, closedAfterMs: Date.now() - started };
  }
  socket.on('error', (err) => {
    result.error ??= err.message;
  });
  socket.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    result.bytes += chunk.length;
  });
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      result.closed = true;
      result.closedAfterMs = Date.now() - started;
      resolve();
    }),
  );
  const withAuth = (text: string): Buffer => {
    if (!text.includes('{{AUTH}}')) return Buffer.from(text, 'latin1');
    if (key === undefined) throw new Error('{{AUTH}} without options.auth');
    return Buffer.from(
      text.replace('{{AUTH}}', createAuthorization(key, connectionBinding(socket))),
      'latin1',
    );
  };
  for (const step of options.steps ?? []) {
    if (socket.destroyed) break;
    if (step.send !== undefined) socket.write(Buffer.from(step.send, 'base64'));
    if (step.sendText !== undefined) socket.write(withAuth(step.sendText));
    const drip =
      step.drip !== undefined
        ? Buffer.from(step.drip, 'base64')
        : step.dripText !== undefined
          ? withAuth(step.dripText)
          : undefined;
    if (drip !== undefined) {
      const bytes = drip;
      for (let i = 0; i < bytes.length && !socket.destroyed; i++) {
        socket.write(bytes.subarray(i, i + 1));
        await sleep(step.everyMs ?? 100);
      }
    }
    if (step.end === true) socket.end();
    if (step.waitMs !== undefined) await sleep(step.waitMs);
  }
  await Promise.race([closed, sleep(options.holdMs ?? 2_000)]);
  const text = Buffer.concat(chunks).toString('latin1');
  result.firstLine = text.slice(0, Math.max(0, text.indexOf('\r\n'))) || text.slice(0, 80);
  // A copy: destroying the socket below fires 'close', which must not count as the server closing it.
  const report = { ...result };
  socket.destroy();
  return report;
}

async function rawMode(args: string[]): Promise<void> {
  const options = JSON.parse(args[0] as string) as RawOptions;
  const key =
    options.auth === undefined
      ? undefined
      : await keyOf(options.auth.path, options.auth.user, options.auth.password);
  const all: Promise<RawResult>[] = [];
  for (let i = 0; i < (options.count ?? 1); i++) {
    all.push(rawOne(options, key));
    // Connections in a burst, but each accepted before the next (the per-address count is in order).
    await sleep(5);
  }
  say({ event: 'raw', results: await Promise.all(all) });
  process.exit(0);
}

function fakeServerMode(args: string[]): void {
  const [port, keyFile, certFile] = args as [string, string, string];
  const config: ConfigMessage = {
    type: 'config',
    ipv4: { address: '198.18.255.2', prefix: 24 },
    serverIpv4: '198.18.255.1',
    mtu: 1400,
    routes: [],
    dns: [],
    keepaliveMs: 1000,
    offload: false,
  };
  const server = createServer({ key: readFileSync(keyFile), cert: readFileSync(certFile) }, (socket) => {
    socket.on('error', () => undefined);
    let head = Buffer.alloc(0);
    let served = false;
    socket.on('data', (chunk: Buffer) => {
      if (served) return;
      head = Buffer.concat([head, chunk]);
      if (findHeadEnd(head) < 0) return;
      served = true;
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: facade\r\n\r\n');
      socket.write(encodeControlFrame(config));
      // The second CONFIG: more routes, seconds later, as a hostile server would.
      setTimeout(() => {
        if (socket.writable)
          socket.write(
            encodeControlFrame({ ...config, routes: [{ family: 4, address: '198.18.254.0', prefix: 24 }] }),
          );
      }, 300);
      say({ event: 'served' });
    });
  });
  server.listen(Number(port), '0.0.0.0', () => say({ event: 'listening' }));
}

const [mode, ...rest] = process.argv.slice(2) as [string, ...string[]];
switch (mode) {
  case 'tunnel':
    await tunnelMode(rest);
    break;
  case 'cycles':
    await cyclesMode(rest);
    break;
  case 'raw':
    await rawMode(rest);
    break;
  case 'fake-server':
    fakeServerMode(rest);
    break;
  default:
    say({ event: 'error', message: `unknown mode ${mode}` });
    process.exit(2);
}
