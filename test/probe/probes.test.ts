// Probe resistance: facade (site + front door + real tunnel acceptor and users file, as probe-server.ts starts
// it, and its port-80 listener) and a plain reference server (test/helpers/reference-server.ts: the same site
// app alone, and a plain node:http redirect) get the same catalogs of raw probes, TLS on the site's port and
// plain TCP on port 80; every answer must be identical (bytes with Date masked, whether the connection closes,
// and roughly when).

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ChallengeStore } from '../../src/certs/challenges.js';
import { createLogger } from '../../src/core/log.js';
import { type HttpListener, startHttpListener } from '../../src/front/http-listener.js';
import { connectionBinding, createAuthorization, deriveUserKey } from '../../src/protocol/credentials.js';
import { UsersFile } from '../../src/users/users-file.js';
import { type FacadeProcess, field, startFacade } from '../helpers/facade.js';
import { sendH2Probe } from '../helpers/h2-probe.js';
import { netnsSkipReason, uniqueName } from '../helpers/netns.js';
import { type ProbeServer, startProbeServer } from '../helpers/probe-server.js';
import { comparable, type Probe, type ProbeResult, sendProbe } from '../helpers/raw-probe.js';
import {
  createPlainRedirectServer,
  type ReferenceServer,
  startReferenceServer,
} from '../helpers/reference-server.js';
import { makeTestCertificate } from '../helpers/tls-fixture.js';
import { buildH2ProbeCatalog, buildPlainHttpProbeCatalog, buildProbeCatalog } from './probe-catalog.js';

const TUNNEL_PATH = '/k3VqP9/connect';
const KNOWN_USER = 'alice';
const KNOWN_PASSWORD = 'correct horse battery staple';
/** The HTTPS port both port-80 servers name in their redirects (the ports they really got differ). */
const REDIRECT_PORT = 8443;

async function runAll<T, R>(items: readonly T[], limit: number, run: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await run(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

describe('facade answers probes exactly like a plain site', () => {
  let workDir: string;
  let reference: ReferenceServer;
  let facade: ProbeServer;
  let facadeHttp: HttpListener;
  let challenges: ChallengeStore;
  let referencePort: number;
  let facadePort: number;
  // No probe carries valid credentials, so the engine must never be asked to attach a session; if it is,
  // the stub in startProbeServer records it (and closes the socket) and the comparison test fails.
  let attached: readonly string[];

  before(async () => {
    workDir = mkdtempSync(path.join(os.tmpdir(), 'facade-probes-'));
    const { cert, key } = await makeTestCertificate(workDir, ['localhost']);
    reference = await startReferenceServer({
      host: '127.0.0.1',
      httpsPort: 0,
      httpPort: 0,
      tls: { key, cert },
      redirectPort: REDIRECT_PORT,
    });
    referencePort = reference.httpsPort;

    challenges = new ChallengeStore();
    facadeHttp = await startHttpListener({
      host: '127.0.0.1',
      port: 0,
      challenges,
      logger: createLogger({ level: 'silent' }),
      httpsPort: REDIRECT_PORT,
    });
    facade = await startProbeServer({
      tunnelPath: TUNNEL_PATH,
      users: [{ name: KNOWN_USER, password: KNOWN_PASSWORD }],
    });
    facadePort = facade.port;
    attached = facade.attached;
  });

  after(async () => {
    await Promise.allSettled([reference?.close(), facade?.close(), facadeHttp?.close()]);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  test('the catalogs hold at least 25 probes (HTTPS) and 60 (port 80)', () => {
    assert.ok(buildProbeCatalog({ tunnelPath: TUNNEL_PATH, knownUser: KNOWN_USER }).length >= 25);
    assert.ok(buildPlainHttpProbeCatalog().length >= 60);
  });

  test('every probe gets the same answer from both', { timeout: 120_000 }, async () => {
    await assertSameAnswers(referencePort, facadePort);
    assert.deepEqual(attached, [], 'no probe may open a tunnel');
  });

  test('port 80: every probe gets the same answer from both', { timeout: 120_000 }, async () => {
    // A token being validated is the one request answered otherwise; with another one pending, nothing changes.
    challenges.set('some-other-token', 'some-other-token.thumbprint');
    await assertSameAnswers(reference.httpPort, facadeHttp.address().port, PLAIN_HTTP);
  });

  test('port 80, control: the harness does see the token being validated', async () => {
    challenges.set('t0k3n', 't0k3n.thumbprint');
    const probe = {
      name: 'ACME challenge',
      steps: [{ data: 'GET /.well-known/acme-challenge/t0k3n HTTP/1.1\r\nHost: localhost\r\n\r\n' }],
    };
    const [plain, candidate] = await Promise.all([
      sendProbe(reference.httpPort, probe, { tls: false }),
      sendProbe(facadeHttp.address().port, probe, { tls: false }),
    ]);
    assert.match(plain.response, /^HTTP\/1\.1 301 /);
    assert.match(candidate.response, /^HTTP\/1\.1 200 [\s\S]*\r\n\r\nt0k3n\.thumbprint$/);
    assert.notDeepEqual(comparable(candidate), comparable(plain));
  });

  test('over h2: every probe gets the same answer from both, SETTINGS included', {
    timeout: 60_000,
  }, async () => {
    const probes = buildH2ProbeCatalog(TUNNEL_PATH, KNOWN_USER);
    const differences: string[] = [];
    for (const probe of probes) {
      const [plain, candidate] = await Promise.all([
        sendH2Probe(referencePort, probe),
        sendH2Probe(facadePort, probe),
      ]);
      try {
        assert.deepEqual(candidate, plain);
      } catch {
        differences.push(
          `${probe.name}:\n  plain:  ${JSON.stringify(plain).slice(0, 300)}\n  facade: ${JSON.stringify(candidate).slice(0, 300)}`,
        );
      }
    }
    assert.equal(differences.length, 0, `h2 probes answered differently:\n${differences.join('\n')}`);
    assert.deepEqual(attached, [], 'no probe may open a tunnel');
  });

  test('over h2, control: the harness does see a difference when facade accepts a valid CONNECT', async () => {
    const key = await deriveUserKey(TUNNEL_PATH, KNOWN_USER, KNOWN_PASSWORD);
    const probe = {
      name: 'valid extended CONNECT',
      headers: {
        ':method': 'CONNECT',
        ':protocol': 'facade',
        ':scheme': 'https',
        ':path': TUNNEL_PATH,
        ':authority': 'localhost',
      },
      headersFor: (socket: Parameters<typeof connectionBinding>[0]) => ({
        authorization: createAuthorization(key, connectionBinding(socket)),
      }),
    };
    const before = attached.length;
    const [plain, candidate] = await Promise.all([
      sendH2Probe(referencePort, probe),
      sendH2Probe(facadePort, probe),
    ]);
    assert.equal(plain.status, 405);
    assert.equal(candidate.status, 200);
    assert.deepEqual(attached.slice(before), [KNOWN_USER]);
  });

  test('control: the harness does see a difference when facade accepts a valid tunnel request', async () => {
    const key = await deriveUserKey(TUNNEL_PATH, KNOWN_USER, KNOWN_PASSWORD);
    const probe = {
      name: 'valid tunnel request',
      steps: [
        {
          // Signed for the connection it goes on (its TLS exporter), as a real client does.
          data: (socket: Parameters<typeof connectionBinding>[0]) =>
            `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: facade\r\nAuthorization: ${createAuthorization(key, connectionBinding(socket))}\r\n\r\n`,
        },
      ],
    };
    const [plain, candidate] = await Promise.all([
      sendProbe(referencePort, probe),
      sendProbe(facadePort, probe),
    ]);
    assert.match(plain.response, /^HTTP\/1\.1 404 /);
    assert.match(candidate.response, /^HTTP\/1\.1 101 /);
    assert.notDeepEqual(comparable(candidate), comparable(plain));
    assert.deepEqual(attached.slice(-1), [KNOWN_USER]);
    assert.equal(attached.length, 2, 'the two controls (h2 and HTTP/1.1) opened a tunnel each, no probe did');
  });
});

/** Which catalog, over which transport. */
interface Catalog {
  readonly probes: () => Probe[];
  readonly tls: boolean;
  /**
   * Probes in flight at once; each waits up to ~2 s of idle time, so running them one by one would be slow.
   * Plain TCP costs no handshake, so port 80 takes twice as many.
   */
  readonly concurrency: number;
  /** Probes the plain server does not answer with a status line, at most (idle ones, closes). */
  readonly maxUnanswered: number;
}

const HTTPS: Catalog = {
  probes: () => buildProbeCatalog({ tunnelPath: TUNNEL_PATH, knownUser: KNOWN_USER }),
  tls: true,
  concurrency: 8,
  maxUnanswered: 4,
};

const PLAIN_HTTP: Catalog = {
  probes: buildPlainHttpProbeCatalog,
  tls: false,
  concurrency: 16,
  maxUnanswered: 6,
};

/** Sends the whole catalog to both servers and requires the same answer from each, probe by probe. */
async function assertSameAnswers(
  referencePort: number,
  candidatePort: number,
  catalogOf: Catalog = HTTPS,
): Promise<void> {
  const catalog = catalogOf.probes();
  const options = { tls: catalogOf.tls };
  const pairs = await runAll(catalog, catalogOf.concurrency, async (probe) => {
    const [plain, candidate] = await Promise.all([
      sendProbe(referencePort, probe, options),
      sendProbe(candidatePort, probe, options),
    ]);
    return { probe: probe.name, plain, candidate };
  });
  const differences: string[] = [];
  for (const { probe, plain, candidate } of pairs) {
    try {
      assert.deepEqual(comparable(candidate), comparable(plain));
    } catch {
      differences.push(`${probe}:\n  plain:  ${summarize(plain)}\n  facade: ${summarize(candidate)}`);
    }
  }
  assert.equal(differences.length, 0, `probes answered differently:\n${differences.join('\n')}`);
  // The comparison is not vacuous: most probes got an HTTP answer.
  const answered = pairs.filter(({ plain }) => plain.response.startsWith('HTTP/1.1 ')).length;
  assert.ok(
    answered >= catalog.length - catalogOf.maxUnanswered,
    `${answered} of ${catalog.length} probes got an HTTP answer`,
  );
}

describe('the real `facade server` process answers probes exactly like a plain site', {
  skip: netnsSkipReason() ?? false,
}, () => {
  // The whole server (TUN, tunnel engine, leases, users file) runs as its own process on loopback; its TUN,
  // uniquely named, lives only as long as the process. No probe sends traffic anywhere but 127.0.0.1.
  let workDir: string;
  let reference: ReferenceServer;
  let referenceRedirect: Server;
  let server: FacadeProcess;
  let serverPort: number;
  let serverHttpPort: number;

  before(async () => {
    workDir = mkdtempSync(path.join(os.tmpdir(), 'facade-probes-real-'));
    // The server drops to nobody after start-up (--run-as): its state directory in here must be reachable.
    chmodSync(workDir, 0o755);
    const { cert, key } = await makeTestCertificate(path.join(workDir, 'reference'), ['localhost']);
    reference = await startReferenceServer({
      host: '127.0.0.1',
      httpsPort: 0,
      httpPort: 0,
      tls: { key, cert },
    });
    const users = await UsersFile.load(path.join(workDir, 'users.json'), { allowMissing: true });
    await users.add(KNOWN_USER, KNOWN_PASSWORD, TUNNEL_PATH);
    await users.save();
    // A port of its own rather than 0: the server names its --listen port in its port-80 redirects.
    const httpsPort = await freePort();
    server = startFacade(null, [
      'server',
      '--listen',
      `127.0.0.1:${httpsPort}`,
      '--http-listen',
      '127.0.0.1:0',
      '--pool',
      `198.18.${200 + (process.pid % 50)}.0/24`,
      '--users',
      path.join(workDir, 'users.json'),
      '--tunnel-path',
      TUNNEL_PATH,
      '--state-dir',
      path.join(workDir, 'state'),
      '--tun',
      uniqueName('fprobe'),
    ]);
    const ready = await server.waitFor(/facade server ready/);
    serverPort = Number(String(field(ready, 'listen')).split(':').at(-1));
    const httpLine = await server.waitFor(/plain-HTTP listener/);
    serverHttpPort = (field(httpLine, 'address') as AddressInfo).port;
    // The reference's port 80 names the server's HTTPS port in its redirects, as the server's own does.
    referenceRedirect = createPlainRedirectServer({ httpsPort: serverPort });
    await new Promise<void>((resolve) => referenceRedirect.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    await server?.stop();
    await reference?.close();
    referenceRedirect?.closeAllConnections();
    referenceRedirect?.close();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  test('every probe gets the same answer from both', { timeout: 120_000 }, async () => {
    await assertSameAnswers(reference.httpsPort, serverPort);
    assert.equal(server.count(/client connected/), 0, 'no probe may open a tunnel');
  });

  test('over h2: every probe gets the same answer from both', { timeout: 60_000 }, async () => {
    for (const probe of buildH2ProbeCatalog(TUNNEL_PATH, KNOWN_USER)) {
      const [plain, candidate] = await Promise.all([
        sendH2Probe(reference.httpsPort, probe),
        sendH2Probe(serverPort, probe),
      ]);
      assert.deepEqual(candidate, plain, probe.name);
    }
    assert.equal(server.count(/client connected/), 0, 'no probe may open a tunnel');
  });

  test('port 80: every probe gets the same answer from both', { timeout: 120_000 }, async () => {
    const referencePort = (referenceRedirect.address() as AddressInfo).port;
    await assertSameAnswers(referencePort, serverHttpPort, PLAIN_HTTP);
  });
});

/** A port nobody listens on at the moment (loopback), for a server that must be told its port. */
async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

function summarize(result: ProbeResult): string {
  const firstLine = result.response.split('\r\n', 1)[0] ?? '';
  return `${JSON.stringify(firstLine)} (${result.response.length} bytes), closed: ${result.closedBy}${
    result.closeAfterMs === null ? '' : ` after ${result.closeAfterMs} ms`
  }`;
}
