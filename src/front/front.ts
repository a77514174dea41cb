// The public face, assembled: the decoy site with the front door in it and the upgrade acceptor behind the
// door. One wiring, used by the server's composition root and by the probe suite's in-process server, so
// what the probes measure is what runs.
//
//   connection ─► front door (front-door.ts) ─► tunnel request, authenticated? ─ yes ─► acceptor ─► host
//                                              └─ anything else ─► the site (site.ts), byte for byte

import type { Server as NetServer } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../core/log.js';
import type { TunnelIdentity, TunnelRequest } from '../protocol/handshake.js';
import { createUpgradeAcceptor, type TunnelHost } from './acceptor.js';
import { installFrontDoor } from './front-door.js';
import { createSiteApp, SITE_DEFAULT_DIR } from './site.js';

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
}

export interface Front {
  readonly app: FastifyInstance;
  /** Binds the site; the port it got (0 asks for a free one). */
  listen(host: string, port: number): Promise<number>;
  /** Puts a renewed certificate in service for new connections; open ones keep theirs. */
  setCertificate(pair: { readonly key: string; readonly cert: string }): void;
  close(): Promise<void>;
}

export async function createFront(options: FrontOptions): Promise<Front> {
  const app = createSiteApp({
    siteDir: options.siteDir ?? SITE_DEFAULT_DIR,
    ...(options.upstream === undefined ? {} : { upstream: options.upstream }),
    ...(options.tls === undefined ? {} : { tls: options.tls }),
  });
  const acceptor = createUpgradeAcceptor({
    authenticate: options.authenticate,
    host: options.host,
    logger: options.logger,
  });
  try {
    await app.ready();
    installFrontDoor(app.server as NetServer, options.tls === undefined ? 'connection' : 'secureConnection', {
      ...acceptor,
      tunnelPath: options.tunnelPath,
      onError: (err) =>
        options.logger.error({ err: String(err) }, 'tunnel acceptor failed; connection closed'),
    });
  } catch (err) {
    acceptor.close();
    await app.close();
    throw err;
  }
  return {
    app,
    async listen(host, port) {
      await app.listen({ host, port });
      const address = app.server.address();
      return typeof address === 'object' && address !== null ? address.port : port;
    },
    setCertificate(pair) {
      (
        app.server as unknown as { setSecureContext(o: { key: string; cert: string }): void }
      ).setSecureContext(pair);
    },
    async close() {
      acceptor.close();
      await app.close();
    },
  };
}
