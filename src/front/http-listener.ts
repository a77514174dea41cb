// The plain-HTTP listener (port 80): it answers ACME HTTP-01 challenges from the challenge store the
// CertificateManager fills, and sends everything else to HTTPS with a 301, as any web server set up for
// TLS does (`return 301 https://$host$request_uri` in nginx). node:http is enough: two routes, no plugins,
// and every byte of the answer is ours to choose.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS } from '../core/limits.js';
import type { Logger } from '../core/log.js';
import { ConnectionGuard } from './connection-guard.js';

/** RFC 8555 8.3: the token is base64url; refusing anything else keeps odd paths out of the map lookup. */
const TOKEN = /^[A-Za-z0-9_-]+$/;

const CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

/** A client gets this long to send its request head (nginx client_header_timeout is 60 s). */
export const HTTP_HEADERS_TIMEOUT_MS = 30_000;

/** ... and this long for the whole request; nothing on port 80 takes a body. */
export const HTTP_REQUEST_TIMEOUT_MS = 30_000;

/** Idle keep-alive connections close after this long (Node's and Apache's default). */
export const HTTP_KEEP_ALIVE_TIMEOUT_MS = 5_000;

/** close(): requests in progress get this long, then their connections are destroyed (as the site's). */
export const HTTP_CLOSE_GRACE_MS = 2_000;

/** Host names and IPv4 (letters, digits, '-', '.', '_') or a bracketed IPv6 literal, then an optional port. */
const HOST_HEADER = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?$/;

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

  const server = createServer(
    {
      headersTimeout: HTTP_HEADERS_TIMEOUT_MS,
      requestTimeout: HTTP_REQUEST_TIMEOUT_MS,
      keepAliveTimeout: HTTP_KEEP_ALIVE_TIMEOUT_MS,
    },
    (req, res) => handleRequest(req, res),
  );

  function handleRequest(req: IncomingMessage, res: ServerResponse): void {
    const target = req.url ?? '/';
    const path = originFormPath(target);
    if (path === undefined) {
      send(res, 400, 'Bad Request');
      return;
    }

    if (path.startsWith(CHALLENGE_PREFIX) && (req.method === 'GET' || req.method === 'HEAD')) {
      const token = path.slice(CHALLENGE_PREFIX.length).split('?', 1)[0]!;
      const keyAuthorization = TOKEN.test(token) ? options.challenges.get(token) : undefined;
      if (keyAuthorization === undefined) {
        log.info({ token, remote: req.socket.remoteAddress }, 'unknown ACME challenge token');
        send(res, 404, 'Not Found');
        return;
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
      return;
    }

    const host = hostWithoutPort(req.headers.host) ?? options.defaultHost;
    if (host === undefined) {
      send(res, 400, 'Bad Request');
      return;
    }
    const location = `https://${host}${portSuffix}${path}`;
    const body = `<html>\r\n<head><title>301 Moved Permanently</title></head>\r\n<body>\r\n<center><h1>301 Moved Permanently</h1></center>\r\n</body>\r\n</html>\r\n`;
    res.writeHead(301, {
      location,
      'content-type': 'text/html',
      'content-length': Buffer.byteLength(body),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  // The same limits as the website: beyond them a connection is closed as soon as it is accepted.
  const guard = new ConnectionGuard({
    maxConnections: options.maxConnections ?? MAX_CONNECTIONS,
    maxConnectionsPerAddress: options.maxConnectionsPerAddress ?? MAX_CONNECTIONS_PER_ADDRESS,
    handshakeTimeoutMs: 0,
    closeGraceMs: HTTP_CLOSE_GRACE_MS,
  });
  guard.install(server, false);

  // A malformed request line or a header timeout: answer 400 like other servers, never throw.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (socket.writable && err.code !== 'ECONNRESET') {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    } else {
      socket.destroy();
    }
  });

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
 * The path and query of a request target: origin-form as is, absolute-form ('http://host/p?q', which
 * proxies send) reduced to its path. undefined for '*' and anything else that is not a path.
 */
function originFormPath(target: string): string | undefined {
  if (target.startsWith('/')) return target;
  if (/^https?:\/\//i.test(target)) {
    try {
      const url = new URL(target);
      return `${url.pathname}${url.search}`;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** The Host header without its port, or undefined when missing or not a plain host name / address. */
function hostWithoutPort(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = HOST_HEADER.exec(header.trim());
  return match === null ? undefined : match[1];
}

function send(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
