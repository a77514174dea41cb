// An expired user (issue 13) is refused exactly as a wrong password is: the same 404, byte for byte, in
// the same time. The expired user's credential is valid (right key, fresh, bound to the connection), so
// the authenticator reaches the policy check that a wrong password never reaches; the test shows that
// check costs nothing a prober can measure. Same method as timing.test.ts: interleaved requests on fresh
// TLS connections, a two-sample Kolmogorov-Smirnov statistic, and a control that must be seen.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import tls from 'node:tls';
import {
  connectionBinding,
  createAuthorization,
  deriveUserSeed,
  keyFromSeed,
  parseAuthorization,
} from '../../src/protocol/credentials.js';
import type { Authenticate } from '../../src/users/authenticator.js';
import { type ProbeServer, startProbeServer } from '../helpers/probe-server.js';
import { maskResponse } from '../helpers/raw-probe.js';

const TUNNEL_PATH = '/p7Xk2Q/connect';
const PASSWORD = 'correct horse battery staple';
/** Same length: the two requests are the same size. */
const EXPIRED = 'erin';
const KNOWN = 'alan';
const SAMPLES = 200;
const WARM_UP = 20;
/** As timing.test.ts: 1.3 times the KS critical value at alpha = 0.001 for n = m = SAMPLES. */
const D_LIMIT = 1.3 * 1.95 * Math.sqrt(2 / SAMPLES);
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

type Kind = 'wrong password' | 'expired user';

function timeRequest(
  port: number,
  request: (socket: tls.TLSSocket) => Buffer,
): Promise<{ us: number; answer: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      rejectUnauthorized: false,
    });
    const chunks: Buffer[] = [];
    let started = 0n;
    const timer = setTimeout(() => reject(new Error('no answer within 5 s')), 5_000);
    socket.once('secureConnect', () => {
      const bytes = request(socket);
      started = process.hrtime.bigint();
      socket.write(bytes);
    });
    socket.on('data', (chunk: Buffer) => {
      const now = process.hrtime.bigint();
      chunks.push(chunk);
      const response = Buffer.concat(chunks);
      const headEnd = response.indexOf(HEAD_END);
      if (headEnd === -1) return;
      const length = /^content-length: *(\d+) *$/im.exec(
        response.subarray(0, headEnd).toString('latin1'),
      )?.[1];
      if (length === undefined || response.length < headEnd + 4 + Number(length)) return;
      clearTimeout(timer);
      socket.destroy();
      resolve({ us: Number(now - started) / 1000, answer: maskResponse(response.toString('latin1')) });
    });
    socket.on('error', reject);
  });
}

function ksStatistic(first: readonly number[], second: readonly number[]): number {
  const a = [...first].sort((x, y) => x - y);
  const b = [...second].sort((x, y) => x - y);
  let i = 0;
  let j = 0;
  let d = 0;
  while (i < a.length && j < b.length) {
    const value = Math.min(a[i] as number, b[j] as number);
    while (i < a.length && (a[i] as number) <= value) i++;
    while (j < b.length && (b[j] as number) <= value) j++;
    d = Math.max(d, Math.abs(i / a.length - j / b.length));
  }
  return d;
}

let keys: Record<Kind, ReturnType<typeof keyFromSeed>>;
// Signed for this very connection (its TLS exporter), as a real client signs: the expired user's
// credential is valid, so only the policy refuses it.
const request = (kind: Kind) => (socket: tls.TLSSocket) =>
  Buffer.from(
    `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: facade\r\n` +
      `Authorization: ${createAuthorization(keys[kind], connectionBinding(socket))}\r\n\r\n`,
    'latin1',
  );

async function measure(server: ProbeServer) {
  const times: Record<Kind, number[]> = { 'wrong password': [], 'expired user': [] };
  const answers = new Set<string>();
  for (let round = 0; round < WARM_UP + SAMPLES; round++) {
    for (const kind of ['wrong password', 'expired user'] as const) {
      const { us, answer } = await timeRequest(server.port, request(kind));
      if (round >= WARM_UP) times[kind].push(us);
      answers.add(answer);
    }
  }
  return { times, answers };
}

test('an expired user is refused like a wrong password: the same 404, the same time; a 2 ms check is seen', async (t) => {
  const seed = await deriveUserSeed(TUNNEL_PATH, EXPIRED, PASSWORD);
  keys = {
    'expired user': keyFromSeed(EXPIRED, seed),
    'wrong password': keyFromSeed(KNOWN, randomBytes(32)),
  };
  const servers: ProbeServer[] = [];
  t.after(() => Promise.all(servers.map((server) => server.close())));
  const users = [
    { name: KNOWN, password: PASSWORD },
    { name: EXPIRED, password: PASSWORD, policy: { expires: '2020-01-01T00:00:00.000Z' } },
  ];
  // First, that the credential is good: where erin has not expired, it opens the tunnel.
  const unexpired = await startProbeServer({
    tunnelPath: TUNNEL_PATH,
    users: [{ name: EXPIRED, password: PASSWORD }],
  });
  servers.push(unexpired);
  await timeRequest(unexpired.port, request('expired user')).catch(() => undefined);
  assert.deepEqual(unexpired.attached, [EXPIRED]);

  const server = await startProbeServer({ tunnelPath: TUNNEL_PATH, users });
  servers.push(server);
  const { times, answers } = await measure(server);
  assert.equal(answers.size, 1, `answers differ:\n${[...answers].join('\n---\n')}`);
  assert.match([...answers][0] ?? '', /^HTTP\/1\.1 404 /);
  const d = ksStatistic(times['wrong password'], times['expired user']);
  t.diagnostic(`KS D wrong password / expired user ${d.toFixed(3)} (limit ${D_LIMIT.toFixed(3)})`);
  assert.ok(d < D_LIMIT, `D = ${d.toFixed(3)}: an expired user's refusal takes measurably different time`);

  // The control: the same server with 2 ms more work for the expired user only must be told apart, or
  // the measurement could not see a difference at all.
  const burn = (ms: number) => {
    const until = process.hrtime.bigint() + BigInt(ms * 1e6);
    while (process.hrtime.bigint() < until) {
      // Busy on purpose.
    }
  };
  const control = await startProbeServer({
    tunnelPath: TUNNEL_PATH,
    users,
    wrapAuthenticate: (authenticate: Authenticate) => (request) => {
      if (parseAuthorization(request.headers.get('authorization'))?.user === EXPIRED) burn(2);
      return authenticate(request);
    },
  });
  servers.push(control);
  const controlled = await measure(control);
  const dControl = ksStatistic(controlled.times['wrong password'], controlled.times['expired user']);
  t.diagnostic(`control: KS D ${dControl.toFixed(3)}`);
  assert.ok(dControl > 2 * D_LIMIT, `the control's 2 ms went unseen (D = ${dControl.toFixed(3)})`);
});
