// The h2 transport: an extended CONNECT stream (RFC 8441) on the site's own HTTP/2 connections. A client
// that talks like a browser offers h2 in ALPN, gets the site's h2 (front-door.ts hands every h2 connection
// to it), and opens the tunnel as one stream:
//
//   :method CONNECT, :protocol facade, :path <secret path>, authorization, facade-capabilities
//   ─► 200, and the stream's DATA frames carry the tunnel's frames both ways
//
// Every other stream is the site's, untouched. Every CONNECT stream, whatever its path or :protocol, costs
// one credential check (the same work for each, as the front door's heads); one that is not a valid tunnel
// request goes to the site, which answers CONNECT as it answers any method it does not serve. The binding
// is the TLS exporter of the connection, as for the upgrade: a credential made for another connection
// fails here.

import { randomBytes } from 'node:crypto';
import type {
  Http2SecureServer,
  Http2Session,
  IncomingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { H2_SESSION_WINDOW_BYTES } from '../core/limits.js';
import { BINDING_LENGTH, connectionBinding } from '../protocol/credentials.js';
import { H2_PROTOCOL, type TunnelIdentity, type TunnelRequest } from '../protocol/handshake.js';
import type { TunnelHost } from './acceptor.js';

type StreamListener = (
  this: Http2SecureServer,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  flags: number,
  rawHeaders: string[],
) => void;

export interface H2ConnectOptions {
  readonly tunnelPath: string;
  readonly authenticate: (request: TunnelRequest) => TunnelIdentity | null;
  readonly host: TunnelHost;
  /**
   * The connection of an accepted tunnel left the website (connection-guard.ts release): it stops counting
   * against its address, as an upgraded connection does.
   */
  readonly release?: (socket: Socket) => void;
  /** A CONNECT for the tunnel path that was refused (after it went to the site): record only. */
  readonly onRefused?: (authorization: string | undefined, remoteAddress: string) => void;
}

/** Puts the tunnel's CONNECT handling in front of the site's own 'stream' listener (Node's compat layer). */
export function installH2Connect(server: Http2SecureServer, options: H2ConnectOptions): void {
  const siteListeners = server.listeners('stream') as StreamListener[];
  if (siteListeners.length === 0) throw new Error("h2 connect: the server has no 'stream' listener to wrap");
  server.removeAllListeners('stream');
  const toSite: StreamListener = function (stream, headers, flags, rawHeaders) {
    for (const listener of siteListeners) listener.call(this, stream, headers, flags, rawHeaders);
  };
  // Node makes a connection's h2 session inside its 'secureConnection' listener, so the socket seen last
  // there is the new session's own (session.socket is only a proxy of it).
  const socketOf = new WeakMap<Http2Session, Socket>();
  let accepting: Socket | undefined;
  server.prependListener('secureConnection', (socket: Socket) => {
    accepting = socket;
  });
  // Every h2 connection's receive window sized for a tunnel (the stream windows are in the site's SETTINGS).
  server.on('session', (session: ServerHttp2Session) => {
    if (accepting !== undefined) socketOf.set(session, accepting);
    accepting = undefined;
    session.once('localSettings', () => {
      try {
        session.setLocalWindowSize(H2_SESSION_WINDOW_BYTES);
      } catch {
        // The session went away meanwhile.
      }
    });
  });
  server.on('stream', function (this: Http2SecureServer, stream, headers, flags, rawHeaders) {
    if (headers[':method'] !== 'CONNECT') {
      toSite.call(this, stream, headers, flags, rawHeaders);
      return;
    }
    const socket = stream.session?.socket as TLSSocket | undefined;
    const identity = options.authenticate({
      target: headerText(headers[':path']) ?? '',
      headers: { get: (name) => headerText(headers[name]) },
      binding: bindingOf(socket),
    });
    const forTunnel = headers[':path'] === options.tunnelPath;
    if (identity === null || !forTunnel || headers[':protocol'] !== H2_PROTOCOL) {
      toSite.call(this, stream, headers, flags, rawHeaders);
      if (forTunnel) options.onRefused?.(headerText(headers.authorization), socket?.remoteAddress ?? '?');
      return;
    }
    // The site closes an h2 connection idle for its session timeout (nginx's keepalive_timeout); a tunnel
    // is idle only when its keepalive is off, and then it must stay open as the upgrade's does.
    stream.session?.setTimeout(0);
    const raw = stream.session === undefined ? undefined : socketOf.get(stream.session);
    if (raw !== undefined) options.release?.(raw);
    stream.respond({ ':status': 200 });
    options.host.attach(stream, identity, Buffer.alloc(0), {
      remote: `${socket?.remoteAddress ?? '?'}:${socket?.remotePort ?? '?'}`,
      transport: 'h2',
    });
  } as StreamListener);
}

function headerText(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

/** The connection's TLS exporter; a random value (matching nothing) should it fail. */
function bindingOf(socket: TLSSocket | undefined): Buffer {
  try {
    if (socket === undefined) throw new Error('no socket');
    return connectionBinding(socket) ?? randomBytes(BINDING_LENGTH);
  } catch {
    return randomBytes(BINDING_LENGTH);
  }
}
