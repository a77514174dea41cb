// The plain reference the probe and scanner suites hold facade against: what an administrator runs who has a
// static site and no VPN.
//   HTTPS: the decoy site app alone (src/front/site.ts; Fastify + @fastify/static, h2 and HTTP/1.1), without
//          the front door, the acceptor or anything else facade adds.
//   HTTP:  a redirect to HTTPS written with node:http and nothing else: Node's defaults (timeouts, keep-alive,
//          its 400 to an HTTP/1.1 request without Host, and no 'clientError' listener, so what the parser
//          rejects gets Node's own answer), and `writeHead(301, { Location }); end()`.
// Written apart from facade's port-80 listener on purpose: the probes compare the two.

import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { createSiteApp, SITE_DEFAULT_DIR } from '../../src/front/site.js';

export interface PlainRedirectOptions {
  /** Port in the Location header; left out when 443. */
  readonly httpsPort: number;
  /** Host for a request without Host (HTTP/1.0); default: the address the client connected to. */
  readonly defaultHost?: string;
}

/** The HTTP redirect server, not yet listening. */
export function createPlainRedirectServer(options: PlainRedirectOptions): Server {
  const port = options.httpsPort === 443 ? '' : `:${options.httpsPort}`;
  return createServer((req, res) => {
    const host =
      req.headers.host === undefined
        ? (options.defaultHost ?? ownAddress(req.socket))
        : hostName(req.headers.host);
    const path = pathOf(req);
    if (host === undefined || path === undefined) {
      res.writeHead(400, ['Connection', 'close']);
      res.end();
      return;
    }
    res.writeHead(301, { Location: `https://${host}${port}${path}` });
    res.end();
  });
}

/** A name, an IPv4 address or a bracketed IPv6 one, with the port dropped; undefined for anything else. */
function hostName(header: string): string | undefined {
  return /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?$/.exec(header.trim())?.[1];
}

/** The path of an origin-form or absolute-form target ('http://h/p' → '/p'); undefined for '*' and the like. */
function pathOf(req: IncomingMessage): string | undefined {
  const target = req.url ?? '/';
  if (target.startsWith('/')) return target;
  const absolute = /^https?:\/\/[^/?#]*(.*)$/i.exec(target);
  if (absolute === null) return undefined;
  const rest = absolute[1] as string;
  return rest.startsWith('/') ? rest : `/${rest}`;
}

function ownAddress(socket: Socket): string | undefined {
  const address = socket.localAddress?.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
  if (address === undefined) return undefined;
  return address.includes(':') ? `[${address}]` : address;
}

export interface ReferenceServerOptions {
  readonly host: string;
  /** 0: any free port. */
  readonly httpsPort: number;
  readonly httpPort: number;
  readonly tls: { readonly key: string; readonly cert: string };
  /** Port the redirect names (default: the HTTPS port it got). */
  readonly redirectPort?: number;
}

export interface ReferenceServer {
  readonly site: FastifyInstance;
  readonly redirect: Server;
  readonly httpsPort: number;
  readonly httpPort: number;
  /** Idempotent. */
  close(): Promise<void>;
}

/** Starts both listeners of the reference; resolves once they are bound. */
export async function startReferenceServer(options: ReferenceServerOptions): Promise<ReferenceServer> {
  const site = createSiteApp({ siteDir: SITE_DEFAULT_DIR, tls: options.tls });
  let redirect: Server | undefined;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= Promise.allSettled([
      site.close(),
      new Promise<void>((resolve) => {
        if (redirect === undefined || !redirect.listening) return resolve();
        redirect.close(() => resolve());
        redirect.closeAllConnections();
      }),
    ]).then(() => undefined);
    return closing;
  };
  try {
    await site.listen({ host: options.host, port: options.httpsPort });
    const httpsPort = (site.server.address() as AddressInfo).port;
    const server = createPlainRedirectServer({ httpsPort: options.redirectPort ?? httpsPort });
    redirect = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.httpPort, options.host, () => resolve());
    });
    return {
      site,
      redirect: server,
      httpsPort,
      httpPort: (server.address() as AddressInfo).port,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
