// SIGTERM with 1,000 connections open: the security review's server ignored it for over 17 s while stalled
// TLS handshakes (connections that never send a ClientHello) were open. A real server in its own namespace,
// 1,000 such connections from 20 loopback addresses (under the per-address limit), then SIGTERM.

import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { addUser, type FacadeProcess, startFacade } from '../helpers/facade.js';
import { Netns, netnsSkipReason, uniqueName } from '../helpers/netns.js';

const skip = netnsSkipReason();
const HOLD = fileURLToPath(new URL('../helpers/hold-connections-cli.js', import.meta.url));
const CONNECTIONS = 1_000;
/** "Within a few seconds": Node's own close plus the site's grace for connections it is serving. */
const STOP_WITHIN_MS = 5_000;

describe('SIGTERM with 1,000 stalled connections open', { skip: skip ?? false }, () => {
  let dir: string;
  let ns: Netns;
  let server: FacadeProcess | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-sigterm-'));
    await chmod(dir, 0o755);
    ns = await Netns.create('st');
    for (let i = 1; i <= 20; i++) await ns.ip(['addr', 'add', `127.0.1.${i}/8`, 'dev', 'lo']);
    await addUser(ns, {
      users: join(dir, 'users.json'),
      tunnelPath: '/sigterm',
      name: 'alice',
      password: 'pw-of-alice',
    });
    server = startFacade(ns, [
      'server',
      '--listen',
      '127.0.0.1:8443',
      '--http-listen',
      '127.0.0.1:8080',
      '--pool',
      '198.18.77.0/24',
      '--users',
      join(dir, 'users.json'),
      '--tunnel-path',
      '/sigterm',
      '--state-dir',
      join(dir, 'state'),
      '--tun',
      uniqueName('sg'),
    ]);
    await server.waitFor(/facade server ready/);
  });

  after(async () => {
    await server?.stop('SIGKILL');
    await ns?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the server stops within a few seconds, exit code 0', async (t) => {
    const holder = ns.spawn(process.execPath, [HOLD, '127.0.0.1', '8443', String(CONNECTIONS), '50']);
    let out = '';
    holder.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    try {
      const deadline = Date.now() + 20_000;
      while (!out.includes(`open ${CONNECTIONS}`) && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 50));
      assert.match(out, new RegExp(`open ${CONNECTIONS}`), `not all connections opened: ${out}`);
      const started = Date.now();
      const code = await (server as FacadeProcess).stop('SIGTERM');
      const took = Date.now() - started;
      t.diagnostic(`SIGTERM to exit: ${took} ms with ${CONNECTIONS} stalled connections open`);
      assert.equal(code, 0, (server as FacadeProcess).lines.slice(-5).join('\n'));
      assert.ok(took < STOP_WITHIN_MS, `SIGTERM took ${took} ms with ${CONNECTIONS} connections open`);
    } finally {
      holder.stdin?.end();
      holder.kill();
    }
  });
});
