// Opens one tunnel connection: TCP (+TLS unless --plaintext), then the transport's handshake: the raw
// upgrade or a WebSocket (HTTP/1.1, a 101 answer), or an extended CONNECT stream over h2 (a 200 answer).
// The server certificate is verified by default (system CAs plus --ca), or pinned by fingerprint. The
// credential is made for this connection: signed over its TLS exporter, with a fresh time and nonce.

import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { connect as h2Connect, type Settings } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { checkServerIdentity, rootCertificates, type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { ClientConfig } from '../config/schema.js';
import { facadeError } from '../core/errors.js';
import {
  AUTH_WINDOW_SECONDS,
  H2_SESSION_WINDOW_BYTES,
  H2_STREAM_WINDOW_BYTES,
  HANDSHAKE_TIMEOUT_MS,
  MAX_REQUEST_HEAD_BYTES,
} from '../core/limits.js';
import { connectionBinding, createAuthorization, type UserKey } from '../protocol/credentials.js';
import {
  Capability,
  H2_PROTOCOL,
  Header,
  responseStatus,
  type TransportName,
  upgradeRequest,
  webSocketRequest,
} from '../protocol/handshake.js';
import { findHeadEnd } from '../protocol/http-head.js';
import { derFingerprint } from '../protocol/pin.js';
import { newWebSocketKey, WebSocketStream, webSocketAccept } from '../protocol/websocket.js';

export interface TunnelConnection {
  /** Where the session writes its frames (and which it ends): the socket, a WebSocket or an h2 stream. */
  readonly stream: Duplex;
  /** Bytes that followed the handshake: the start of the frame stream (a copy the caller owns). */
  readonly rest: Buffer;
  /**
   * True when the frame stream's reads are pushed (onRead) rather than 'data' events on `stream`: the
   * socket reads into one reused buffer (`onread`) instead of a fresh Buffer per read, so each read is a
   * view valid during the call. h2 streams read the usual way.
   */
  readonly pushedReads: boolean;
  /** Where the reads go from now on (pushedReads only). */
  onRead(receiver: (chunk: Buffer) => void): void;
  /** Starts reading, once the session listens. */
  start(): void;
  /** The address actually connected to (kept out of the tunnel in full-tunnel mode). */
  readonly serverAddress: string;
  /** The transport the tunnel runs on (auto resolved). */
  readonly transport: TransportName;
  /** The credential was signed with the zero binding: TLS ends before the server (a proxy in front). */
  readonly unbound: boolean;
}

/** A failure that another attempt cannot fix (wrong credentials, pin mismatch): the client stops. */
export class PermanentConnectError extends Error {}

/**
 * The server's name does not exist (NXDOMAIN, not a DNS outage). The client stops when the name never
 * resolved for it (a typo) and keeps retrying when it did before (a DNS change in progress).
 */
export class NameNotFoundError extends Error {}

/** A failure to reach the server, said plainly; the client retries. */
export class UnreachableError extends Error {}

/**
 * The request target of the tunnel in the client's URL. It is also the realm the user's key is derived for
 * (credentials.ts): the server's secret tunnel path, which the client has only because it dials it.
 */
export function tunnelTarget(url: URL): string {
  return `${url.pathname}${url.search}`;
}

/**
 * Opens the tunnel on the configured transport. auto offers h2 and http/1.1 in ALPN, as a browser does,
 * and opens an extended CONNECT stream where the server speaks h2 and allows it (RFC 8441); otherwise the
 * raw upgrade, on the same connection when it chose http/1.1, on a new one when it chose h2 without
 * extended CONNECT (a proxy in front that carries only HTTP/1.1 upgrades to facade).
 */
export async function connectTunnel(
  config: ClientConfig,
  key: UserKey,
  options: { readonly unbound?: boolean } = {},
): Promise<TunnelConnection> {
  if (config.plaintext || options.unbound === true) return connectWith(config, { ...key, unbound: true });
  try {
    return await connectWith(config, { ...key, unbound: false });
  } catch (err) {
    if (!(err instanceof RefusedError)) throw err;
    // Refused with the credential bound to our TLS connection: TLS may end at a proxy or CDN in front of
    // the server, which then cannot see our exporter. Once more with the zero binding (docs/PROTOCOL.md
    // 1.1), which a server with TLS of its own never accepts; refused again, the refusal stands.
    const connection = await connectWith(config, { ...key, unbound: true });
    return connection;
  }
}

/** The user's key, and whether to sign with the zero binding (TLS ends before the server). */
type SigningKey = UserKey & { readonly unbound: boolean };

function bindingFor(key: SigningKey, socket: Socket): Buffer | null {
  return key.unbound ? null : connectionBinding(socket);
}

async function connectWith(config: ClientConfig, key: SigningKey): Promise<TunnelConnection> {
  const transport = config.transport ?? 'auto';
  if (transport === 'h2' || (transport === 'auto' && !config.plaintext)) {
    const opened = await openConnection(config, ['h2', 'http/1.1'], false);
    const { socket } = opened;
    if (socket.alpnProtocol === 'h2') {
      const h2 = await openH2Tunnel(config, key, opened).catch((err: unknown) => {
        socket.destroy();
        throw err;
      });
      if (h2 !== null) return h2;
      if (transport === 'h2')
        throw new PermanentConnectError(
          facadeError('CONNECT_REFUSED', [
            config.url.origin,
            'it speaks HTTP/2 but does not allow extended CONNECT (RFC 8441): a proxy in front? use --transport websocket or upgrade',
          ]).message,
        );
      // auto: h2 without extended CONNECT (a proxy in front); the upgrade on a connection of its own.
      return upgradeOn(config, key, await openConnection(config, ['http/1.1'], true), 'upgrade');
    }
    if (transport === 'h2')
      throw new PermanentConnectError(
        facadeError('CONNECT_REFUSED', [config.url.origin, 'it did not choose HTTP/2 (ALPN h2)']).message,
      );
    // http/1.1 chosen (or no ALPN): the raw upgrade on this connection, reading the usual way.
    return upgradeOn(config, key, opened, 'upgrade');
  }
  return upgradeOn(
    config,
    key,
    await openConnection(config, ['http/1.1'], true),
    transport === 'websocket' ? 'websocket' : 'upgrade',
  );
}

interface Opened {
  readonly socket: Socket & { alpnProtocol?: string | false | null };
  readonly address: string;
  /** The socket's reused read buffer, or undefined when it reads with 'data' events. */
  readonly reads: Reads | undefined;
}

async function openConnection(config: ClientConfig, alpn: string[], reusedBuffer: boolean): Promise<Opened> {
  const { url } = config;
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const address = await resolve(host);
  const reads = reusedBuffer ? new Reads() : undefined;
  const where = `${url.hostname}:${port}`;
  const socket = await (config.plaintext
    ? openPlain(address, port, reads)
    : openTls(config, address, port, host, reads, alpn)
  ).catch((err: unknown) => {
    throw err instanceof PermanentConnectError ? err : unreachable(err, where);
  });
  socket.setNoDelay(true);
  return { socket, address, reads };
}

/** The HTTP/1.1 transports: the raw upgrade or a WebSocket, on an open connection. */
async function upgradeOn(
  config: ClientConfig,
  key: SigningKey,
  opened: Opened,
  transport: 'upgrade' | 'websocket',
): Promise<TunnelConnection> {
  const { url } = config;
  const { socket, address } = opened;
  const reads = opened.reads ?? new DataReads(socket);
  try {
    // Without TLS (--plaintext) there is no exporter: the zero binding; time and nonce still hold.
    const binding = bindingFor(key, socket);
    const request = {
      target: tunnelTarget(url),
      host: url.host,
      authorization: createAuthorization(key, binding),
      capabilities: { offload: config.offload },
    };
    const wsKey = newWebSocketKey();
    socket.write(
      transport === 'websocket' ? webSocketRequest({ ...request, key: wsKey }) : upgradeRequest(request),
    );
    const { status, head, rest } = await readResponseHead(socket, reads);
    if (status !== 101) throw refused(url, status);
    if (transport === 'upgrade') {
      return {
        stream: socket,
        rest,
        pushedReads: true,
        onRead: (receiver) => reads.to(receiver),
        start: () => socket.resume(),
        serverAddress: address,
        transport,
        unbound: key.unbound,
      };
    }
    if (responseHeader(head, Header.WEBSOCKET_ACCEPT) !== webSocketAccept(wsKey))
      throw new PermanentConnectError(
        facadeError('CONNECT_REFUSED', [url.origin, 'its WebSocket answer has a wrong Sec-WebSocket-Accept'])
          .message,
      );
    let receiver: (chunk: Buffer) => void = () => undefined;
    const stream = new WebSocketStream(socket, { role: 'client', deliver: (payload) => receiver(payload) });
    reads.to(stream.receive);
    return {
      stream,
      // The server sends nothing before the 101: what followed it is WebSocket frames, decoded at start.
      rest: Buffer.alloc(0),
      pushedReads: true,
      onRead: (next) => {
        receiver = next;
      },
      start: () => {
        if (rest.length > 0) stream.receive(rest);
        socket.resume();
      },
      serverAddress: address,
      transport,
      unbound: key.unbound,
    };
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/**
 * The h2 transport: an extended CONNECT stream (RFC 8441, `:protocol: facade`) on the secret path, with
 * the same credential (bound to this TLS connection) and capability headers as the upgrade. Null when the
 * server does not allow extended CONNECT (its SETTINGS say so), with the connection closed.
 */
async function openH2Tunnel(
  config: ClientConfig,
  key: SigningKey,
  opened: Opened,
): Promise<TunnelConnection | null> {
  const { url } = config;
  const { socket, address } = opened;
  const binding = bindingFor(key, socket);
  const session = h2Connect(url.origin, {
    createConnection: () => socket,
    settings: { initialWindowSize: H2_STREAM_WINDOW_BYTES },
  });
  session.on('error', () => undefined);
  const settings = await new Promise<Settings>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('no HTTP/2 SETTINGS from the server')),
      HANDSHAKE_TIMEOUT_MS,
    );
    session.once('remoteSettings', (remote) => {
      clearTimeout(timer);
      resolve(remote);
    });
    session.once('close', () => {
      clearTimeout(timer);
      reject(new Error('the server closed the connection during the handshake'));
    });
  });
  if (settings.enableConnectProtocol !== true) {
    session.destroy();
    return null;
  }
  session.setLocalWindowSize(H2_SESSION_WINDOW_BYTES);
  const stream = session.request(
    {
      ':method': 'CONNECT',
      ':protocol': H2_PROTOCOL,
      ':scheme': 'https',
      ':path': tunnelTarget(url),
      ':authority': url.host,
      [Header.AUTHORIZATION]: createAuthorization(key, binding),
      ...(config.offload ? { [Header.CAPABILITIES]: Capability.OFFLOAD } : {}),
    },
    { endStream: false },
  );
  stream.on('error', () => undefined);
  stream.once('close', () => session.destroy());
  const status = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('no answer to the tunnel request')),
      HANDSHAKE_TIMEOUT_MS,
    );
    stream.once('response', (headers) => {
      clearTimeout(timer);
      resolve(Number(headers[':status']));
    });
    stream.once('close', () => {
      clearTimeout(timer);
      reject(new Error('the server closed the stream during the handshake'));
    });
  }).catch((err: unknown) => {
    session.destroy();
    throw err;
  });
  if (status !== 200) {
    session.destroy();
    throw refused(url, status);
  }
  stream.pause();
  return {
    stream,
    rest: Buffer.alloc(0),
    pushedReads: false,
    onRead: () => undefined,
    start: () => stream.resume(),
    serverAddress: address,
    transport: 'h2',
    unbound: key.unbound,
  };
}

/** The server answered the tunnel request as a website would (a refusal), not with a network failure. */
export class RefusedError extends PermanentConnectError {}

function refused(url: URL, status: number): PermanentConnectError {
  return new RefusedError(
    facadeError('CONNECT_REFUSED', [
      url.origin,
      `it answered HTTP ${status} like a website: the tunnel path, user or password is wrong, or this machine's clock is more than ${AUTH_WINDOW_SECONDS / 60} minutes off (or the server runs a newer facade: upgrade this client)`,
    ]).message,
  );
}

/** A header of a response head, by lower-case name; undefined when absent. */
function responseHeader(head: Buffer, name: string): string | undefined {
  for (const line of head.toString('latin1').split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === name) return line.slice(colon + 1).trim();
  }
  return undefined;
}

/** The address to dial; a name that does not exist is NameNotFoundError, a DNS failure UnreachableError. */
async function resolve(host: string): Promise<string> {
  try {
    return (await lookup(host)).address;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'EAI_NONAME' || code === 'ENODATA')
      throw new NameNotFoundError(facadeError('HOST_UNRESOLVED', [host, `${code}: no such name`]).message);
    throw new UnreachableError(
      `the server name "${host}" could not be resolved now (${code ?? String(err)}: DNS did not answer)`,
    );
  }
}

/** Why the server could not be reached, in words; the errno stays in the text for searching. */
function unreachable(err: unknown, where: string): UnreachableError {
  const code = (err as NodeJS.ErrnoException).code;
  const why =
    code === 'ECONNREFUSED'
      ? 'refused the connection: nothing listens on that port, or a firewall rejects it'
      : code === 'EHOSTUNREACH' || code === 'ENETUNREACH'
        ? 'is unreachable: no route to it from here'
        : code === 'ETIMEDOUT'
          ? 'did not answer'
          : code === 'ECONNRESET' || code === 'EPIPE'
            ? 'reset the connection during the handshake'
            : (err instanceof Error ? err.message : String(err)).replace(
                /^Client network socket disconnected.*/,
                'closed the connection during the TLS handshake',
              );
  return new UnreachableError(`server ${where} ${why}${code === undefined ? '' : ` (${code})`}`);
}

/**
 * The one read buffer of a tunnel socket and where its reads go: the response-head reader first, the
 * session after. A fresh Buffer per read is external memory V8 must collect; at full speed that alone
 * drives major collections.
 */
interface ReadSink {
  to(receiver: (chunk: Buffer) => void): void;
}

/** Reads of a socket opened without `onread`: its 'data' events, to the same kind of receiver. */
class DataReads implements ReadSink {
  #receiver: (chunk: Buffer) => void = () => undefined;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.#receiver(chunk));
  }

  to(receiver: (chunk: Buffer) => void): void {
    this.#receiver = receiver;
  }
}

class Reads implements ReadSink {
  readonly buffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  #receiver: (chunk: Buffer) => void = () => undefined;

  to(receiver: (chunk: Buffer) => void): void {
    this.#receiver = receiver;
  }

  readonly onread = {
    buffer: this.buffer,
    callback: (bytes: number, buffer: Uint8Array): boolean => {
      this.#receiver((buffer as Buffer).subarray(0, bytes));
      return true;
    },
  };
}

/** One socket read at most: a TLS record is 16 KiB, plain TCP reads come in up to 64 KiB. */
const READ_BUFFER_BYTES = 64 * 1024;

function openPlain(address: string, port: number, reads: Reads | undefined): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({
      host: address,
      port,
      ...(reads === undefined ? {} : { onread: reads.onread }),
    });
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => socket.destroy(new Error('connect timed out')));
  });
}

function openTls(
  config: ClientConfig,
  address: string,
  port: number,
  servername: string,
  reads: Reads | undefined,
  alpn: string[],
): Promise<TLSSocket> {
  // The config holds the pin in parsePin's canonical form, the form certificateFingerprint returns.
  const pin = config.pin;
  const ca = config.ca === undefined ? undefined : [...rootCertificates, readFileSync(config.ca, 'utf8')];
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: address,
      port,
      // Node reads TLS plaintext into this buffer too (tls.connect supports onread since 15.1).
      ...(reads === undefined ? {} : ({ onread: reads.onread } as object)),
      servername: /^[\d.]+$|:/.test(servername) ? undefined : servername,
      ALPNProtocols: alpn,
      // Verified below, on secureConnect and before a byte is sent: a certificate that is not trusted then
      // stops the client with its fingerprint, which Node's own refusal would not show. A pinned
      // certificate is trusted by its fingerprint alone (self-signed, IP-only servers).
      rejectUnauthorized: false,
      ...(ca === undefined ? {} : { ca }),
      checkServerIdentity: (hostname, cert) => {
        if (pin !== undefined) return undefined;
        return checkServerIdentity(hostname, cert);
      },
    });
    socket.once('secureConnect', () => {
      socket.removeListener('error', reject);
      socket.setTimeout(0);
      const actual = derFingerprint(socket.getPeerCertificate().raw);
      const refuse = (message: string): void => {
        socket.destroy();
        reject(new PermanentConnectError(message));
      };
      if (pin !== undefined) {
        if (actual !== pin) return refuse(facadeError('PIN_MISMATCH', [actual, pin]).message);
      } else if (!socket.authorized) {
        const where = `${/:/.test(servername) ? `[${servername}]` : servername}:${port}`;
        return refuse(
          facadeError('CERT_UNTRUSTED', [
            where,
            untrustedBecause(String(socket.authorizationError), servername),
            actual,
            actual,
          ]).message,
        );
      }
      resolve(socket);
    });
    socket.once('error', reject);
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => socket.destroy(new Error('TLS handshake timed out')));
  });
}

/** OpenSSL's verify codes (and Node's name check), as a person would say them. */
function untrustedBecause(code: string, servername: string): string {
  switch (code) {
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return 'it is self-signed';
    case 'SELF_SIGNED_CERT_IN_CHAIN':
      return 'its chain ends in a CA this machine does not know';
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
      return 'no CA this machine trusts issued it (for a private CA: --ca FILE)';
    case 'CERT_HAS_EXPIRED':
      return 'it has expired';
    case 'CERT_NOT_YET_VALID':
      return "it is not valid yet: check this machine's clock";
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `it is not made out to ${servername}`;
    default:
      return code;
  }
}

function readResponseHead(
  socket: Socket,
  reads: ReadSink,
): Promise<{ status: number; head: Buffer; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error('no answer to the tunnel request')), HANDSHAKE_TIMEOUT_MS);
    const cleanup = (): void => {
      clearTimeout(timer);
      reads.to(() => undefined);
      socket.removeListener('error', fail);
      socket.removeListener('end', onEnd);
    };
    const fail = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onEnd = (): void => fail(new Error('the server closed the connection during the handshake'));
    const onData = (chunk: Buffer): void => {
      // concat copies: the chunk is a view of the reused read buffer.
      buffered = Buffer.concat([buffered, chunk]);
      const end = findHeadEnd(buffered);
      if (end === -1) {
        if (buffered.length > MAX_REQUEST_HEAD_BYTES)
          fail(new Error('oversized answer to the tunnel request'));
        return;
      }
      cleanup();
      socket.pause();
      resolve({
        status: responseStatus(buffered),
        head: buffered.subarray(0, end),
        rest: buffered.subarray(end),
      });
    };
    reads.to(onData);
    socket.once('error', fail);
    socket.once('end', onEnd);
  });
}
