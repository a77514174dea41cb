// What a curious scanner might send to an HTTPS server it suspects: each probe must get the same answer from
// facade as from a plain site server. Credentials here are never valid: a valid tunnel request is not a probe.

import { randomBytes } from 'node:crypto';
import type { H2Probe } from '../helpers/h2-probe.js';
import type { Probe } from '../helpers/raw-probe.js';

export interface CatalogOptions {
  /** The facade server's secret tunnel path, e.g. "/a8Qz/connect". */
  readonly tunnelPath: string;
  /** A user that exists on the facade server (its password is not used here). */
  readonly knownUser: string;
}

const H = 'Host: localhost\r\n';

function basic(text: string): string {
  return `Basic ${Buffer.from(text, 'latin1').toString('base64')}`;
}

/** Authorization value in the tunnel's format with a random (so wrong) 32-byte client key. */
function wrongKeyFor(user: string): string {
  return basic(`${user}:${randomBytes(32).toString('base64url')}`);
}

function upgradeHead(target: string, authorization: string | null, upgrade = 'facade'): string {
  const auth = authorization === null ? '' : `Authorization: ${authorization}\r\n`;
  return `GET ${target} HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: ${upgrade}\r\n${auth}\r\n`;
}

function webSocketHead(target: string, authorization: string, key: string): string {
  return (
    `GET ${target} HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nAuthorization: ${authorization}\r\n\r\n`
  );
}

export function buildProbeCatalog(options: CatalogOptions): Probe[] {
  const { tunnelPath, knownUser } = options;
  const one = (name: string, data: string, extra: Partial<Probe> = {}): Probe => ({
    name,
    steps: [{ data }],
    ...extra,
  });
  return [
    // Methods on the home page, an unknown path and the tunnel path.
    one('GET /', `GET / HTTP/1.1\r\n${H}\r\n`),
    one('HEAD /', `HEAD / HTTP/1.1\r\n${H}\r\n`),
    one('OPTIONS /', `OPTIONS / HTTP/1.1\r\n${H}\r\n`),
    one('OPTIONS *', `OPTIONS * HTTP/1.1\r\n${H}\r\n`),
    one(
      'POST / with a body',
      `POST / HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}`,
    ),
    one('PUT /x', `PUT /x HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nabc`),
    one('GET unknown path', `GET /no-such-page HTTP/1.1\r\n${H}\r\n`),
    one('HEAD unknown path', `HEAD /no-such-page HTTP/1.1\r\n${H}\r\n`),
    one('POST unknown path', `POST /no-such-page HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`),
    one('GET tunnel path', `GET ${tunnelPath} HTTP/1.1\r\n${H}\r\n`),
    one('HEAD tunnel path', `HEAD ${tunnelPath} HTTP/1.1\r\n${H}\r\n`),
    one('POST tunnel path', `POST ${tunnelPath} HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`),
    one('OPTIONS tunnel path', `OPTIONS ${tunnelPath} HTTP/1.1\r\n${H}\r\n`),
    one('GET tunnel path, Connection: close', `GET ${tunnelPath} HTTP/1.1\r\n${H}Connection: close\r\n\r\n`),

    // The tunnel path with no, wrong and malformed credentials.
    one('upgrade, no credentials', upgradeHead(tunnelPath, null)),
    one('upgrade, unknown user', upgradeHead(tunnelPath, wrongKeyFor('nobody-here'))),
    one('upgrade, known user, wrong key', upgradeHead(tunnelPath, wrongKeyFor(knownUser))),
    one('upgrade, Basic user:password', upgradeHead(tunnelPath, basic(`${knownUser}:hunter2`))),
    one('upgrade, not base64', upgradeHead(tunnelPath, 'Basic !!!not-base64!!!')),
    one('upgrade, Bearer scheme', upgradeHead(tunnelPath, 'Bearer abc.def.ghi')),
    one('upgrade, huge Authorization', upgradeHead(tunnelPath, basic('x'.repeat(6000)))),
    one(
      'credentials without upgrade',
      `GET ${tunnelPath} HTTP/1.1\r\n${H}Authorization: ${wrongKeyFor(knownUser)}\r\n\r\n`,
    ),
    one('upgrade, HTTP/1.0', upgradeHead(tunnelPath, wrongKeyFor(knownUser)).replace('HTTP/1.1', 'HTTP/1.0')),

    // Upgrade requests elsewhere and of other kinds.
    one(
      'websocket upgrade on /',
      `GET / HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    ),
    one(
      'websocket upgrade on tunnel path',
      `GET ${tunnelPath} HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    ),
    one(
      'websocket upgrade on tunnel path, known user, wrong key',
      webSocketHead(tunnelPath, wrongKeyFor(knownUser), 'dGhlIHNhbXBsZSBub25jZQ=='),
    ),
    one(
      'websocket upgrade on tunnel path, unknown user',
      webSocketHead(tunnelPath, wrongKeyFor('nobody-here'), 'dGhlIHNhbXBsZSBub25jZQ=='),
    ),
    one(
      'websocket upgrade on tunnel path, malformed key',
      webSocketHead(tunnelPath, wrongKeyFor(knownUser), 'not-a-websocket-key'),
    ),
    one(
      'websocket upgrade on tunnel path, version 8',
      webSocketHead(tunnelPath, wrongKeyFor(knownUser), 'dGhlIHNhbXBsZSBub25jZQ==').replace(
        'Version: 13',
        'Version: 8',
      ),
    ),
    one(
      'websocket upgrade on tunnel path, then a frame',
      `${webSocketHead(tunnelPath, wrongKeyFor(knownUser), 'dGhlIHNhbXBsZSBub25jZQ==')}\x82\x84\x01\x02\x03\x04abcd`,
    ),
    one(
      'h2c upgrade on tunnel path',
      `GET ${tunnelPath} HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`,
    ),
    one('nonsense upgrade on tunnel path', upgradeHead(tunnelPath, null, 'x-nonsense/9')),

    // Protocol versions and malformed input.
    one('HTTP/1.0 GET /', 'GET / HTTP/1.0\r\n\r\n'),
    one('HTTP/1.0 GET tunnel path', `GET ${tunnelPath} HTTP/1.0\r\n\r\n`),
    one('HTTP/0.9 style request', 'GET /\r\n\r\n'),
    one('malformed request line', 'GET\r\n\r\n'),
    one('unknown method', `BREW ${tunnelPath} HTTP/1.1\r\n${H}\r\n`),
    one('bad header line', `GET ${tunnelPath} HTTP/1.1\r\n${H}This is not a header\r\n\r\n`),
    one('bad percent-encoding', `GET /%zz HTTP/1.1\r\n${H}\r\n`),
    one('tunnel path with a query', `GET ${tunnelPath}?x=1 HTTP/1.1\r\n${H}\r\n`),
    one('tunnel path, trailing slash', `GET ${tunnelPath}/ HTTP/1.1\r\n${H}\r\n`),
    one('huge header on /', `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(20_000)}\r\n\r\n`),
    one(
      'huge header on tunnel path',
      `GET ${tunnelPath} HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
    ),
    one('garbage right after the handshake', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n\0\0\0'),
    one('HTTP/2 preface over http/1.1', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),

    // Pipelined and keep-alive sequences.
    one(
      'two pipelined requests via tunnel path',
      `GET ${tunnelPath} HTTP/1.1\r\n${H}\r\nGET / HTTP/1.1\r\n${H}\r\n`,
    ),

    // Slow and idle clients (short waits: the timeouts themselves are minutes long).
    {
      name: 'slowly sent head on tunnel path',
      steps: [
        { data: `GET ${tunnelPath} HTTP/1.1\r\n` },
        { data: H, delayMs: 300 },
        { data: 'Connection: Upgrade\r\n', delayMs: 300 },
        { data: 'Upgrade: facade\r\n\r\n', delayMs: 300 },
      ],
    },
    {
      name: 'slowly sent head on /',
      steps: [{ data: 'GET / HTT' }, { data: `P/1.1\r\n${H}`, delayMs: 300 }, { data: '\r\n', delayMs: 300 }],
    },
    { name: 'idle connection (nothing sent)', steps: [], idleMs: 2000 },
    {
      name: 'incomplete head left open',
      steps: [{ data: `GET ${tunnelPath} HTTP/1.1\r\n${H}` }],
      idleMs: 2000,
    },
  ];
}

/**
 * What a scanner sends to port 80 (plain TCP): valid requests of every method and form, every shape of Host,
 * HTTP/1.0 and 0.9, malformed and oversized heads, bodies, other protocols' greetings, slow and idle clients.
 * facade's port-80 listener must answer each exactly as the plain reference's redirect server does; none
 * names a token being validated, the one thing that differs by design.
 */
export function buildPlainHttpProbeCatalog(): Probe[] {
  const one = (name: string, data: string | Buffer, extra: Partial<Probe> = {}): Probe => ({
    name,
    steps: [{ data }],
    ...extra,
  });
  const get = (target: string, headers = H, version = 'HTTP/1.1'): string =>
    `GET ${target} ${version}\r\n${headers}\r\n`;
  // A TLS 1.2 ClientHello record's start, as nmap's SSL probes and any https:// client on port 80 send.
  const clientHello = Buffer.from(
    `16030100c4010000c00303${'00'.repeat(32)}000004c02fc03001000093000000`,
    'hex',
  );
  return [
    // Requests a redirect server meets every day.
    one('GET /', get('/')),
    one('HEAD /', `HEAD / HTTP/1.1\r\n${H}\r\n`),
    one('GET a page with a query', get('/blog/post.html?utm_source=x&q=%20a')),
    one('GET //double//slashes', get('//double//slashes')),
    one('GET /../../etc/passwd', get('/../../etc/passwd')),
    one('GET /robots.txt, Connection: close', get('/robots.txt', `${H}Connection: close\r\n`)),
    one(
      'GET with a browser head',
      get('/', `${H}User-Agent: Mozilla/5.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n`),
    ),
    one('ACME path, unknown token', get('/.well-known/acme-challenge/unknown-token_1')),
    one('ACME path, bad token', get('/.well-known/acme-challenge/../../x')),
    one('ACME path, POST', `POST /.well-known/acme-challenge/x HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`),
    one('HEAD ACME path', `HEAD /.well-known/acme-challenge/abc HTTP/1.1\r\n${H}\r\n`),

    // Other methods, with and without bodies.
    one(
      'POST / with a body',
      `POST / HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}`,
    ),
    one('POST chunked', `POST /form HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`),
    one('PUT /x', `PUT /x HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nabc`),
    one('DELETE /x', `DELETE /x HTTP/1.1\r\n${H}\r\n`),
    one('PATCH /x', `PATCH /x HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`),
    one('OPTIONS /', `OPTIONS / HTTP/1.1\r\n${H}\r\n`),
    one('OPTIONS *', `OPTIONS * HTTP/1.1\r\n${H}\r\n`),
    one('TRACE /', `TRACE / HTTP/1.1\r\n${H}\r\n`),
    one('CONNECT host:443', `CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n`),
    one('PROPFIND /', `PROPFIND / HTTP/1.1\r\n${H}Depth: 1\r\n\r\n`),
    one('Expect: 100-continue', `POST /up HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 4\r\n\r\n`),
    one('POST, body announced, half sent', `POST / HTTP/1.1\r\n${H}Content-Length: 100000\r\n\r\nabc`),

    // Host, every way.
    one('Host with port 80', get('/a', 'Host: localhost:80\r\n')),
    one('Host with another port', get('/a', 'Host: localhost:8080\r\n')),
    one('Host an IPv4 address', get('/a', 'Host: 127.0.0.1\r\n')),
    one('Host an IPv6 address', get('/a', 'Host: [::1]:80\r\n')),
    one('Host with a space', get('/a', 'Host: bad host\r\n')),
    one('Host with a slash', get('/a', 'Host: evil.test/x\r\n')),
    one('Host empty', get('/a', 'Host: \r\n')),
    one('two Host headers', get('/a', 'Host: one.test\r\nHost: two.test\r\n')),
    one('no Host, HTTP/1.1', get('/a', '')),
    one('absolute-form target', get('http://example.com/p?q=1')),
    one('absolute-form, no path', get('https://example.com')),
    one('other scheme target', get('ftp://example.com/x')),

    // Versions.
    one('HTTP/1.0 without Host', get('/a', '', 'HTTP/1.0')),
    one('HTTP/1.0 with Host', get('/a', H, 'HTTP/1.0')),
    one('HTTP/1.0 keep-alive', get('/a', `${H}Connection: keep-alive\r\n`, 'HTTP/1.0')),
    one('HTTP/0.9 style request', 'GET /\r\n\r\n'),
    one('HTTP/1.2', get('/', H, 'HTTP/1.2')),
    one('HTTP/2.0 request line', get('/', H, 'HTTP/2.0')),
    one('HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
    one(
      'websocket upgrade',
      get(
        '/',
        `${H}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n`,
      ),
    ),
    one(
      'h2c upgrade',
      get(
        '/',
        `${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n`,
      ),
    ),

    // Malformed and oversized.
    one('malformed request line', 'GET\r\n\r\n'),
    one('unknown method', `BREW / HTTP/1.1\r\n${H}\r\n`),
    one('lower-case method', `get / HTTP/1.1\r\n${H}\r\n`),
    one('bad header line', `GET / HTTP/1.1\r\n${H}This is not a header\r\n\r\n`),
    one('space before the colon', `GET / HTTP/1.1\r\nHost : localhost\r\n\r\n`),
    one('bare LF line ends', 'GET / HTTP/1.1\nHost: localhost\n\n'),
    one('NUL in the path', get('/a\0b')),
    one(
      'Content-Length and Transfer-Encoding',
      `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    ),
    one(
      'two different Content-Lengths',
      `POST / HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab`,
    ),
    one('negative Content-Length', `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n`),
    one('bad chunk', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n`),
    one('huge header', get('/', `${H}X-Big: ${'a'.repeat(20_000)}\r\n`)),
    one('huge URL', get(`/${'u'.repeat(20_000)}`)),
    one('many headers', get('/', `${H}${'X-A: b\r\n'.repeat(3000)}`)),

    // Other protocols and noise.
    one('TLS ClientHello', clientHello),
    one('SSH greeting', 'SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n'),
    one('empty lines', '\r\n\r\n'),
    one('random bytes', randomBytes(64)),
    one('two pipelined requests', `${get('/one')}${get('/two')}`),
    one('a request, then garbage', `${get('/one')}\x00\x01\x02 not http\r\n\r\n`),

    // Slow and idle clients (short waits: Node's timeouts are a minute and more).
    {
      name: 'slowly sent head',
      steps: [{ data: 'GET / HTT' }, { data: `P/1.1\r\n${H}`, delayMs: 300 }, { data: '\r\n', delayMs: 300 }],
    },
    { name: 'idle connection (nothing sent)', steps: [], idleMs: 2000 },
    { name: 'incomplete head left open', steps: [{ data: `GET / HTTP/1.1\r\n${H}` }], idleMs: 2000 },
  ];
}

/**
 * What a prober sends over HTTP/2 (ALPN h2) to a site it suspects of hiding a tunnel: ordinary requests,
 * and extended CONNECT (RFC 8441) on the tunnel path and elsewhere, with no, wrong and malformed
 * credentials and other :protocol values. Each must get what the plain site answers.
 */
export function buildH2ProbeCatalog(tunnelPath: string, knownUser: string): H2Probe[] {
  const get = (path: string, method = 'GET'): H2Probe => ({
    name: `${method} ${path}`,
    headers: { ':method': method, ':path': path, ':scheme': 'https', ':authority': 'localhost' },
  });
  const connect = (name: string, path: string, protocol: string, authorization?: string): H2Probe => ({
    name,
    headers: {
      ':method': 'CONNECT',
      ':protocol': protocol,
      ':scheme': 'https',
      ':path': path,
      ':authority': 'localhost',
      ...(authorization === undefined ? {} : { authorization }),
    },
  });
  return [
    get('/'),
    get('/', 'HEAD'),
    get('/no-such-page'),
    get(tunnelPath),
    get(tunnelPath, 'HEAD'),
    get(tunnelPath, 'POST'),
    get(tunnelPath, 'OPTIONS'),
    {
      ...get(tunnelPath),
      name: 'GET tunnel path with credentials',
      headers: { ...get(tunnelPath).headers, authorization: wrongKeyFor(knownUser) },
    },
    connect('CONNECT facade on tunnel path, no credentials', tunnelPath, 'facade'),
    connect(
      'CONNECT facade on tunnel path, known user, wrong key',
      tunnelPath,
      'facade',
      wrongKeyFor(knownUser),
    ),
    connect('CONNECT facade on tunnel path, unknown user', tunnelPath, 'facade', wrongKeyFor('nobody-here')),
    connect('CONNECT facade on tunnel path, not base64', tunnelPath, 'facade', 'Basic !!!not-base64!!!'),
    connect('CONNECT facade on tunnel path, Bearer', tunnelPath, 'facade', 'Bearer abc.def'),
    connect('CONNECT websocket on tunnel path, wrong key', tunnelPath, 'websocket', wrongKeyFor(knownUser)),
    connect('CONNECT other protocol on tunnel path', tunnelPath, 'x-nonsense', wrongKeyFor(knownUser)),
    connect('CONNECT facade on /', '/', 'facade', wrongKeyFor(knownUser)),
    connect('CONNECT facade on an unknown path', '/no-such-page', 'facade'),
    connect(
      'CONNECT facade on tunnel path with a query',
      `${tunnelPath}?x=1`,
      'facade',
      wrongKeyFor(knownUser),
    ),
    {
      name: 'classic CONNECT to an authority',
      headers: { ':method': 'CONNECT', ':authority': 'example.com:443' },
    },
    {
      ...connect('CONNECT facade on tunnel path, then data', tunnelPath, 'facade', wrongKeyFor(knownUser)),
      body: Buffer.from([1, 16, 0, 1, 0]),
    },
  ];
}
