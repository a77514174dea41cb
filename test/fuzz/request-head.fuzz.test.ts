// Fuzz, in process: the front door's first-request-head parser (src/protocol/http-head.ts findHeadEnd,
// parseRequestHead; src/protocol/handshake.ts isUpgradeRequest) against Node's own HTTP parser (llhttp, as
// node:http drives it). The differential over real sockets is front-door.fuzz.test.ts; this one is cheap
// enough for millions of inputs. See docs/FUZZING.md.
//
// Properties, for every input (http-heads.ts requestBytes):
//  1. findHeadEnd and parseRequestHead never throw; a head is at most MAX_REQUEST_HEAD_BYTES long.
//  2. Agreement: whenever parseRequestHead accepts a head and Node's parser reads one too, they agree on
//     the method, target, version and every header (names lower-cased, repeats joined with ", ").
//  3. No head of its own: whenever parseRequestHead accepts a head that isUpgradeRequest() calls an upgrade
//     (what the front door takes as a tunnel request, given a good credential), Node's parser accepts the
//     same bytes as a request head that ends at exactly the same byte, and reads it the same way (2).
//  4. The same for every head parseRequestHead accepts with a method Node knows (http.METHODS), except for
//     Node's own message-framing checks (Content-Length / Transfer-Encoding values and combinations): those
//     heads never upgrade and go to the site as they are. An unknown method is likewise never a tunnel
//     request; Node refuses it (400) and so does the site.

import assert from 'node:assert/strict';
import { METHODS } from 'node:http';
import { test } from 'node:test';
import fc from 'fast-check';
import { MAX_REQUEST_HEAD_BYTES } from '../../src/core/limits.js';
import { isUpgradeRequest } from '../../src/protocol/handshake.js';
import { findHeadEnd, parseRequestHead, type RequestHead } from '../../src/protocol/http-head.js';
import { runProperty, targetRuns } from './harness.js';
import {
  CREDENTIAL,
  isTunnelRequest,
  type NodeHead,
  nodeParse,
  requestBytes,
  SECRET_PATH,
} from './http-heads.js';

const RUNS = targetRuns(20_000);
const KNOWN_METHODS = new Set(METHODS);
/** llhttp's refusals of a well-formed head for its framing headers' values (property 4 leaves them out). */
const FRAMING_ERRORS = new Set([
  'HPE_INVALID_TRANSFER_ENCODING',
  'HPE_UNEXPECTED_CONTENT_LENGTH',
  'HPE_INVALID_CONTENT_LENGTH',
]);

/** Node's raw headers as parseRequestHead keeps them: lower-case names, repeats joined with ", ". */
function joined(rawHeaders: readonly string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const key = (rawHeaders[i] as string).toLowerCase();
    const value = rawHeaders[i + 1] as string;
    const previous = map.get(key);
    map.set(key, previous === undefined ? value : `${previous}, ${value}`);
  }
  return map;
}

function assertAgree(ours: RequestHead, node: NodeHead): void {
  assert.equal(ours.method, node.method, 'method');
  assert.equal(ours.target, node.url, 'target');
  assert.equal(ours.version, node.version, 'version');
  assert.deepEqual([...ours.headers], [...joined(node.rawHeaders)], 'headers');
}

/** One input through both parsers: the assertions of properties 1-4. */
function checkHead(bytes: Buffer): 'no-head' | 'refused' | 'parsed' | 'tunnel' {
  const end = findHeadEnd(bytes);
  if (end === -1) return 'no-head';
  assert.ok(end >= 4 && end <= bytes.length);
  assert.equal(bytes.toString('latin1', end - 4, end), '\r\n\r\n');
  const ours = parseRequestHead(bytes, end);
  if (ours === null) return 'refused';
  assert.equal(ours.headLength, end);
  assert.ok(end <= MAX_REQUEST_HEAD_BYTES, `a head of ${end} bytes`);
  // The head fed to Node in two pieces: all but its last byte must not complete it, the last byte must.
  const node = nodeParse([bytes.subarray(0, end - 1), bytes.subarray(end - 1, end)]);
  if (node.kind === 'head') assertAgree(ours, node.head);
  const upgrade = isUpgradeRequest(ours);
  const framingOnly = node.kind === 'error' && FRAMING_ERRORS.has(node.code);
  if (upgrade || (KNOWN_METHODS.has(ours.method) && !framingOnly)) {
    assert.equal(node.kind, 'head', `Node refuses a head parseRequestHead accepts: ${JSON.stringify(node)}`);
    assert.equal(node.completedInPiece, 1, 'Node sees the head end elsewhere');
  }
  return isTunnelRequest(ours) ? 'tunnel' : 'parsed';
}

test('request head fuzz: parseRequestHead accepts only heads Node reads the same way', async (t) => {
  const outcomes = { 'no-head': 0, refused: 0, parsed: 0, tunnel: 0 };
  const property = fc.property(requestBytes, (text) => {
    outcomes[checkHead(Buffer.from(text, 'latin1'))]++;
  });
  await runProperty(t, 'request-head/in-process', property, RUNS);
  t.diagnostic(`outcomes: ${JSON.stringify(outcomes)}`);
});

test('request head fuzz: heads near the size limit', async (t) => {
  // Long heads are rare in the generator above; here they are the point (Node's limit is 16 KiB).
  const property = fc.property(
    fc.integer({ min: MAX_REQUEST_HEAD_BYTES - 200, max: MAX_REQUEST_HEAD_BYTES + 200 }),
    fc.integer({ min: 1, max: 40 }),
    fc.boolean(),
    (total, headerCount, tunnel) => {
      const start = `GET ${SECRET_PATH} HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: facade\r\n${tunnel ? `Authorization: ${CREDENTIAL}\r\n` : ''}`;
      const room = Math.max(0, total - start.length - 2 - headerCount * 6);
      let text = start;
      for (let i = 0; i < headerCount; i++) {
        const size =
          i === headerCount - 1
            ? room - Math.floor(room / headerCount) * (headerCount - 1)
            : Math.floor(room / headerCount);
        text += `X-${String(i).padStart(1, '0')}: ${'v'.repeat(Math.max(0, size))}\r\n`;
      }
      checkHead(Buffer.from(`${text}\r\n`, 'latin1'));
    },
  );
  await runProperty(t, 'request-head/size-limit', property, Math.max(200, Math.ceil(RUNS / 100)));
});
