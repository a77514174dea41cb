// The public face, assembled: the decoy site with the front door in it and the upgrade acceptor behind the
// door. One wiring, used by the server's composition root and by the probe suite's in-process server, so
// what the probes measure is what runs.
//
//   connection ─► front door (front-door.ts) ─► tunnel request, authenticated? ─ yes ─► acceptor ─► host
//                                              │                     (raw upgrade or WebSocket, websocket.ts)
//                                              └─ anything else ─► the site (site.ts), byte for byte
//   h2 stream ─► CONNECT :protocol facade on the tunnel path, authenticated? (h2-connect.ts) ─ yes ─► host
//                └─ anything else ─► the site

import type { Http2SecureServer } from 'node:http2';
import type { Server as NetServer, Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { MAX_CONNECTIONS } from '../core/limits.js';
import type { Logger } from '../core/log.js';
import type { TunnelIdentity, TunnelRequest } from '../protocol/handshake.js';
import { createUpgradeAcceptor, type TunnelHost } from './acceptor.js';
import { type FrontDoor, installFrontDoor } from './front-door.js';
import { installH2Connect } from './h2-connect.js';
import { createSiteApp, SITE_DEFAULT_DIR, SITE_TLS_SETTINGS, siteConnectionGuard } from './site.js';

export interface FrontOptions {
  /** Static folder of the decoy site (default: the bundled public/). */
  readonly siteDir?: string | undefined;
  /** Reverse-proxy the site to this local application instead. */
  readonly upstream?: string | undefined;
  /** Without it: plain HTTP (--plaintext debugging). */
  readonly tls?: { readonly key: string; readonly cert: string } | undefined;
  readonly tunnelPath: string;
  /** Constant-cost credential check (users/authenticator.ts). */
  readonly authenticate: (request: TunnelRequest) => TunnelIdentity | null;
  readonly host: TunnelHost;
  readonly logger: Logger;
  /** Open connections in total (default MAX_CONNECTIONS, core/limits.ts). */
  readonly maxConnections?: number | undefined;
  /** Open connections per source address, IPv6 per /64, tunnels not counted (default MAX_CONNECTIONS_PER_ADDRESS). */
  readonly maxConnectionsPerAddress?: number | undefined;
  /** TLS handshake deadline from the accept (default SITE_TLS_HANDSHAKE_TIMEOUT_MS). */
  readonly handshakeTimeoutMs?: number | undefined;
  /** How long close() lets connections the site serves finish (default SITE_CLOSE_GRACE_MS). */
  readonly closeGraceMs?: number | undefined;
  /**
   * Plain HTTP behind a TLS-terminating reverse proxy (--behind-proxy): every connection comes from the
   * proxy, so the per-address limit is the total one (the proxy limits its clients), and a session's remote
   * is the last X-Forwarded-For entry. Needs no `tls`.
   */
  readonly behindProxy?: boolean | undefined;
  /** Front door waits (defaults in front-door.ts); tests shorten them. */
  readonly firstBytesWaitMs?: number | undefined;
  readonly tunnelHeadWaitMs?: number | undefined;
  /** Held connections keep a plain server's head deadline (default true; front-door.ts). Tests turn it off. */
  readonly keepPlainDeadlines?: boolean | undefined;
}

export interface Front {
  readonly app: FastifyInstance;
  /**
   * Binds the site; the port it got (0 asks for a free one). With `bound`, serves that already bound
   * socket instead (server/bound-port.ts: bound while the server was root, served once it no longer is).
   */
  listen(host: string, port: number, bound?: { handle: unknown }): Promise<number>;
  /**
   * Serves a TCP connection accepted elsewhere (a worker's, handed over by the primary) as if this site's
   * own listener had accepted it.
   */
  accept(socket: Socket): void;
  /** Puts a renewed certificate in service for new connections; open ones keep theirs. */
  setCertificate(pair: { readonly key: string; readonly cert: string }): void;
  close(): Promise<void>;
}

export async function createFront(options: FrontOptions): Promise<Front> {
  const app = createSiteApp({
    siteDir: options.siteDir ?? SITE_DEFAULT_DIR,
    ...(options.upstream === undefined ? {} : { upstream: options.upstream }),
    ...(options.tls === undefined ? {} : { tls: options.tls }),
    maxConnections: options.maxConnections,
    maxConnectionsPerAddress:
      options.behindProxy === true
        ? (options.maxConnections ?? MAX_CONNECTIONS)
        : options.maxConnectionsPerAddress,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    closeGraceMs: options.closeGraceMs,
  });
  const guard = siteConnectionGuard(app);
  const acceptor = createUpgradeAcceptor({
    authenticate: options.authenticate,
    host: options.host,
    logger: options.logger,
    behindProxy: options.behindProxy,
  });
  let frontDoor: FrontDoor | undefined;
  try {
    await app.ready();
    frontDoor = installFrontDoor<TunnelIdentity>(
      app.server as NetServer,
      options.tls === undefined ? 'connection' : 'secureConnection',
      {
        ...acceptor,
        accept: (head, socket, rest, identity) => {
          // A tunnel is bounded by the address pool, not by the per-address limit of the website.
          guard?.release(socket);
          acceptor.accept(head, socket, rest, identity);
        },
        tunnelPath: options.tunnelPath,
        onError: (err) =>
          options.logger.error({ err: String(err) }, 'tunnel acceptor failed; connection closed'),
        firstBytesWaitMs: options.firstBytesWaitMs,
        tunnelHeadWaitMs: options.tunnelHeadWaitMs,
        keepPlainDeadlines: options.keepPlainDeadlines,
      },
    );
    if (options.tls !== undefined) {
      installH2Connect(app.server as unknown as Http2SecureServer, {
        tunnelPath: options.tunnelPath,
        authenticate: options.authenticate,
        host: options.host,
        onRefused: acceptor.recordRefusal,
        release: (socket) => guard?.release(socket),
      });
    }
  } catch (err) {
    acceptor.close();
    await app.close();
    throw err;
  }
  let handedOver = false;
  return {
    app,
    async listen(host, port, bound) {
      // Node's listen takes `handle` in its options; fastify passes them through.
      await app.listen(bound === undefined ? { host, port } : ({ host, port, ...bound } as { host: string }));
      const address = app.server.address();
      return typeof address === 'object' && address !== null ? address.port : port;
    },
    accept(socket) {
      // A worker's site never listens: 'listening' is what starts Node's own head and request deadlines,
      // the connection guard and the front door's deadlines, so it is said once, before the first one.
      if (!handedOver) {
        handedOver = true;
        app.server.emit('listening');
      }
      app.server.emit('connection', socket);
    },
    setCertificate(pair) {
      // setSecureContext resets every TLS setting it is not given (ciphers, minVersion): give them again.
      (
        app.server as unknown as { setSecureContext(o: { key: string; cert: string }): void }
      ).setSecureContext({ ...SITE_TLS_SETTINGS, key: pair.key, cert: pair.cert });
    },
    async close() {
      acceptor.close();
      // Connections whose first request is undecided, and (in the site's preClose) those still in their TLS
      // handshake, are destroyed rather than waited for; the rest get the site's close grace.
      frontDoor?.close();
      await app.close();
    },
  };
}
