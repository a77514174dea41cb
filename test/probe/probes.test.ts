// Probe resistance: facade (site + front door + real tunnel acceptor and users file, as probe-server.ts starts
// it) and a plain reference server (the same site app alone) get the same catalog of raw TLS probes; every
// answer must be identical (bytes with Date masked, whether the connection closes, and roughly when).

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { createSiteApp, SITE_DEFAULT_DIR } from '../../src/server/site.js';
import { deriveClientKey, encodeAuthorization } from '../../src/tunnel/credentials.js';
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
    const catalog = buildProbeCatalog({ tunnelPath: TUNNEL_PATH, knownUser: KNOWN_USER });
    const pairs = await runAll(catalog, PROBE_CONCURRENCY, async (probe) => {
      const [plain, candidate] = await Promise.all([
        sendProbe(referencePort, probe),
        sendProbe(facadePort, probe),
      ]);
      return { probe: probe.name, plain, candidate };
    });
    const differences: string[] = [];
    for (const { probe, plain, candidate } of pairs) {
      const expected = comparable(plain);
      const actual = comparable(candidate);
      try {
        assert.deepEqual(actual, expected);
      } catch {
        differences.push(`${probe}:\n  plain:  ${summarize(plain)}\n  facade: ${summarize(candidate)}`);
      }
    }
    assert.deepEqual(attached, [], 'no probe may open a tunnel');
    assert.equal(differences.length, 0, `probes answered differently:\n${differences.join('\n')}`);
    // The comparison is not vacuous: most probes got an HTTP answer.
    const answered = pairs.filter(({ plain }) => plain.response.startsWith('HTTP/1.1 ')).length;
    assert.ok(answered >= catalog.length - 4, `${answered} of ${catalog.length} probes got an HTTP answer`);
  });

  test('control: the harness does see a difference when facade accepts a valid tunnel request', async () => {
    const clientKey = await deriveClientKey(KNOWN_USER, KNOWN_PASSWORD);
    const probe = {
      name: 'valid tunnel request',
      steps: [
        {
          data: `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: facade\r\nAuthorization: ${encodeAuthorization(KNOWN_USER, clientKey)}\r\n\r\n`,
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

function summarize(result: ProbeResult): string {
  const firstLine = result.response.split('\r\n', 1)[0] ?? '';
  return `${JSON.stringify(firstLine)} (${result.response.length} bytes), closed: ${result.closedBy}${
    result.closeAfterMs === null ? '' : ` after ${result.closeAfterMs} ms`
  }`;
}
