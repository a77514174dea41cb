// The decoy website: the one Fastify application that answers everything that is not a valid tunnel upgrade.
// facade's front door hands unmatched connections to this app, and the probe suite's plain reference server
// is this same app started alone, so facade's decoy answers are identical to a plain site by construction.
//
// Deliberate behaviour (a plain static site, the same in facade and in the reference server):
// - static mode: only GET and HEAD exist. Every other method (POST, PUT, DELETE, OPTIONS, PATCH, ...) on any
//   path gets the site's 404 page with status 404, before any request body is parsed, so bodies and content
//   types cannot provoke framework-specific 400/415 answers.
// - any unknown path, dotfile or directory without an index gets the 404 page (404.html of the site folder, read
//   once at start; a built-in page when the folder has none). Clean URLs: /about serves about.html.
// - malformed URLs (bad percent-encoding) get a small HTML 400 page; server faults a 500 page; never JSON.
// - requests the HTTP parser rejects (bad request line, bad header, unknown method, an oversized head) and heads
//   not finished within SITE_HEADERS_TIMEOUT_MS get exactly what Node's own http.Server sends by default
//   (client-error.ts: a bare 400, 431 or 408 with `Connection: close`, then the connection closes), the same
//   answer as the port-80 listener's and every plain Node server's.
// - a file (or folder) of the site folder whose real path is outside it (a symlink out) is not part of the
//   site: the 404 page, as for an unknown path.
// - connections: at most `maxConnections` open, `maxConnectionsPerAddress` per source address, and a TLS
//   handshake must finish within `handshakeTimeoutMs` of the accept; beyond that the connection is closed
//   without an answer (connection-guard.ts). TLS 1.2 and 1.3 with AEAD suites only.
// - upstream mode: every method and path is proxied; the application behind decides, facade adds only
//   transport security headers and answers 502 (504 on timeout) when the application cannot be reached.

import { readFileSync, realpathSync, statSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import type { Http2SecureServer } from 'node:http2';
import type { Server as NetServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyCompress from '@fastify/compress';
import fastifyHttpProxy from '@fastify/http-proxy';
import fastifyStatic from '@fastify/static';
import Fastify, {
  type FastifyError,
  type FastifyHttp2SecureOptions,
  type FastifyInstance,
  type FastifyReply,
  type FastifyServerOptions,
} from 'fastify';
import { facadeError } from '../core/errors.js';
import {
  H2_STREAM_WINDOW_BYTES,
  HANDSHAKE_TIMEOUT_MS,
  MAX_CONNECTIONS,
  MAX_CONNECTIONS_PER_ADDRESS,
  MAX_REQUEST_HEAD_BYTES,
} from '../core/limits.js';
import type { Logger } from '../core/log.js';
import { answerClientError } from './client-error.js';
import { ConnectionGuard } from './connection-guard.js';

// --- timeouts: those of a stock nginx, so the decoy's connection behaviour is that of a common web server -----

/** nginx `keepalive_timeout 75s`: an idle HTTP/1.1 keep-alive connection is closed after this. */
export const SITE_KEEP_ALIVE_TIMEOUT_MS = 75_000;

/**
 * nginx `client_header_timeout 60s`: time to send a complete request head. Equal to HANDSHAKE_TIMEOUT_MS, so
 * the front door (which reads the first head itself) and the site give up on a slow client at the same moment.
 */
export const SITE_HEADERS_TIMEOUT_MS = HANDSHAKE_TIMEOUT_MS;

/**
 * Whole request, head and body: nginx's client_header_timeout + client_body_timeout (60 s + 60 s). Node's
 * default of 300 s would let a slow uploader hold a socket five minutes; must be >= the headers timeout.
 */
export const SITE_REQUEST_TIMEOUT_MS = 120_000;

/** Idle HTTP/2 session: nginx applies keepalive_timeout (75 s) to idle h2 connections since 1.19.7. */
export const SITE_HTTP2_SESSION_TIMEOUT_MS = 75_000;

/**
 * nginx `ssl_handshake_timeout 60s` (Node's default is 120 s). One deadline from the accept, not an idle timer
 * (Node's handshakeTimeout restarts on every byte): a connection that has not finished its handshake by then
 * is destroyed, whatever it sent.
 */
export const SITE_TLS_HANDSHAKE_TIMEOUT_MS = 60_000;

/**
 * close(): connections the site is still serving (a download, a slow request head) get this long, then they
 * are destroyed, so a SIGTERM stops the server within seconds (docker stop waits 10 s, then kills). A page and
 * its assets take well under a second; connections still in their TLS handshake are destroyed at once.
 */
export const SITE_CLOSE_GRACE_MS = 2_000;

/**
 * TLS 1.3 suites as Node has them, then TLS 1.2 with ECDHE and an AEAD only (AES-GCM, ChaCha20-Poly1305):
 * Mozilla's "intermediate" list without DHE. Node's default list ends in HIGH, which adds the CBC-SHA and
 * CCM8 suites of TLS 1.2. Browsers of the last ten years all offer these.
 */
export const SITE_TLS_CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_GCM_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/**
 * TLS settings of the site besides its key and certificate. A new secure context (a renewed certificate,
 * setSecureContext) must be given them again: Node resets every setting not passed.
 */
export const SITE_TLS_SETTINGS = { ciphers: SITE_TLS_CIPHERS, minVersion: 'TLSv1.2' } as const;

/**
 * Upstream mode: how long the proxied application may take to answer (nginx `proxy_read_timeout 60s`);
 * after it the client gets a 504, as from a real reverse proxy.
 */
export const SITE_UPSTREAM_TIMEOUT_MS = 60_000;

// --- headers ---------------------------------------------------------------------------------------------------

/** One year, without includeSubDomains: we cannot know what else runs under the operator's domain. */
const HSTS_VALUE = 'max-age=31536000';

/** A static site loads only its own files; nothing inline, nothing framed, no plugins. */
const STATIC_CSP =
  "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; " +
  "base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/** Headers every static-mode response carries, the 404 and error pages included. */
const STATIC_SECURITY_HEADERS: ReadonlyArray<readonly [string, string]> = [
  ['content-security-policy', STATIC_CSP],
  ['x-content-type-options', 'nosniff'],
  ['x-frame-options', 'DENY'],
  ['referrer-policy', 'strict-origin-when-cross-origin'],
];

/**
 * In upstream mode the application owns its CSP and framing policy (a strict CSP would break it); facade adds
 * only the transport-level headers, and never overrides one the application set.
 */
const UPSTREAM_SECURITY_HEADERS: ReadonlyArray<readonly [string, string]> = [
  ['x-content-type-options', 'nosniff'],
  ['referrer-policy', 'strict-origin-when-cross-origin'],
];

const HTML_TYPE = 'text/html; charset=utf-8';

// --- public API ------------------------------------------------------------------------------------------------

export interface SiteOptions {
  /** Folder served in static mode (ignored with `upstream`). */
  siteDir: string;
  /** `http://127.0.0.1:PORT`: reverse-proxy everything to this local web application instead of siteDir. */
  upstream?: string;
  /** Serve HTTPS with HTTP/2 (ALPN h2) and HTTP/1.1; without it plain HTTP/1.1 (`--plaintext` debugging). */
  tls?: { key: string | Buffer; cert: string | Buffer };
  /** Request log; false or absent: silent. */
  logger?: Logger | false;
  /** Open connections in total (default MAX_CONNECTIONS). */
  maxConnections?: number;
  /** Open connections per source address, IPv6 per /64 (default MAX_CONNECTIONS_PER_ADDRESS). */
  maxConnectionsPerAddress?: number;
  /** TLS handshake deadline from the accept (default SITE_TLS_HANDSHAKE_TIMEOUT_MS). */
  handshakeTimeoutMs?: number;
  /** How long close() lets connections being served finish (default SITE_CLOSE_GRACE_MS). */
  closeGraceMs?: number;
}

const guards = new WeakMap<FastifyInstance, ConnectionGuard>();

/** The connection guard of an app made by createSiteApp (the front releases accepted tunnels from it). */
export function siteConnectionGuard(app: FastifyInstance): ConnectionGuard | undefined {
  return guards.get(app);
}

/**
 * The repository's default decoy site (public/ at the package root), found from this module's location so it
 * works from src/server/site.ts and from dist/src/server/site.js alike.
 */
export const SITE_DEFAULT_DIR: string = findDefaultSiteDir();

/**
 * Builds the decoy site application. With `tls`, `app.server` is an `http2.Http2SecureServer` accepting h2 and
 * HTTP/1.1 (the front door feeds it connections); without, an `http.Server`. Not yet listening: call
 * `listen()` or hand it connections; `close()` is Fastify's (idempotent).
 */
export function createSiteApp(options: SiteOptions): FastifyInstance {
  const upstream = options.upstream === undefined ? undefined : parseUpstream(options.upstream);
  const siteDir = upstream === undefined ? checkSiteDir(options.siteDir) : options.siteDir;
  const tls = options.tls;
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? SITE_TLS_HANDSHAKE_TIMEOUT_MS;

  const modeHeaders = upstream === undefined ? STATIC_SECURITY_HEADERS : UPSTREAM_SECURITY_HEADERS;
  const securityHeaders =
    tls === undefined ? modeHeaders : [['strict-transport-security', HSTS_VALUE] as const, ...modeHeaders];
  const setSecurityHeaders = (reply: FastifyReply): void => {
    for (const [name, value] of securityHeaders) {
      if (!reply.hasHeader(name)) reply.header(name, value);
    }
  };

  const common: FastifyServerOptions = {
    keepAliveTimeout: SITE_KEEP_ALIVE_TIMEOUT_MS,
    requestTimeout: SITE_REQUEST_TIMEOUT_MS,
    // A URL longer than the default 100-character parameter limit would get Fastify's JSON 414; the request
    // head limit already bounds it.
    routerOptions: { maxParamLength: MAX_REQUEST_HEAD_BYTES },
    // Framing errors and slow heads get Node's own answer (Fastify's default would write JSON).
    clientErrorHandler: answerClientError,
    // Fastify answers these outside the route lifecycle, so the onSend hook does not run: headers set here.
    frameworkErrors: (_error, _request, reply) => {
      setSecurityHeaders(reply);
      sendErrorPage(reply, 400);
    },
  };
  if (options.logger) common.loggerInstance = options.logger;
  else common.logger = false;

  // The http2 and http1 overloads of Fastify() return differently-typed instances; callers use the common
  // surface (inject, listen, close, server), so both are exposed as the default FastifyInstance.
  const app = (tls === undefined
    ? Fastify(common)
    : Fastify({
        ...common,
        http2: true,
        http2SessionTimeout: SITE_HTTP2_SESSION_TIMEOUT_MS,
        // close() ends open h2 sessions too (Fastify does that for HTTP/2 on Node < 24 only when this is true);
        // otherwise a browser's idle session would hold shutdown for the whole session timeout.
        forceCloseConnections: true,
        https: {
          allowHTTP1: true,
          key: tls.key,
          cert: tls.cert,
          ...SITE_TLS_SETTINGS,
          handshakeTimeout: handshakeTimeoutMs,
          // http.Server turns Nagle off for every connection; Http2SecureServer does not, and an HTTP/1.1
          // answer written as head then body would wait ~40 ms for the client's delayed ACK.
          noDelay: true,
          // Extended CONNECT (RFC 8441) for the h2 tunnel transport (front/h2-connect.ts), and receive
          // windows a full-speed tunnel stream does not wait on. The plain reference site is this app too,
          // so a prober sees the same SETTINGS from both.
          settings: { enableConnectProtocol: true, initialWindowSize: H2_STREAM_WINDOW_BYTES },
        },
      } as FastifyHttp2SecureOptions<Http2SecureServer>)) as unknown as FastifyInstance;

  // Fastify sets these only on plain HTTP/1 servers; Node's Http2SecureServer leaves keepAliveTimeout unset
  // (an idle HTTP/1.1 connection would then stay open forever) and has no option for them.
  const server = app.server as unknown as {
    keepAliveTimeout?: number;
    headersTimeout?: number;
    requestTimeout?: number;
  };
  server.keepAliveTimeout = SITE_KEEP_ALIVE_TIMEOUT_MS;
  server.headersTimeout = SITE_HEADERS_TIMEOUT_MS;
  server.requestTimeout = SITE_REQUEST_TIMEOUT_MS;

  const guard = new ConnectionGuard({
    maxConnections: options.maxConnections ?? MAX_CONNECTIONS,
    maxConnectionsPerAddress: options.maxConnectionsPerAddress ?? MAX_CONNECTIONS_PER_ADDRESS,
    handshakeTimeoutMs,
    closeGraceMs: options.closeGraceMs ?? SITE_CLOSE_GRACE_MS,
  });
  guard.install(app.server as unknown as NetServer, tls !== undefined);
  guards.set(app, guard);
  // Before Fastify closes the server: Node's close would wait for handshakes that never finish.
  app.addHook('preClose', async () => {
    guard.close();
  });

  app.addHook('onSend', async (_request, reply, payload) => {
    setSecurityHeaders(reply);
    return payload;
  });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const status =
      typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 600
        ? error.statusCode
        : 500;
    if (status >= 500) request.log.error({ err: error }, 'site error');
    sendErrorPage(reply, status);
  });

  // Compressible types only (mime-db's list), above 1 KiB. br when the client offers it, else gzip; br runs at
  // quality 4 (the plugin default), which costs little CPU.
  app.register(fastifyCompress, { global: true, encodings: ['br', 'gzip'] });

  if (upstream !== undefined) {
    registerUpstream(app, upstream, tls !== undefined);
  } else {
    registerStatic(app, siteDir);
  }
  return app;
}

// --- static mode -----------------------------------------------------------------------------------------------

function registerStatic(app: FastifyInstance, siteDir: string): void {
  const notFoundPage = loadNotFoundPage(siteDir);
  const sendNotFound = (reply: FastifyReply): FastifyReply =>
    reply.code(404).type(HTML_TYPE).send(notFoundPage);

  // Methods a static site does not have end here, before Fastify would parse (and complain about) a body.
  app.addHook('onRequest', async (request, reply) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      await sendNotFound(reply);
    }
  });

  app.register(fastifyStatic, {
    root: siteDir,
    // @fastify/send follows symlinks: a link inside the folder must not serve what lies outside it.
    allowedPath: (pathname) => staysInside(siteDir, pathname),
    // Dotfiles (.git, .env, .htpasswd) are never part of a site; they look absent rather than forbidden.
    dotfiles: 'ignore',
    extensions: ['html'],
    // ETag, Last-Modified, Accept-Ranges and `Cache-Control: public, max-age=0` are @fastify/send defaults;
    // named here because the decoy's realism depends on them.
    etag: true,
    lastModified: true,
    acceptRanges: true,
    redirect: false,
  });

  app.setNotFoundHandler((_request, reply) => {
    sendNotFound(reply);
  });
}

function loadNotFoundPage(siteDir: string): Buffer {
  try {
    const file = path.join(siteDir, '404.html');
    if (!isInside(realpathSync.native(siteDir), realpathSync.native(file))) throw new Error('outside');
    return readFileSync(file);
  } catch {
    return Buffer.from(errorPageHtml(404));
  }
}

/**
 * Whether what @fastify/send would serve for `pathname` (as @fastify/static passes it: decodeURI'd, to be
 * encodeURI'd and fully decoded again) has its real path inside the site folder: the file itself, or for a
 * clean URL the .html file, or for a folder its index.html. Paths that do not exist pass (send answers them
 * with the 404 page anyway); any other failure to resolve (a symlink loop, no permission) fails.
 * Synchronous because @fastify/static calls it so; realpath(3) is one system call.
 */
function staysInside(siteDir: string, pathname: string): boolean {
  let decoded: string;
  try {
    decoded = decodeURIComponent(encodeURI(pathname));
  } catch {
    return true; // send answers the malformed path itself (400)
  }
  if (decoded.includes('\0')) return true; // send answers 400
  let root: string;
  try {
    root = realpathSync.native(siteDir);
  } catch {
    return false;
  }
  const relative = path.normalize(`.${path.sep}${decoded}`);
  if (relative === '..' || relative.startsWith(`..${path.sep}`)) return true; // send refuses it (403)
  const target = path.join(siteDir, relative);
  const candidates = decoded.endsWith('/')
    ? [path.join(target, 'index.html')]
    : [target, `${target}.html`, path.join(target, 'index.html')];
  for (const candidate of candidates) {
    let real: string;
    try {
      real = realpathSync.native(candidate);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      return false;
    }
    if (!isInside(root, real)) return false;
  }
  return true;
}

function isInside(root: string, real: string): boolean {
  return real === root || real.startsWith(root.endsWith(path.sep) ? root : `${root}${path.sep}`);
}

// --- upstream mode ---------------------------------------------------------------------------------------------

function registerUpstream(app: FastifyInstance, upstream: URL, overTls: boolean): void {
  app.register(fastifyHttpProxy, {
    upstream: upstream.origin,
    prefix: '/',
    // Protocol upgrades on this server belong to the front door; the decoy application gets plain requests.
    websocket: false,
    http: { requestOptions: { timeout: SITE_UPSTREAM_TIMEOUT_MS } },
    replyOptions: {
      // What a reverse proxy configured the usual way (`proxy_set_header Host $host` + X-Forwarded-*) passes,
      // so the application builds its links for the public name, not for 127.0.0.1.
      rewriteRequestHeaders: (request, headers) => {
        const host = request.headers[':authority'] ?? request.headers.host;
        const forwardedFor = request.headers['x-forwarded-for'];
        const clientIp = request.socket?.remoteAddress ?? '';
        return {
          ...headers,
          ...(typeof host === 'string' ? { host } : {}),
          'x-forwarded-for': typeof forwardedFor === 'string' ? `${forwardedFor}, ${clientIp}` : clientIp,
          'x-forwarded-proto': overTls ? 'https' : 'http',
        };
      },
      onError: (reply, { error }) => {
        const status = (error as { statusCode?: number }).statusCode === 504 ? 504 : 502;
        reply.log.warn({ err: error }, 'upstream unavailable');
        sendErrorPage(reply as FastifyReply, status);
      },
    },
  });
}

function parseUpstream(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw facadeError('SITE_UPSTREAM', [value, 'it is not a URL']);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw facadeError('SITE_UPSTREAM', [value, `protocol ${url.protocol} is not http: or https:`]);
  }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') {
    throw facadeError('SITE_UPSTREAM', [
      value,
      'give only scheme, host and port (the path is forwarded as is)',
    ]);
  }
  return url;
}

// --- shared pieces ---------------------------------------------------------------------------------------------

function checkSiteDir(siteDir: string): string {
  const absolute = path.resolve(siteDir);
  let isDirectory: boolean;
  try {
    isDirectory = statSync(absolute).isDirectory();
  } catch (err) {
    throw facadeError('SITE_DIR', [absolute, (err as NodeJS.ErrnoException).code ?? String(err)], {
      cause: err,
    });
  }
  if (!isDirectory) throw facadeError('SITE_DIR', [absolute, 'not a directory']);
  return absolute;
}

function errorPageHtml(status: number): string {
  const reason = STATUS_CODES[status] ?? 'Error';
  return (
    `<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>${status} ${reason}</title>\n` +
    `</head>\n<body>\n<center><h1>${status} ${reason}</h1></center>\n<hr>\n</body>\n</html>\n`
  );
}

/** A small error page in the style of a stock web server; 404s get the site's own page instead. */
function sendErrorPage(reply: FastifyReply, status: number): void {
  reply.code(status).type(HTML_TYPE).send(errorPageHtml(status));
}

function findDefaultSiteDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 5; depth += 1) {
    try {
      if (statSync(path.join(dir, 'package.json')).isFile()) return path.join(dir, 'public');
    } catch {
      // not the package root yet
    }
    dir = path.dirname(dir);
  }
  // Fallback for an unusual layout: dist/src/server -> repository root.
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../public');
}
