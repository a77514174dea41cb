// What a curious scanner might send to an HTTPS server it suspects: each probe must get the same answer from
// facade as from a plain site server. Credentials here are never valid: a valid tunnel request is not a probe.

import { randomBytes } from 'node:crypto';
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
