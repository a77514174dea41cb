// The site stays fast while a tunnel runs at full speed on the same server (issue 14, point 6). A real
// `facade server --workers 1` (the site and the tunnel on one event loop: the worst case) in ns S; in ns C a
// client with --transport h2, so the tunnel is one h2 stream of the site like a browser's, and Debian's
// headless Chromium loading the home page over h2 (a fresh context each time: nothing cached). Page load
// times are taken idle and while iperf3 uploads through the tunnel as fast as it can; both are reported, and
// the loaded ones must stay within a bound a person would call fast.
//
//   ns C (facade client, iperf3 -c, chromium) ── veth ── ns S (facade server, iperf3 -s on the tunnel address)

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  addUser,
  clientArgs,
  type FacadeProcess,
  field,
  startFacade,
  waitForStatus,
} from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, uniqueName } from '../helpers/netns.js';

const CHROMIUM = '/usr/bin/chromium';
const skip =
  netnsSkipReason() ?? (existsSync(CHROMIUM) ? null : `${CHROMIUM} is missing (apt-get install chromium)`);

const net = 110 + (process.pid % 40) * 2;
const POOL = `198.18.${net}`;
const SERVER = `198.19.${net}.1`;
const PORT = 8443;
const PATH = '/br0ws3/t';
/** Page loads per condition. */
const LOADS = 6;
/** A loaded page's median load time must stay under this (idle: ~100-300 ms on a 2-core VM). */
const LOADED_MEDIAN_LIMIT_MS = 1_500;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1] as number;
}

describe('the site stays fast over h2 while an h2 tunnel runs at full speed', { skip: skip ?? false }, () => {
  let dir: string;
  let nsS: Netns;
  let nsC: Netns;
  let server: FacadeProcess;
  let client: FacadeProcess;
  let state: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-browser-tunnel-'));
    await chmod(dir, 0o755);
    state = join(dir, 'state');
    nsS = await Netns.create('bs');
    nsC = await Netns.create('bc');
    await createVethPair(nsS, nsC, { addrA: `${SERVER}/30`, addrB: `198.19.${net}.2/30` });
    await writeFile(join(dir, 'pw'), 'pw-ann\n');
    await addUser(nsS, { users: join(dir, 'users.json'), tunnelPath: PATH, name: 'ann', password: 'pw-ann' });
    server = startFacade(nsS, [
      'server',
      '--workers',
      '1',
      '--listen',
      `${SERVER}:${PORT}`,
      '--http-listen',
      '127.0.0.1:8080',
      '--pool',
      `${POOL}.0/24`,
      '--users',
      join(dir, 'users.json'),
      '--tunnel-path',
      PATH,
      '--state-dir',
      state,
    ]);
    const fingerprint = String(field(await server.waitFor(/self-signed certificate/), 'fingerprint'));
    await server.waitFor(/facade server ready/);
    client = startFacade(
      nsC,
      clientArgs({
        url: `https://${SERVER}:${PORT}${PATH}`,
        user: 'ann',
        passwordFile: join(dir, 'pw'),
        pin: fingerprint,
        tun: uniqueName('fb'),
        keepalive: null,
        more: ['--transport', 'h2'],
      }),
    );
    await client.waitFor(/connected:/);
    // Chromium inside the client's namespace: playwright starts this, which execs it there.
    await writeFile(join(dir, 'chromium'), `#!/bin/sh\nexec ip netns exec ${nsC.name} ${CHROMIUM} "$@"\n`, {
      mode: 0o755,
    });
  });

  after(async () => {
    await client?.stop('SIGKILL');
    await server?.stop('SIGKILL');
    await nsC?.destroy();
    await nsS?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('page loads idle and during a full-speed upload through the tunnel', {
    timeout: 120_000,
  }, async (t) => {
    const status = await waitForStatus(state, (s) => s.sessions.length === 1);
    assert.equal(status.sessions[0]?.transport, 'h2');
    const browser = await chromium.launch({
      executablePath: join(dir, 'chromium'),
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--ignore-certificate-errors',
      ],
    });
    t.after(() => browser.close());
    const loadTimes = async (): Promise<number[]> => {
      const times: number[] = [];
      for (let i = 0; i < LOADS; i++) {
        const context = await browser.newContext({ ignoreHTTPSErrors: true });
        const page = await context.newPage();
        const response = await page.goto(`https://${SERVER}:${PORT}/`, { waitUntil: 'load' });
        assert.equal(response?.status(), 200);
        const [protocol, ms] = await page.evaluate<[string, number]>(
          "(() => { const n = performance.getEntriesByType('navigation')[0]; return [n.nextHopProtocol, n.loadEventEnd - n.startTime]; })()",
        );
        assert.equal(protocol, 'h2');
        times.push(ms);
        await context.close();
      }
      return times;
    };
    const idle = await loadTimes();

    const tunnelAddress = `${POOL}.1`;
    const iperfServer = nsS.spawn('iperf3', ['-s', '-1', '-B', tunnelAddress]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = Date.now();
    const upload = nsC.exec('iperf3', ['-c', tunnelAddress, '-t', '12', '-J'], { timeoutMs: 60_000 });
    // Full speed reached before the first load.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const loaded = await loadTimes();
    assert.ok(Date.now() - started < 12_000, 'every load ran during the upload');
    const result = await upload;
    iperfServer.kill();
    const mbit = (() => {
      try {
        return (
          (JSON.parse(result.stdout) as { end: { sum_received: { bits_per_second: number } } }).end
            .sum_received.bits_per_second / 1e6
        );
      } catch {
        return 0;
      }
    })();
    t.diagnostic(
      `page load ms, idle: ${idle.map((v) => v.toFixed(0)).join(' ')} (median ${median(idle).toFixed(0)}); ` +
        `during the upload: ${loaded.map((v) => v.toFixed(0)).join(' ')} (median ${median(loaded).toFixed(0)}); ` +
        `tunnel upload ${mbit.toFixed(0)} Mbit/s`,
    );
    assert.ok(mbit > 100, `the tunnel ran at speed during the loads (${mbit.toFixed(0)} Mbit/s)`);
    assert.ok(
      median(loaded) < LOADED_MEDIAN_LIMIT_MS,
      `median page load during the upload ${median(loaded).toFixed(0)} ms >= ${LOADED_MEDIAN_LIMIT_MS} ms`,
    );
  });
});
