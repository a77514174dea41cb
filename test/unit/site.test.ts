// The decoy site over real loopback sockets: what a browser, a crawler or a scanner sees of a static site, and
// the reverse-proxy mode in front of a small local application.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import zlib from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { isFacadeError } from '../../src/core/errors.js';
import { createSiteApp, SITE_DEFAULT_DIR } from '../../src/front/site.js';
import { makeTestCertificate } from '../helpers/tls-fixture.js';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function get(
  port: number,
  urlPath: string,
  options: { method?: string; headers?: http.OutgoingHttpHeaders; body?: string } = {},
) {
  return new Promise<Answer>((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: urlPath,
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Sends raw bytes, collects everything the server writes until it closes the connection. */
function rawExchange(port: number, bytes: string | Buffer, timeoutMs = 5000) {
  return new Promise<{ text: string; closed: boolean }>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: false });
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: true });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNRESET') reject(err);
    });
    socket.write(bytes);
  });
}

async function listen(app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return (app.server.address() as AddressInfo).port;
}

function assertStaticSecurityHeaders(headers: http.IncomingHttpHeaders): void {
  assert.equal(headers['x-content-type-options'], 'nosniff');
  assert.equal(headers['x-frame-options'], 'DENY');
  assert.equal(headers['referrer-policy'], 'strict-origin-when-cross-origin');
  assert.match(String(headers['content-security-policy']), /default-src 'self'.*frame-ancestors 'none'/);
}

const notFoundHtml = readFileSync(path.join(SITE_DEFAULT_DIR, '404.html'));
const indexHtml = readFileSync(path.join(SITE_DEFAULT_DIR, 'index.html'));

describe('static site over HTTP/1.1', () => {
  let app: FastifyInstance;
  let port: number;
  before(async () => {
    app = createSiteApp({ siteDir: SITE_DEFAULT_DIR });
    port = await listen(app);
  });
  after(() => app.close());

  test('SITE_DEFAULT_DIR is the repository public/ folder', () => {
    assert.ok(path.isAbsolute(SITE_DEFAULT_DIR));
    assert.equal(path.basename(SITE_DEFAULT_DIR), 'public');
    assert.match(indexHtml.toString(), /<title>[^<]+<\/title>/);
  });

  test('home page: 200 text/html with the security headers and validators', async () => {
    const res = await get(port, '/');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    assert.deepEqual(res.body, indexHtml);
    assertStaticSecurityHeaders(res.headers);
    assert.equal(res.headers['strict-transport-security'], undefined, 'no HSTS over plain HTTP');
    assert.ok(res.headers.etag);
    assert.ok(res.headers['last-modified']);
    assert.equal(res.headers['x-powered-by'], undefined);
    // A keep-alive client learns the idle timeout (SITE_KEEP_ALIVE_TIMEOUT_MS) as from nginx's keepalive_timeout.
    const raw = await rawExchange(port, 'GET /robots.txt HTTP/1.1\r\nHost: a\r\n\r\n', 500);
    assert.match(raw.text, /\r\nKeep-Alive: timeout=75\r\n/);
    assert.equal(raw.closed, false, 'the connection stays open after the answer');
  });

  test('clean URLs: /about serves about.html', async () => {
    const res = await get(port, '/about');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, readFileSync(path.join(SITE_DEFAULT_DIR, 'about.html')));
  });

  test('ETag then If-None-Match gives 304 without a body', async () => {
    const first = await get(port, '/css/site.css');
    const etag = first.headers.etag;
    assert.ok(etag);
    const second = await get(port, '/css/site.css', { headers: { 'if-none-match': etag } });
    assert.equal(second.status, 304);
    assert.equal(second.body.length, 0);
    assert.equal(second.headers.etag, etag);
    const other = await get(port, '/css/site.css', { headers: { 'if-none-match': '"not-the-etag"' } });
    assert.equal(other.status, 200);
  });

  test('Last-Modified then If-Modified-Since gives 304; an older date gives 200', async () => {
    const first = await get(port, '/robots.txt');
    const lastModified = first.headers['last-modified'];
    assert.ok(lastModified);
    const same = await get(port, '/robots.txt', { headers: { 'if-modified-since': lastModified } });
    assert.equal(same.status, 304);
    const older = new Date(Date.parse(lastModified) - 86_400_000).toUTCString();
    const changed = await get(port, '/robots.txt', { headers: { 'if-modified-since': older } });
    assert.equal(changed.status, 200);
    assert.ok(changed.body.length > 0);
  });

  test('HEAD has the GET headers and no body', async () => {
    const res = await get(port, '/', { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(res.body.length, 0);
    assert.equal(Number(res.headers['content-length']), indexHtml.length);
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    assertStaticSecurityHeaders(res.headers);
    // On the wire, not only as the client library reports it: nothing follows the head.
    const raw = await rawExchange(port, 'HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.ok(raw.text.endsWith('\r\n\r\n'), 'HEAD response ends with its head');
  });

  test('Range gives 206 with Content-Range and exactly those bytes', async () => {
    const res = await get(port, '/', { headers: { range: 'bytes=10-49' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers['content-range'], `bytes 10-49/${indexHtml.length}`);
    assert.deepEqual(res.body, indexHtml.subarray(10, 50));
    const unsatisfiable = await get(port, '/', { headers: { range: `bytes=${indexHtml.length + 10}-` } });
    assert.equal(unsatisfiable.status, 416);
    // Compression never applies to partial content (the offsets are of the unencoded file).
    const withGzip = await get(port, '/', { headers: { range: 'bytes=0-9', 'accept-encoding': 'gzip' } });
    assert.equal(withGzip.status, 206);
    assert.equal(withGzip.headers['content-encoding'], undefined);
  });

  test('gzip and br when Accept-Encoding asks; identity otherwise', async () => {
    const gz = await get(port, '/css/site.css', { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(gz.status, 200);
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.match(String(gz.headers.vary), /accept-encoding/i);
    const css = readFileSync(path.join(SITE_DEFAULT_DIR, 'css/site.css'));
    assert.deepEqual(zlib.gunzipSync(gz.body), css);
    assert.ok(gz.body.length < css.length);
    const br = await get(port, '/', { headers: { 'accept-encoding': 'br' } });
    assert.equal(br.headers['content-encoding'], 'br');
    assert.deepEqual(zlib.brotliDecompressSync(br.body), indexHtml);
    const plain = await get(port, '/css/site.css');
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.deepEqual(plain.body, css);
  });

  test('unknown paths, dotfiles and directories get the 404 page with status 404', async () => {
    for (const urlPath of ['/no-such-page', '/wp-login.php', '/.git/config', '/.env', '/img', '/css/']) {
      const res = await get(port, urlPath);
      assert.equal(res.status, 404, urlPath);
      assert.equal(res.headers['content-type'], 'text/html; charset=utf-8', urlPath);
      assert.deepEqual(res.body, notFoundHtml, urlPath);
      assertStaticSecurityHeaders(res.headers);
    }
  });

  test('methods other than GET and HEAD get the same 404, whatever the body', async () => {
    const cases: Array<[string, string, http.OutgoingHttpHeaders]> = [
      ['POST', '/', { 'content-type': 'application/json', 'content-length': '4' }],
      ['PUT', '/x', { 'content-type': 'application/x-unknown', 'content-length': '4' }],
      ['OPTIONS', '/', {}],
      ['DELETE', '/index.html', {}],
      ['PATCH', '/about', {}],
    ];
    for (const [method, urlPath, headers] of cases) {
      const res = await get(port, urlPath, {
        method,
        headers,
        ...(headers['content-length'] ? { body: '{bad' } : {}),
      });
      assert.equal(res.status, 404, `${method} ${urlPath}`);
      assert.deepEqual(res.body, notFoundHtml, `${method} ${urlPath}`);
    }
  });

  test('robots.txt and favicon.ico are served with their types', async () => {
    const robots = await get(port, '/robots.txt');
    assert.equal(robots.status, 200);
    assert.equal(robots.headers['content-type'], 'text/plain; charset=utf-8');
    assert.match(robots.body.toString(), /^User-agent: \*/m);
    const icon = await get(port, '/favicon.ico');
    assert.equal(icon.status, 200);
    assert.match(String(icon.headers['content-type']), /^image\/(x-icon|vnd\.microsoft\.icon)$/);
    // ICONDIR: reserved 0, type 1 (icon), at least one image.
    assert.equal(icon.body.readUInt16LE(0), 0);
    assert.equal(icon.body.readUInt16LE(2), 1);
    assert.ok(icon.body.readUInt16LE(4) >= 1);
  });

  test('a malformed URL gets an HTML 400, not a JSON error', async () => {
    const res = await get(port, '/%zz');
    assert.equal(res.status, 400);
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    assert.match(res.body.toString(), /400 Bad Request/);
    assertStaticSecurityHeaders(res.headers);
  });

  test("requests the HTTP parser rejects get Node's own 400/431, byte for byte, and the connection closes", async () => {
    // What a node:http server without a 'clientError' listener sends (Fastify's default would be JSON).
    const plain = http.createServer((_req, res) => res.end());
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    const plainPort = plain.address() as AddressInfo;
    try {
      for (const bytes of [
        'FOO BAR BAZ\r\n\r\n',
        'GET / HTTP/1.1\r\nHost: a\r\nThis is not a header\r\n\r\n',
        `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      ]) {
        const [ours, node] = await Promise.all([
          rawExchange(port, bytes),
          rawExchange(plainPort.port, bytes),
        ]);
        assert.ok(ours.closed);
        assert.deepEqual(ours, node, JSON.stringify(bytes.slice(0, 40)));
      }
    } finally {
      plain.close();
    }
    const huge = await rawExchange(port, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.equal(huge.text, 'HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n');
  });
});

describe('static site over TLS: h2 by ALPN and HTTP/1.1', () => {
  let app: FastifyInstance;
  let port: number;
  let certDir: string;
  let cert: string;
  before(async () => {
    certDir = mkdtempSync(path.join(os.tmpdir(), 'facade-site-'));
    const certificate = await makeTestCertificate(certDir, ['localhost']);
    cert = certificate.cert;
    app = createSiteApp({ siteDir: SITE_DEFAULT_DIR, tls: { key: certificate.key, cert } });
    port = await listen(app);
  });
  after(async () => {
    await app.close();
    rmSync(certDir, { recursive: true, force: true });
  });

  test('an h2 client gets the home page with HSTS and the security headers', async () => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: cert, servername: 'localhost' });
    try {
      const { headers, body } = await new Promise<{ headers: http2.IncomingHttpHeaders; body: Buffer }>(
        (resolve, reject) => {
          const stream = session.request({ ':path': '/', 'accept-encoding': 'identity' });
          let responseHeaders: http2.IncomingHttpHeaders = {};
          const chunks: Buffer[] = [];
          stream.on('response', (h) => {
            responseHeaders = h;
          });
          stream.on('data', (c: Buffer) => chunks.push(c));
          stream.on('end', () => resolve({ headers: responseHeaders, body: Buffer.concat(chunks) }));
          stream.on('error', reject);
          stream.end();
        },
      );
      assert.equal(session.alpnProtocol, 'h2');
      assert.equal(headers[':status'], 200);
      assert.equal(headers['strict-transport-security'], 'max-age=31536000');
      assert.equal(headers['x-content-type-options'], 'nosniff');
      assert.deepEqual(body, indexHtml);
    } finally {
      session.close();
    }
  });

  test('an HTTP/1.1-only client still gets the site, with HSTS', async (t) => {
    const agent = new https.Agent({ keepAlive: true });
    t.after(() => agent.destroy());
    const res = await new Promise<Answer>((resolve, reject) => {
      const req = https.request(
        { host: '127.0.0.1', port, path: '/nope', ca: cert, servername: 'localhost', agent },
        (r) => {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () =>
            resolve({ status: r.statusCode ?? 0, headers: r.headers, body: Buffer.concat(chunks) }),
          );
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.equal(res.status, 404);
    assert.equal(res.headers['strict-transport-security'], 'max-age=31536000');
    assert.equal(
      res.headers['keep-alive'],
      'timeout=75',
      'keep-alive timeout applies to HTTP/1.1 over TLS too',
    );
    assert.deepEqual(res.body, notFoundHtml);
  });
});

describe('symlinks in the site folder', () => {
  // A site folder with links to a file and a folder outside it, and (allowed) links that stay inside.
  let base: string;
  let app: FastifyInstance;
  let port: number;
  const secret = 'outside-the-site-folder\n';
  before(async () => {
    base = mkdtempSync(path.join(os.tmpdir(), 'facade-site-links-'));
    const site = path.join(base, 'site');
    const outside = path.join(base, 'outside');
    mkdirSync(path.join(site, 'docs'), { recursive: true });
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'secret.txt'), secret);
    writeFileSync(path.join(outside, 'index.html'), secret);
    writeFileSync(path.join(outside, 'page.html'), secret);
    writeFileSync(path.join(site, 'index.html'), '<!doctype html><title>home</title>\n');
    writeFileSync(path.join(site, 'docs', 'real.txt'), 'inside\n');
    symlinkSync(path.join(outside, 'secret.txt'), path.join(site, 'secret.txt'));
    symlinkSync('/etc/hostname', path.join(site, 'hostname'));
    symlinkSync(path.join(outside, 'page.html'), path.join(site, 'page.html'));
    symlinkSync(outside, path.join(site, 'out'));
    symlinkSync(path.join(site, 'docs', 'real.txt'), path.join(site, 'inside-link.txt'));
    symlinkSync(path.join(site, 'docs'), path.join(site, 'docs-link'));
    app = createSiteApp({ siteDir: site });
    port = await listen(app);
  });
  after(async () => {
    await app?.close();
    rmSync(base, { recursive: true, force: true });
  });

  test('a link to a file or a folder outside the folder gets the 404 page', async () => {
    for (const urlPath of [
      '/secret.txt',
      '/hostname',
      '/page',
      '/page.html',
      '/out/secret.txt',
      '/out/',
      '/out',
      '/out/page',
      '/%6fut/secret.txt',
    ]) {
      const res = await get(port, urlPath);
      assert.equal(res.status, 404, urlPath);
      assert.ok(!res.body.toString().includes('outside-the-site-folder'), urlPath);
      assert.match(res.body.toString(), /404/, urlPath);
    }
    const head = await get(port, '/secret.txt', { method: 'HEAD' });
    assert.equal(head.status, 404);
  });

  test('links that stay inside the folder are served', async () => {
    assert.equal((await get(port, '/inside-link.txt')).body.toString(), 'inside\n');
    assert.equal((await get(port, '/docs-link/real.txt')).body.toString(), 'inside\n');
    assert.equal((await get(port, '/docs/real.txt')).status, 200);
    assert.equal((await get(port, '/')).status, 200);
  });
});

describe('TLS versions and suites', () => {
  let app: FastifyInstance;
  let port: number;
  let certDir: string;
  before(async () => {
    certDir = mkdtempSync(path.join(os.tmpdir(), 'facade-site-tls-'));
    const certificate = await makeTestCertificate(certDir, ['localhost']);
    app = createSiteApp({ siteDir: SITE_DEFAULT_DIR, tls: { key: certificate.key, cert: certificate.cert } });
    port = await listen(app);
  });
  after(async () => {
    await app?.close();
    rmSync(certDir, { recursive: true, force: true });
  });

  function handshake(options: tls.ConnectionOptions): Promise<{ version: string | null; cipher: string }> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        servername: 'localhost',
        rejectUnauthorized: false,
        ...options,
      });
      socket.once('secureConnect', () => {
        const result = { version: socket.getProtocol(), cipher: socket.getCipher().standardName };
        socket.destroy();
        resolve(result);
      });
      socket.once('error', (err) => {
        socket.destroy();
        reject(err);
      });
    });
  }

  const tls12 = { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } as const;

  // The test certificate is RSA (the self-signed default's key, as openssl req makes it); an ACME certificate
  // is ECDSA, and takes the ECDSA twins of the same suites from the same list.
  test('TLS 1.2 refuses CBC and CCM8 suites', async () => {
    for (const cipher of [
      'ECDHE-RSA-AES128-SHA',
      'ECDHE-RSA-AES256-SHA',
      'ECDHE-RSA-AES128-SHA256',
      'ECDHE-RSA-AES256-SHA384',
      'AES128-CCM8',
      'DHE-RSA-AES256-CCM8',
      'DHE-RSA-AES128-CCM',
    ]) {
      await assert.rejects(
        handshake({ ...tls12, ciphers: cipher }),
        /handshake failure|no shared cipher|alert/i,
        cipher,
      );
    }
  });

  test('TLS 1.2 with ECDHE and AES-GCM or ChaCha20-Poly1305 works; TLS 1.3 is unchanged', async () => {
    for (const cipher of [
      'ECDHE-RSA-AES128-GCM-SHA256',
      'ECDHE-RSA-AES256-GCM-SHA384',
      'ECDHE-RSA-CHACHA20-POLY1305',
    ]) {
      const result = await handshake({ ...tls12, ciphers: cipher });
      assert.equal(result.version, 'TLSv1.2', cipher);
    }
    for (const suite of [
      'TLS_AES_128_GCM_SHA256',
      'TLS_AES_256_GCM_SHA384',
      'TLS_CHACHA20_POLY1305_SHA256',
    ]) {
      const result = await handshake({ minVersion: 'TLSv1.3', ciphers: suite });
      assert.deepEqual(result, { version: 'TLSv1.3', cipher: suite });
    }
    await assert.rejects(
      handshake({ minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
    );
  });
});

describe('upstream mode', () => {
  let upstream: http.Server;
  let upstreamPort: number;
  let app: FastifyInstance;
  let port: number;
  before(async () => {
    upstream = http.createServer((req, res) => {
      const echo = JSON.stringify({
        method: req.method,
        url: req.url,
        host: req.headers.host,
        forwardedFor: req.headers['x-forwarded-for'],
        forwardedProto: req.headers['x-forwarded-proto'],
      });
      res.writeHead(req.url === '/missing' ? 404 : 200, {
        'content-type': 'application/json',
        'x-frame-options': 'SAMEORIGIN',
      });
      res.end(echo);
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    upstreamPort = (upstream.address() as AddressInfo).port;
    app = createSiteApp({ siteDir: SITE_DEFAULT_DIR, upstream: `http://127.0.0.1:${upstreamPort}` });
    port = await listen(app);
  });
  after(async () => {
    await app.close();
    upstream.close();
  });

  test('every method and path goes to the application, with the public Host and X-Forwarded-*', async () => {
    const res = await get(port, '/shop/item?id=7', { headers: { host: 'www.example.test' } });
    assert.equal(res.status, 200);
    const seen = JSON.parse(res.body.toString());
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/shop/item?id=7');
    assert.equal(seen.host, 'www.example.test');
    assert.equal(seen.forwardedFor, '127.0.0.1');
    assert.equal(seen.forwardedProto, 'http');
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.equal(res.headers['x-frame-options'], 'SAMEORIGIN', "the application's own header is kept");
    assert.equal(
      res.headers['content-security-policy'],
      undefined,
      'no static CSP imposed on the application',
    );
    const post = await get(port, '/form', { method: 'POST', headers: { 'content-length': '0' } });
    assert.equal(JSON.parse(post.body.toString()).method, 'POST');
    const missing = await get(port, '/missing');
    assert.equal(missing.status, 404, "the application's 404 passes through");
  });

  test('a 502 page when the application is down', async () => {
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
    upstream.closeAllConnections();
    const res = await get(port, '/');
    assert.equal(res.status, 502);
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    assert.match(res.body.toString(), /502 Bad Gateway/);
  });
});

describe('bad options', () => {
  test('a missing site folder is a coded error naming it', () => {
    assert.throws(
      () => createSiteApp({ siteDir: '/nonexistent/facade-site' }),
      (err: unknown) => isFacadeError(err, 'SITE_DIR') && err.message.includes('/nonexistent/facade-site'),
    );
  });

  test('an upstream that is not an http(s) origin is a coded error', () => {
    for (const value of ['127.0.0.1:8080', 'ftp://127.0.0.1/', 'http://127.0.0.1:8080/app']) {
      assert.throws(
        () => createSiteApp({ siteDir: SITE_DEFAULT_DIR, upstream: value }),
        (err: unknown) => isFacadeError(err, 'SITE_UPSTREAM') && err.message.includes(value),
        value,
      );
    }
  });
});
