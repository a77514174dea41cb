// Fuzz, over real sockets: the front door (src/front/front-door.ts) against a plain Node HTTP server,
// differentially. Two identical node:http servers on 127.0.0.1 answer every request with what Node parsed
// of it (method, target, version, raw headers, body); one of them has the front door installed. Every input
// (http-heads.ts requestBytes) is sent, then the write side closed, to both on fresh connections (the front
// door only ever looks at a connection's first request, so a connection cannot be reused for another
// input), and the two raw answers are compared byte for byte, Date masked. See docs/FUZZING.md.
//
// Property: for every input, the two answers are identical (the front door handed over the same bytes and
// Node answered them alike), unless the input is an authenticated tunnel request for the secret path: then
// the front door's answer is exactly the 101 and nothing else.
//
// A divergence this fuzzer found, now fixed: a connection the front door was still holding (its bytes so far
// could still become "GET <tunnel path> ") that the client half-closed was destroyed without an answer,
// where Node answers 400 to the partial request (or nothing, for no bytes). FACADE_FUZZ_STRICT=0 leaves
// such inputs out again, to look past it if it ever comes back.

import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Server as NetServer, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { type FrontDoor, installFrontDoor } from '../../src/front/front-door.js';
import { UPGRADE_RESPONSE } from '../../src/protocol/handshake.js';
import { findHeadEnd, parseRequestHead } from '../../src/protocol/http-head.js';
import { InputCounter, runProperty, targetRuns } from './harness.js';
import { isTunnelRequest, requestBytes, SECRET_PATH } from './http-heads.js';

/** Inputs (not property runs: each run sends a batch of up to BATCH inputs at once). */
const RUNS = targetRuns(1_500, 'FACADE_FUZZ_SOCKET_RUNS');
const BATCH = 16;
/** fast-check's average batch length for maxLength 16 (measured: 6.4); the report gives the exact count. */
const MEAN_BATCH = 6.4;
const STRICT = process.env.FACADE_FUZZ_STRICT !== '0';
/** An exchange that takes longer than this is a hang (both servers answer on loopback in milliseconds). */
const EXCHANGE_TIMEOUT_MS = 10_000;

/** The site: tells what Node parsed, so that any difference in what it was handed shows in the answer. */
function echo(req: IncomingMessage, res: ServerResponse): void {
  const body: Buffer[] = [];
  req.on('data', (chunk: Buffer) => body.push(chunk));
  req.on('error', () => {});
  req.on('end', () => {
    const text = JSON.stringify({
      method: req.method,
      url: req.url,
      version: req.httpVersion,
      rawHeaders: req.rawHeaders,
      body: Buffer.concat(body).toString('latin1'),
    });
    res.writeHead(200, { 'content-type': 'application/json' }).end(text);
  });
}

let plain: Server;
let fronted: Server;
let frontDoor: FrontDoor;
const ports = { plain: 0, fronted: 0 };
const accepted: string[] = [];

before(async () => {
  plain = createServer(echo);
  fronted = createServer(echo);
  frontDoor = installFrontDoor(fronted as unknown as NetServer, 'connection', {
    tunnelPath: SECRET_PATH,
    authenticate: (head) => (isTunnelRequest(head) ? 'fuzz-user' : null),
    accept: (head, socket) => {
      accepted.push(head.target);
      socket.end(UPGRADE_RESPONSE);
    },
    firstBytesWaitMs: 2_000,
    tunnelHeadWaitMs: 2_000,
  });
  for (const [name, server] of [
    ['plain', plain],
    ['fronted', fronted],
  ] as const) {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    ports[name] = typeof address === 'object' && address !== null ? address.port : 0;
  }
});

after(async () => {
  frontDoor?.close();
  for (const server of [plain, fronted]) {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve())));
  }
});

interface Answer {
  readonly bytes: string;
  /** How the server left: "close" (FIN), "error ECONNRESET", or "timeout". */
  readonly end: string;
}

/** Sends `input` on a fresh connection, half-closes, and collects the answer until the server closes. */
function exchange(port: number, input: Buffer): Promise<Answer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let end = 'close';
    const socket: Socket = connect({ host: '127.0.0.1', port }, () => {
      socket.end(input);
    });
    const timer = setTimeout(() => {
      end = 'timeout';
      socket.destroy();
    }, EXCHANGE_TIMEOUT_MS);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      end = `error ${err.code ?? err.message}`;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({
        bytes: Buffer.concat(chunks)
          .toString('latin1')
          .replace(/\r\nDate: [^\r\n]*\r\n/g, '\r\nDate: (masked)\r\n'),
        end,
      });
    });
  });
}

/**
 * True when the front door would still be holding this input when the client's FIN arrives: no complete
 * head, and every byte so far agrees with "GET <tunnel path> " (the known divergence, see the top).
 */
function heldAtEnd(input: Buffer): boolean {
  if (input.length === 0 || findHeadEnd(input) !== -1) return false;
  const prefix = Buffer.from(`GET ${SECRET_PATH} `, 'latin1');
  const n = Math.min(input.length, prefix.length);
  return input.compare(prefix, 0, n, 0, n) === 0;
}

function expectedTunnel(input: Buffer): boolean {
  const end = findHeadEnd(input);
  return end !== -1 && isTunnelRequest(parseRequestHead(input, end));
}

const outcomes = { same: 0, tunnel: 0, heldAndClosed: 0 };

/** The property for one input. */
async function checkInput(input: Buffer): Promise<void> {
  const [fromPlain, fromFront] = await Promise.all([
    exchange(ports.plain, input),
    exchange(ports.fronted, input),
  ]);
  assert.notEqual(fromPlain.end, 'timeout', 'the plain server did not finish');
  assert.notEqual(fromFront.end, 'timeout', 'the front door server did not finish');
  if (expectedTunnel(input)) {
    outcomes.tunnel++;
    assert.deepEqual(fromFront, { bytes: UPGRADE_RESPONSE, end: 'close' });
    return;
  }
  if (!STRICT && heldAtEnd(input)) {
    outcomes.heldAndClosed++;
    return;
  }
  outcomes.same++;
  assert.deepEqual(fromFront, fromPlain, 'the front door changed the answer');
}

test('front door fuzz: answers exactly as a plain Node server, or is an authenticated tunnel', async (t) => {
  const counter = new InputCounter();
  const property = fc.asyncProperty(
    fc.array(requestBytes, { minLength: 1, maxLength: BATCH }),
    async (texts) => {
      counter.count += texts.length;
      await Promise.all(texts.map((text) => checkInput(Buffer.from(text, 'latin1'))));
    },
  );
  await runProperty(
    t,
    'front-door/socket-differential',
    property,
    Math.max(1, Math.ceil(RUNS / MEAN_BATCH)),
    counter,
  );
  t.diagnostic(`outcomes: ${JSON.stringify(outcomes)}, tunnels accepted: ${accepted.length}`);
});

// The divergence it found, kept as the smallest inputs that showed it. "G" needed no knowledge of the tunnel
// path: any prober could tell the front door from a plain Node site with it.
test("front door fuzz regression: a half-closed partial head gets the site's 400, not a silent close", async () => {
  for (const input of ['', 'G', 'GET ', `GET ${SECRET_PATH} HTTP/1.1\r\nHost: x\r\n`]) {
    const bytes = Buffer.from(input, 'latin1');
    const [fromPlain, fromFront] = await Promise.all([
      exchange(ports.plain, bytes),
      exchange(ports.fronted, bytes),
    ]);
    // Node answers 400 to a partial head and nothing to no bytes at all; the front door must do the same.
    assert.equal(
      fromPlain.bytes,
      input === '' ? '' : 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n',
    );
    assert.deepEqual(fromFront, fromPlain, JSON.stringify(input));
  }
});
