// Probe resistance: facade (site + front door + real tunnel acceptor and users file) and a plain reference
// server (the same site app alone) get the same catalog of raw TLS probes; every answer must be identical
// (bytes with Date masked, whether the connection closes, and roughly when).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo, Server as NetServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { createLogger } from '../../src/log.js';
import { installFrontDoor } from '../../src/server/front-door.js';
import { createSiteApp, SITE_DEFAULT_DIR } from '../../src/server/site.js';
import type { TunnelServer } from '../../src/server/tunnel-server.js';
import { createTunnelAcceptor } from '../../src/server/upgrade.js';
import { UsersFile } from '../../src/server/users.js';
import { deriveClientKey, encodeAuthorization } from '../../src/tunnel/credentials.js';
import { comparable, type ProbeResult, sendProbe } from '../helpers/raw-probe.js';
import { buildProbeCatalog } from './probe-catalog.js';

const TUNNEL_PATH = '/k3VqP9/connect';
const KNOWN_USER = 'alice';
/** Probes in flight at once; each waits up to ~2 s of idle time, so running them one by one would be slow. */
const PROBE_CONCURRENCY = 8;

function opensslMissing(): string | false {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'openssl is not installed (needed for the test certificate)';
  }
}

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

describe('facade answers probes exactly like a plain site', { skip: opensslMissing() }, () => {
  let workDir: string;
  let reference: FastifyInstance;
  let facade: FastifyInstance;
  let referencePort: number;
  let facadePort: number;
  const attached: string[] = [];

  before(async () => {
    workDir = mkdtempSync(path.join(os.tmpdir(), 'facade-probes-'));
    const keyFile = path.join(workDir, 'key.pem');
    const certFile = path.join(workDir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '2',
      ].concat(['-subj', '/CN=localhost', '-keyout', keyFile, '-out', certFile]),
      { stdio: 'ignore' },
    );
    const tls = { key: readFileSync(keyFile), cert: readFileSync(certFile) };

    reference = createSiteApp({ siteDir: SITE_DEFAULT_DIR, tls });
    await reference.listen({ host: '127.0.0.1', port: 0 });
    referencePort = (reference.server.address() as AddressInfo).port;

    const users = await UsersFile.load(path.join(workDir, 'users.json'), { allowMissing: true });
    await users.add(KNOWN_USER, 'correct horse battery staple');
    // No probe carries valid credentials, so the engine must never be asked to attach a session; if it is,
    // the test records it and fails, rather than running a tunnel it has no TUN for.
    const tunnel = {
      attach: (socket: { destroy(): void }, request: { user: string }) => {
        attached.push(request.user);
        socket.destroy();
      },
    } as unknown as TunnelServer;
    facade = createSiteApp({ siteDir: SITE_DEFAULT_DIR, tls });
    installFrontDoor(facade.server as unknown as NetServer, 'secureConnection', {
      ...createTunnelAcceptor({ users, tunnel, logger: createLogger({ level: 'silent' }) }),
      tunnelPath: TUNNEL_PATH,
    });
    await facade.listen({ host: '127.0.0.1', port: 0 });
    facadePort = (facade.server.address() as AddressInfo).port;
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
    const clientKey = await deriveClientKey(KNOWN_USER, 'correct horse battery staple');
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
