// The plain-HTTP listener (port 80): it sends every request to HTTPS with a 301, as a plain Node redirect
// server does, and answers an ACME HTTP-01 challenge for a token the CertificateManager is waiting on.
//
// To a scanner it must be one more plain Node server, not facade: nmap knew the former answers by heart (a
// malformed request got `400` + `Connection: close` + `Content-Length: 0`, word for word the "T-Home Telekom
// Media Receiver httpd" of its database, shared by every facade server in the world). So everything here is
// Node's own: its default timeouts, its answer to what its parser rejects (client-error.ts, as the site's), its
// 400 to an HTTP/1.1 request without Host, and the redirect is `writeHead(301, { Location }); end()`, exactly
// what the plain reference of test/probe (test/helpers/reference-server.ts) writes. The one difference is a
// request for a token being validated right now, which gets its key authorization; any other path under
// /.well-known/acme-challenge/ is redirected like the rest (an ACME CA follows the redirect to HTTPS and meets
// the site's 404 there, which is what an unknown token deserves anyway).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS } from '../core/limits.js';
import type { Logger } from '../core/log.js';
import { answerClientError } from './client-error.js';
import { ConnectionGuard } from './connection-guard.js';

/** RFC 8555 8.3: the token is base64url; refusing anything else keeps odd paths out of the map lookup. */
const TOKEN = /^[A-Za-z0-9_-]+$/;

const CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

/** close(): requests in progress get this long, then their connections are destroyed (as the site's). */
export const HTTP_CLOSE_GRACE_MS = 2_000;

/** Host names and IPv4 (letters, digits, '-', '.', '_') or a bracketed IPv6 literal, then an optional port. */
const HOST_HEADER = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?$/;

/** The absolute form of a request target (RFC 9112 3.2.2), which a server must accept: its path is kept. */
const ABSOLUTE_FORM = /^https?:\/\/[^/?#]*(.*)$/i;

/** Where the listener finds the key authorization for a challenge token (certs/challenges.ts fills it). */
export interface ChallengeLookup {
  get(token: string): string | undefined;
}

export interface HttpListenerOptions {
  /** Address to bind, e.g. '0.0.0.0', '::' or the --listen address. */
  host: string;
  /** 80 unless --http-listen says otherwise; 0 picks a free port (tests). */
  port: number;
  challenges: ChallengeLookup;
  logger: Logger;
  /** Port of the HTTPS listener; it appears in the redirect unless it is 443. */
  httpsPort?: number;
  /** Host used in the redirect when the request has no Host header (HTTP/1.0). */
  defaultHost?: string;
  /** Open connections in total and per source address (defaults: core/limits.ts, as the website's). */
  maxConnections?: number;
  maxConnectionsPerAddress?: number;
  /**
   * A socket already bound to host:port (server/bound-port.ts, bound while the server was root): served
   * instead of binding one here.
   */
  bound?: { handle: unknown };
}

export interface HttpListener {
  readonly server: Server;
  address(): AddressInfo;
  /**
   * Stops accepting, closes idle keep-alive connections, gives the rest HTTP_CLOSE_GRACE_MS, then destroys
   * them. Idempotent.
   */
  close(): Promise<void>;
}

/** Starts the plain-HTTP listener; resolves once it is bound (rejects with EADDRINUSE/EACCES otherwise). */
export async function startHttpListener(options: HttpListenerOptions): Promise<HttpListener> {
  const log = options.logger.child({ component: 'http-listener' });
  const portSuffix =
    options.httpsPort === undefined || options.httpsPort === 443 ? '' : `:${options.httpsPort}`;

  // Node's defaults throughout (headersTimeout 60 s, requestTimeout 300 s, keep-alive 5 s, the 400 to an
  // HTTP/1.1 request without Host): a plain redirect server sets none of them.
  const server = createServer((req, res) => handleRequest(req, res));

  function handleRequest(req: IncomingMessage, res: ServerResponse): void {
    const target = req.url ?? '/';
    if (answerChallenge(req, res, target)) return;
    const path = originFormPath(target);
    const given = req.headers.host;
    const host = given === undefined ? (options.defaultHost ?? localHost(req)) : hostWithoutPort(given);
    if (path === undefined || host === undefined) {
      // What Node itself answers to a request it cannot serve (an HTTP/1.1 request without Host).
      res.writeHead(400, ['Connection', 'close']);
      res.end();
      return;
    }
    res.writeHead(301, { Location: `https://${host}${portSuffix}${path}` });
    res.end();
  }

  /** Answers a GET or HEAD for a token being validated now; false for everything else. */
  function answerChallenge(req: IncomingMessage, res: ServerResponse, target: string): boolean {
    if (!target.startsWith(CHALLENGE_PREFIX) || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
    const token = target.slice(CHALLENGE_PREFIX.length).split('?', 1)[0] as string;
    const keyAuthorization = TOKEN.test(token) ? options.challenges.get(token) : undefined;
    if (keyAuthorization === undefined) {
      log.info({ token, remote: req.socket.remoteAddress }, 'unknown ACME challenge token; redirected');
      return false;
    }
    log.info(
      { token, remote: req.socket.remoteAddress, userAgent: req.headers['user-agent'] },
      'answered ACME HTTP-01 challenge',
    );
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': Buffer.byteLength(keyAuthorization),
      'cache-control': 'no-store',
    });
    res.end(req.method === 'HEAD' ? undefined : keyAuthorization);
    return true;
  }

  // The same limits as the website: beyond them a connection is closed as soon as it is accepted.
  const guard = new ConnectionGuard({
    maxConnections: options.maxConnections ?? MAX_CONNECTIONS,
    maxConnectionsPerAddress: options.maxConnectionsPerAddress ?? MAX_CONNECTIONS_PER_ADDRESS,
    handshakeTimeoutMs: 0,
    closeGraceMs: HTTP_CLOSE_GRACE_MS,
  });
  guard.install(server, false);

  // The site's answer to what the parser rejects, which is Node's own (client-error.ts); never throws.
  server.on('clientError', answerClientError);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.bound ?? { port: options.port, host: options.host }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'plain-HTTP listener error'));
  log.info({ address: server.address() }, 'plain-HTTP listener: ACME challenges and redirects to HTTPS');

  let closing: Promise<void> | undefined;
  return {
    server,
    address: () => server.address() as AddressInfo,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // A slow request head would otherwise hold the close for Node's headers timeout.
        guard.close();
      });
      return closing;
    },
  };
}

/**
 * The path and query of a request target: origin-form as is, absolute-form ('http://host/p?q') reduced to its
 * path. undefined for '*' (OPTIONS) and anything else that is not a path.
 */
function originFormPath(target: string): string | undefined {
  if (target.startsWith('/')) return target;
  const absolute = ABSOLUTE_FORM.exec(target);
  if (absolute === null) return undefined;
  const rest = absolute[1] as string;
  return rest.startsWith('/') ? rest : `/${rest}`;
}

/** The Host header without its port, or undefined when it is not a plain host name or address. */
function hostWithoutPort(header: string): string | undefined {
  const match = HOST_HEADER.exec(header.trim());
  return match === null ? undefined : match[1];
}

/**
 * The address the client connected to, for an HTTP/1.0 request without Host (as Apache and nginx fall back to
 * their server's own name): nothing the client did not already know.
 */
function localHost(req: IncomingMessage): string | undefined {
  const address = req.socket.localAddress;
  if (address === undefined) return undefined;
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (v4 !== null) return v4[1];
  return address.includes(':') ? `[${address}]` : address;
}
