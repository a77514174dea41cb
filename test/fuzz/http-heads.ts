// Request heads for the request-head fuzz targets (request-head.fuzz.test.ts in process,
// front-door.fuzz.test.ts over sockets), and Node's own HTTP parser (llhttp) driven in process.
//
// The generator writes HTTP/1.x request heads byte by byte (latin1): methods known and unknown, targets
// around the secret path, versions right and wrong, header names and values with odd whitespace, obs-fold,
// bare CR or LF, duplicates, NUL and other CTL bytes, obs-text, Transfer-Encoding / Content-Length games,
// bodies and pipelined requests after the head; then sometimes a few random byte edits; and raw garbage.

import { METHODS } from 'node:http';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { isUpgradeRequest } from '../../src/protocol/handshake.js';
import type { RequestHead } from '../../src/protocol/http-head.js';
import { byteChar } from './harness.js';

/** The secret tunnel path and the one credential the fuzz authenticate() accepts. */
export const SECRET_PATH = '/fuzz-s3cret/tunnel';
export const CREDENTIAL = 'Facade fuzz-credential-0123456789';

/** The front door's decision for a parsed head with the fuzz credential (as acceptor.ts + front-door.ts). */
export function isTunnelRequest(head: RequestHead | null): boolean {
  return (
    head !== null &&
    head.target === SECRET_PATH &&
    isUpgradeRequest(head) &&
    head.headers.get('authorization') === CREDENTIAL
  );
}

const latin1 = (maxLength: number) => fc.string({ unit: byteChar, maxLength });
const ctlOrOdd = fc.constantFrom(
  '\x00',
  '\x01',
  '\x08',
  '\x0b',
  '\x0c',
  '\x7f',
  '\x80',
  '\xa0',
  '\xff',
  '\r',
  '\n',
  '\t',
  ' ',
);
/** Mostly printable text with the odd control, obs-text or whitespace byte. */
const oddText = (maxLength: number) =>
  fc.string({
    unit: fc.oneof(
      { weight: 8, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }) },
      ctlOrOdd,
    ),
    maxLength,
  });

const method = fc.oneof(
  { weight: 12, arbitrary: fc.constant('GET') },
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      'POST',
      'HEAD',
      'PUT',
      'DELETE',
      'OPTIONS',
      'CONNECT',
      'PATCH',
      'TRACE',
      'PRI',
      'SEARCH',
      'PROPFIND',
      'M-SEARCH',
      'QUERY',
      'SOURCE',
      'get',
      'Get',
      'GETT',
      'GE',
      'G',
      '',
      'FOO',
      'G\tET',
      'GET\x00',
    ),
  },
  fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,8}$/),
  latin1(6),
);

const target = fc.oneof(
  { weight: 14, arbitrary: fc.constant(SECRET_PATH) },
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      '/',
      '/index.html',
      '/missing',
      '*',
      '//',
      'http://localhost/',
      `http://localhost${SECRET_PATH}`,
      `${SECRET_PATH}?`,
      `${SECRET_PATH}/`,
      `${SECRET_PATH}#x`,
      `${SECRET_PATH}%20`,
      SECRET_PATH.toUpperCase(),
      SECRET_PATH.slice(0, -1),
      `${SECRET_PATH}\x00`,
      `${SECRET_PATH}\t`,
      `${SECRET_PATH}\xa0`,
      '',
      '/a b',
      '/%00',
      '/..%2f',
      '/?a=b&c=d',
    ),
  },
  fc.stringMatching(/^\/[\x21-\x7e]{0,20}$/),
  oddText(20).map((s) => `/${s}`),
  latin1(12),
);

const version = fc.oneof(
  { weight: 14, arbitrary: fc.constant('HTTP/1.1') },
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      'HTTP/1.0',
      'HTTP/1.2',
      'HTTP/2.0',
      'HTTP/0.9',
      'HTTP/2',
      'http/1.1',
      'HTTP/11',
      'HTTP/1.10',
      'HTTP/01.1',
      'HTTPS/1.1',
      'HTTP/1.1 ',
      'HTTP/1.1\t',
      'HTTP/1.',
      'HTTP/9.9',
      '',
    ),
  },
  latin1(9),
);

const space = fc.oneof(
  { weight: 20, arbitrary: fc.constant(' ') },
  fc.constantFrom('  ', '\t', '', '\x0b', '\r', '\n', '\x00'),
);
const eol = fc.oneof(
  { weight: 24, arbitrary: fc.constant('\r\n') },
  fc.constantFrom('\n', '\r', '\r\r\n', '\n\r', ' \r\n', '\r \n'),
);

const headerName = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.constantFrom(
      'Host',
      'Connection',
      'Upgrade',
      'Authorization',
      'Content-Length',
      'Transfer-Encoding',
      'Facade-Capabilities',
      'connection',
      'UPGRADE',
      'authorization',
      'content-length',
      'transfer-encoding',
      'Expect',
      'Keep-Alive',
      'Proxy-Connection',
      'TE',
      'Trailer',
      'Accept',
      'Cookie',
    ),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      'Content-Length ',
      ' Host',
      'Connection\t',
      'Up grade',
      'Host\x00',
      '',
      'X\xa0',
    ),
  },
  fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}$/),
  oddText(8),
);

const headerSeparator = fc.oneof(
  { weight: 16, arbitrary: fc.constant(': ') },
  fc.constantFrom(':', ':\t', ': \t ', ':  ', ' :', '\t:', '::', ':\x0b', ':\xa0', ':\x00', ''),
);

const headerValue = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.constantFrom(
      'Upgrade',
      'upgrade',
      'keep-alive, Upgrade',
      'Upgrade, close',
      'close',
      'keep-alive',
      'facade',
      'websocket',
      CREDENTIAL,
      'localhost',
      'offload',
      '0',
      '00',
      '+0',
      '-0',
      '0x0',
      '0.0',
      '1',
      '5',
      '10',
      '18446744073709551616',
      'chunked',
      'gzip, chunked',
      'chunked, gzip',
      'identity',
      'Chunked',
      '100-continue',
      '',
    ),
  },
  {
    weight: 3,
    arbitrary: fc
      .tuple(
        fc.constantFrom('0', 'upgrade', 'facade', CREDENTIAL, 'chunked'),
        fc.constantFrom(' ', '\t', '\xa0', '\x0b', '\x0c', '\x00', '\x85', ',', ', '),
        fc.boolean(),
      )
      .map(([value, odd, before]) => (before ? odd + value : value + odd)),
  },
  oddText(24),
  latin1(16),
);

const header = fc
  .tuple(
    headerName,
    headerSeparator,
    headerValue,
    eol,
    fc.option(fc.tuple(fc.constantFrom(' ', '\t', '  '), headerValue, eol), { freq: 12 }),
  )
  .map(([name, separator, value, end, fold]) => {
    const line = `${name}${separator}${value}${end}`;
    return fold === null ? line : `${line}${fold[0]}${fold[1]}${fold[2]}`;
  });

/** The headers of a real tunnel request, so that many inputs are (near) tunnel requests. */
const tunnelHeaders = fc.constant([
  'Host: localhost\r\n',
  'Connection: Upgrade\r\n',
  'Upgrade: facade\r\n',
  `Authorization: ${CREDENTIAL}\r\n`,
]);

const headers = fc
  .tuple(fc.oneof(fc.constant([] as string[]), tunnelHeaders), fc.array(header, { maxLength: 6 }), fc.nat())
  .map(([base, extra, at]) => {
    const all = [...base];
    for (const h of extra) all.splice(at % (all.length + 1), 0, h);
    return all;
  });

const tail = fc.oneof(
  { weight: 10, arbitrary: fc.constant('') },
  fc.constantFrom(
    '0\r\n\r\n',
    '5\r\nhello\r\n0\r\n\r\n',
    'hello',
    'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
    `GET ${SECRET_PATH} HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: facade\r\nAuthorization: ${CREDENTIAL}\r\n\r\n`,
    'POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc',
    '\x01\x10\x00\x05hello',
  ),
  latin1(24),
);

/** A head in parts: request line, headers, end of head, what follows it. */
const structured = fc
  .record({
    method,
    sp1: space,
    target,
    sp2: space,
    version,
    lineEnd: eol,
    headers,
    end: fc.oneof(
      { weight: 12, arbitrary: fc.constant('\r\n') },
      fc.constantFrom('\n', '\r', '', '\r\n\r\n'),
    ),
    tail,
  })
  .map(
    (h) =>
      `${h.method}${h.sp1}${h.target}${h.sp2}${h.version}${h.lineEnd}${h.headers.join('')}${h.end}${h.tail}`,
  );

/** Heads that parse (mostly): valid pieces only, so the agreement property sees many accepted heads. */
const validValue = fc.oneof(
  {
    weight: 3,
    arbitrary: headerValue.filter((v) =>
      /^[\x21-\x7e\x80-\xff]([\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?$|^$/.test(v),
    ),
  },
  fc.stringMatching(/^[\x21-\x7e]([\t\x20-\x7e]{0,20}[\x21-\x7e])?$/),
);
const clean = fc
  .record({
    method: fc.oneof({ weight: 4, arbitrary: fc.constant('GET') }, fc.constantFrom(...METHODS)),
    target: fc.oneof(
      { weight: 3, arbitrary: fc.constant(SECRET_PATH) },
      fc.stringMatching(/^\/[\x21-\x7e]{0,20}$/),
    ),
    version: fc.oneof({ weight: 4, arbitrary: fc.constant('HTTP/1.1') }, fc.constant('HTTP/1.0')),
    base: fc.oneof(fc.constant([] as string[]), tunnelHeaders),
    extra: fc.array(
      fc.tuple(
        fc.oneof(
          headerName.filter((n) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(n)),
          fc.stringMatching(/^[A-Za-z-]{1,10}$/),
        ),
        fc.constantFrom(':', ': ', ':\t', ':  '),
        validValue,
        fc.constantFrom('', ' ', '\t'),
      ),
      { maxLength: 5 },
    ),
    at: fc.nat(),
    tail,
  })
  .map((h) => {
    const lines = [...h.base];
    for (const [name, separator, value, after] of h.extra)
      lines.splice(h.at % (lines.length + 1), 0, `${name}${separator}${value}${after}\r\n`);
    return `${h.method} ${h.target} ${h.version}\r\n${lines.join('')}\r\n${h.tail}`;
  });

/** A few random byte edits: insert, delete or replace. */
const mutate = (text: fc.Arbitrary<string>) =>
  fc
    .tuple(text, fc.array(fc.tuple(fc.nat(), fc.nat({ max: 2 }), byteChar), { minLength: 1, maxLength: 3 }))
    .map(([s, edits]) => {
      let out = s;
      for (const [at, kind, c] of edits) {
        const i = at % (out.length + 1);
        if (kind === 0) out = out.slice(0, i) + c + out.slice(i);
        else if (kind === 1) out = out.slice(0, i) + out.slice(i + 1);
        else out = out.slice(0, i) + c + out.slice(i + 1);
      }
      return out;
    });

/** Any first bytes of a connection, as latin1 text (one char = one byte). */
export const requestBytes: fc.Arbitrary<string> = fc.oneof(
  { weight: 10, arbitrary: structured },
  { weight: 6, arbitrary: clean },
  { weight: 4, arbitrary: mutate(fc.oneof(structured, clean)) },
  latin1(48),
  fc.constantFrom(
    '',
    'G',
    'GE',
    'GET',
    'GET ',
    `GET ${SECRET_PATH}`,
    `GET ${SECRET_PATH} HTTP/1.1\r\n`,
    '\r\n',
    '\r\n\r\n',
    'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
    '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03',
  ),
);

// --- Node's own parser, in process -------------------------------------------------------------------------

interface HTTPParserType {
  new (): HTTPParserInstance;
  REQUEST: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kOnExecute: number;
}
interface HTTPParserInstance {
  [key: number]: unknown;
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string });
  finish(): number | Error;
  close(): void;
}

// The parser behind node:http (llhttp, with the options a default http.Server gives it: strict, the default
// maximum head size). `_http_common` is Node's own module for it; there is no public in-process entry.
const require = createRequire(import.meta.url);
const { HTTPParser } = require('node:_http_common') as { HTTPParser: HTTPParserType };

/**
 * llhttp's method numbers, learnt from the parser itself: Node's exported `methods` list is not indexed by
 * them (QUERY is 46 in llhttp, 34th in the list).
 */
const methodNames = new Map<number, string>();
for (const name of METHODS) {
  const learn = new HTTPParser();
  learn[HTTPParser.kOnHeadersComplete] = (_major: number, _minor: number, _h: unknown, index: number) => {
    methodNames.set(index, name);
    return 0;
  };
  learn[HTTPParser.kOnHeaders] = () => {};
  learn[HTTPParser.kOnBody] = () => {};
  learn[HTTPParser.kOnMessageComplete] = () => {};
  learn[HTTPParser.kOnExecute] = () => {};
  learn.initialize(HTTPParser.REQUEST, {}, 0, 0);
  learn.execute(Buffer.from(`${name} / HTTP/1.1\r\n\r\n`, 'latin1'));
  learn.close();
}

export interface NodeHead {
  readonly method: string;
  readonly url: string;
  readonly version: string;
  /** As llhttp hands them to Node: [name, value, name, value, ...], names as sent, values trimmed. */
  readonly rawHeaders: string[];
  readonly upgrade: boolean;
}

export type NodeParse =
  | { readonly kind: 'head'; readonly head: NodeHead }
  | { readonly kind: 'error'; readonly code: string }
  | { readonly kind: 'incomplete' };

/**
 * What Node's HTTP server parser makes of `bytes` as the start of a connection, fed in the given pieces:
 * the first request head (when complete and valid), an error code, or "incomplete". Only the head counts:
 * the parser stops looking once the head is complete.
 */
export function nodeParse(pieces: readonly Buffer[]): NodeParse & { completedInPiece?: number } {
  const parser = new HTTPParser();
  let head: NodeHead | null = null;
  let pendingHeaders: string[] = [];
  let pendingUrl = '';
  parser[HTTPParser.kOnHeaders] = (chunk: string[], url: string) => {
    pendingHeaders = pendingHeaders.concat(chunk);
    pendingUrl += url;
  };
  parser[HTTPParser.kOnHeadersComplete] = (
    versionMajor: number,
    versionMinor: number,
    rawHeaders: string[] | undefined,
    methodIndex: number,
    url: string | undefined,
    _statusCode: number,
    _statusMessage: string,
    upgrade: boolean,
  ) => {
    if (head === null) {
      head = {
        method: methodNames.get(methodIndex) ?? `#${methodIndex}`,
        url: url ?? pendingUrl,
        version: `HTTP/${versionMajor}.${versionMinor}`,
        rawHeaders: rawHeaders ?? pendingHeaders,
        upgrade,
      };
    }
    return 0;
  };
  parser[HTTPParser.kOnBody] = () => {};
  parser[HTTPParser.kOnMessageComplete] = () => {};
  parser[HTTPParser.kOnExecute] = () => {};
  parser.initialize(HTTPParser.REQUEST, {}, 0, 0);
  try {
    for (let i = 0; i < pieces.length; i++) {
      const result = parser.execute(pieces[i] as Buffer);
      if (head !== null) return { kind: 'head', head, completedInPiece: i };
      if (typeof result !== 'number') return { kind: 'error', code: result.code ?? String(result) };
    }
    return { kind: 'incomplete' };
  } finally {
    parser.close();
  }
}
