import assert from 'node:assert/strict';
import { test } from 'node:test';
import { headerHasToken } from '../../src/protocol/handshake.js';
import { findHeadEnd, parseRequestHead } from '../../src/protocol/http-head.js';

const parse = (text: string) => {
  const buffer = Buffer.from(text, 'latin1');
  const end = findHeadEnd(buffer);
  return end === -1 ? undefined : parseRequestHead(buffer, end);
};

test('a tunnel request head parses with lower-cased, joined headers', () => {
  const head = parse(
    'GET /k/t HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nX-A: 1\r\nx-a: 2\r\n\r\nrest',
  );
  assert.ok(head);
  assert.equal(head.method, 'GET');
  assert.equal(head.target, '/k/t');
  assert.equal(head.version, 'HTTP/1.1');
  assert.equal(head.headers.get('x-a'), '1, 2');
  assert.equal(
    head.headLength,
    Buffer.byteLength(
      'GET /k/t HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nX-A: 1\r\nx-a: 2\r\n\r\n',
    ),
  );
  assert.ok(headerHasToken(head.headers.get('connection'), 'upgrade'));
  assert.ok(!headerHasToken(head.headers.get('connection'), 'close'));
  assert.ok(!headerHasToken(undefined, 'upgrade'));
});

test('an incomplete head is not parsed; malformed heads are refused, never guessed', () => {
  assert.equal(parse('GET /k/t HTTP/1.1\r\nHost: x\r\n'), undefined);
  for (const bad of [
    'GET /k/t\r\n\r\n',
    'GET  /k/t HTTP/1.1\r\n\r\n',
    'GET k/t HTTP/1.1\r\n\r\n',
    'GET /k/t HTTP/2.0\r\n\r\n',
    'G(T /k/t HTTP/1.1\r\n\r\n',
    'GET /k/t HTTP/1.1\r\nNo colon here\r\n\r\n',
    'GET /k/t HTTP/1.1\r\n: empty name\r\n\r\n',
    'GET /k/t HTTP/1.1\r\nBad Name: x\r\n\r\n',
  ]) {
    assert.equal(parse(bad), null, JSON.stringify(bad));
  }
});

// Regression cases found by the request-head fuzz target (test/fuzz/request-head.fuzz.test.ts): heads the
// parser used to accept although Node's own parser refuses them or reads them otherwise. A head accepted
// here and taken as a tunnel request must be one Node would read the same way (docs/FUZZING.md).
const TUNNEL_HEADERS = 'Connection: Upgrade\r\nUpgrade: facade\r\nAuthorization: Facade x\r\n';

test('fuzz regression: a control byte in the target is refused (Node: HPE_INVALID_URL)', () => {
  assert.equal(parse('GET /\x00fuzz-s3cret/tunnel HTTP/1.1\r\n\r\n'), null);
  assert.equal(parse(`GET /k/t\x7f HTTP/1.1\r\n${TUNNEL_HEADERS}\r\n`), null);
  assert.equal(parse(`GET /k/\xe9 HTTP/1.1\r\n${TUNNEL_HEADERS}\r\n`), null);
});

test('fuzz regression: a control byte in a header value is refused (Node: HPE_INVALID_HEADER_TOKEN)', () => {
  assert.equal(
    parse(`GET /fuzz-s3cret/tunnel HTTP/1.1\r\nHost:\x00 localhost\r\n${TUNNEL_HEADERS}\r\n`),
    null,
  );
  for (const ctl of ['\x01', '\x0b', '\x0c', '\r', '\n', '\x1f', '\x7f'])
    assert.equal(
      parse(`GET /k/t HTTP/1.1\r\nX: a${ctl}b\r\n${TUNNEL_HEADERS}\r\n`),
      null,
      JSON.stringify(ctl),
    );
  // HTAB inside a value and obs-text are allowed, as in Node.
  assert.equal(parse('GET /k/t HTTP/1.1\r\nX: a\tb\xe9\r\n\r\n')?.headers.get('x'), 'a\tb\xe9');
});

test('fuzz regression: only SP and HTAB are trimmed from values, as Node does (not NBSP)', () => {
  assert.equal(parse('GET / HTTP/1.0\r\na:0\xa0\r\n\r\n')?.headers.get('a'), '0\xa0');
  assert.equal(parse('GET / HTTP/1.1\r\nX: \t x \t \r\n\r\n')?.headers.get('x'), 'x');
  // So "Content-Length: 0<NBSP>" no longer reads as "no body": Node refuses it.
  assert.equal(parse(`GET /k/t HTTP/1.1\r\nContent-Length: 0\xa0\r\n${TUNNEL_HEADERS}\r\n`), null);
});

test('fuzz regression: Content-Length with a trailing HTAB is refused (Node: HPE_INVALID_CONTENT_LENGTH)', () => {
  assert.equal(
    parse(
      'GET /fuzz-s3cret/tunnel HTTP/1.1\r\nContent-Length:0\t\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: facade\r\nAuthorization: Facade fuzz-credential-0123456789\r\n\r\n',
    ),
    null,
  );
  assert.equal(parse('GET / HTTP/1.1\r\nContent-Length:\t0 \r\n\r\n')?.headers.get('content-length'), '0');
});

test('fuzz regression: a head longer than Node accepts (16 KiB) is refused', () => {
  const start = `GET /k/t HTTP/1.1\r\n${TUNNEL_HEADERS}`;
  const pad = (total: number) => `${start}X: ${'v'.repeat(total - start.length - 7)}\r\n\r\n`;
  assert.equal(Buffer.byteLength(pad(16_385), 'latin1'), 16_385);
  assert.equal(parse(pad(16_385)), null);
  assert.notEqual(parse(pad(16_384)), null);
});
