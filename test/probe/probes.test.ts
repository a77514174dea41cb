// Probe resistance: facade (site + front door + real tunnel acceptor and users file, as probe-server.ts starts
// it) and a plain reference server (the same site app alone) get the same catalog of raw TLS probes; every
// answer must be identical (bytes with Date masked, whether the connection closes, and roughly when).

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { createSiteApp, SITE_DEFAULT_DIR } from '../../src/front/site.js';
import { connectionBinding, createAuthorization, deriveUserKey } from '../../src/protocol/credentials.js';
import { UsersFile } from '../../src/users/users-file.js';
import { type FacadeProcess, field, startFacade } from '../helpers/facade.js';
import { netnsSkipReason, uniqueName } from '../helpers/netns.js';
import { type ProbeServer, startProbeServer } from '../helpers/probe-server.js';
import { comparable, type ProbeResult, sendProbe } from '../helpers/raw-probe.js';
import { makeTestCertificate } from '../helpers/tls-fixture.js';
import { buildProbeCatalog } from './probe-catalog.js';

const TUNNEL_PATH = '/k3VqP9/connect';
const KNOWN_USER = 'alice';
const KNOWN_PASSWORD = 'correct horse battery staple';
/** Probes in flight at once; each waits up to ~2 s of idle time, so running them one by one would be slow. */
const PROBE_CONCURRENCY = 8;

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
  let reference: FastifyInstance;
  let facade: ProbeServer;
  let referencePort: number;
  let facadePort: number;
  // No probe carries valid credentials, so the engine must never be asked to attach a session; if it is,
  // the stub in startProbeServer records it (and closes the socket) and the comparison test fails.
  let attached: readonly string[];

  before(async () => {
    workDir = mkdtempSync(path.join(os.tmpdir(), 'facade-probes-'));
    const { cert, key } = await makeTestCertificate(workDir, ['localhost']);
    reference = createSiteApp({ siteDir: SITE_DEFAULT_DIR, tls: { key, cert } });
    await reference.listen({ host: '127.0.0.1', port: 0 });
    referencePort = (reference.server.address() as AddressInfo).port;

    facade = await startProbeServer({
      tunnelPath: TUNNEL_PATH,
      users: [{ name: KNOWN_USER, password: KNOWN_PASSWORD }],
    });
    facadePort = facade.port;
    attached = facade.attached;
  });

  after(async () => {
    await Promise.allSettled([reference?.close(), facade?.close()]);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  test('the catalog holds at least 25 probes', () => {
    assert.ok(buildProbeCatalog({ tunnelPath: TUNNEL_PATH, knownUser: KNOWN_USER }).length >= 25);
  });

  test('every probe gets the same answer from both', { timeout: 120_000 }, async () => {
    await assertSameAnswers(referencePort, facadePort);
    assert.deepEqual(attached, [], 'no probe may open a tunnel');
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
    assert.deepEqual(attached, [KNOWN_USER]);
  });
});

/** Sends the whole catalog to both servers and requires the same answer from each, probe by probe. */
async function assertSameAnswers(referencePort: number, candidatePort: number): Promise<void> {
  const catalog = buildProbeCatalog({ tunnelPath: TUNNEL_PATH, knownUser: KNOWN_USER });
  const pairs = await runAll(catalog, PROBE_CONCURRENCY, async (probe) => {
    const [plain, candidate] = await Promise.all([
      sendProbe(referencePort, probe),
      sendProbe(candidatePort, probe),
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
  assert.ok(answered >= catalog.length - 4, `${answered} of ${catalog.length} probes got an HTTP answer`);
}

describe('the real `facade server` process answers probes exactly like a plain site', {
  skip: netnsSkipReason() ?? false,
}, () => {
  // The whole server (TUN, tunnel engine, leases, users file) runs as its own process on loopback; its TUN,
  // uniquely named, lives only as long as the process. No probe sends traffic anywhere but 127.0.0.1.
  let workDir: string;
  let reference: FastifyInstance;
  let server: FacadeProcess;
  let referencePort: number;
  let serverPort: number;

  before(async () => {
    workDir = mkdtempSync(path.join(os.tmpdir(), 'facade-probes-real-'));
    // The server drops to nobody after start-up (--run-as): its state directory in here must be reachable.
    chmodSync(workDir, 0o755);
    const { cert, key } = await makeTestCertificate(path.join(workDir, 'reference'), ['localhost']);
    reference = createSiteApp({ siteDir: SITE_DEFAULT_DIR, tls: { key, cert } });
    await reference.listen({ host: '127.0.0.1', port: 0 });
    referencePort = (reference.server.address() as AddressInfo).port;
    const users = await UsersFile.load(path.join(workDir, 'users.json'), { allowMissing: true });
    await users.add(KNOWN_USER, KNOWN_PASSWORD, TUNNEL_PATH);
    await users.save();
    server = startFacade(null, [
      'server',
      '--listen',
      '127.0.0.1:0',
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
  });

  after(async () => {
    await server?.stop();
    await reference?.close();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  test('every probe gets the same answer from both', { timeout: 120_000 }, async () => {
    await assertSameAnswers(referencePort, serverPort);
    assert.equal(server.count(/client connected/), 0, 'no probe may open a tunnel');
  });
});

function summarize(result: ProbeResult): string {
  const firstLine = result.response.split('\r\n', 1)[0] ?? '';
  return `${JSON.stringify(firstLine)} (${result.response.length} bytes), closed: ${result.closedBy}${
    result.closeAfterMs === null ? '' : ` after ${result.closeAfterMs} ms`
  }`;
}
