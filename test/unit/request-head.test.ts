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
