// What a server may do to a client's host. A server (any that holds a certificate the client trusts) pushes
// the routes of the security review's attack: 0/1 + 128/1 and ::/1 + 8000::/1 (everything, without touching
// the default route), a prefix holding the server's own address, and DNS servers without domains. A client
// that did not ask for a full tunnel installs none of that, says why, and still gets the honest route.
//
//   ns S (facade server) ── veth ── ns C (client)        198.18.0.0/15 and fd00::/8 only

import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { addUser, clientArgs, type FacadeProcess, field, startFacade } from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, uniqueName } from '../helpers/netns.js';

const skip = netnsSkipReason();
const net = 150 + (process.pid % 40) * 2;
const LINK = `198.19.${net}`;
const POOL = `198.18.${net}`;
const POOL6 = `fd00:${net.toString(16)}:`;
const HONEST = `198.18.${net + 1}.0/24`;
const PORT = 8443;
const PATH = '/pushed/routes';

describe('routes and DNS a server pushes to a client without --full-tunnel', { skip: skip ?? false }, () => {
  let dir: string;
  let s: Netns;
  let c: Netns;
  let server: FacadeProcess | undefined;
  let client: FacadeProcess | undefined;
  const tun = uniqueName('fr');

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-pushed-'));
    // The server runs as nobody after start-up (--run-as): it must reach its files through this one.
    await chmod(dir, 0o755);
    s = await Netns.create('prs');
    c = await Netns.create('prc');
    await createVethPair(s, c, { addrA: `${LINK}.1/24`, addrB: `${LINK}.2/24` });
    await writeFile(join(dir, 'pw'), 'pw-of-alice\n');
    await addUser(s, {
      users: join(dir, 'users.json'),
      tunnelPath: PATH,
      name: 'alice',
      password: 'pw-of-alice',
    });
    server = startFacade(s, [
      'server',
      '--listen',
      `0.0.0.0:${PORT}`,
      '--http-listen',
      '127.0.0.1:8080',
      '--pool',
      `${POOL}.0/24`,
      '--pool6',
      `${POOL6}:/64`,
      '--users',
      join(dir, 'users.json'),
      '--tunnel-path',
      PATH,
      '--state-dir',
      join(dir, 'state'),
      ...['0.0.0.0/1', '128.0.0.0/1', '::/1', '8000::/1', `${LINK}.0/24`, HONEST].flatMap((r) => [
        '--route',
        r,
      ]),
      '--dns',
      `${POOL}.1`,
    ]);
    const fingerprint = String(field(await server.waitFor(/self-signed certificate/), 'fingerprint'));
    await server.waitFor(/facade server ready/);
    client = startFacade(
      c,
      clientArgs({
        url: `https://${LINK}.1:${PORT}${PATH}`,
        user: 'alice',
        passwordFile: join(dir, 'pw'),
        pin: fingerprint,
        tun,
        keepalive: null,
      }),
    );
    await client.waitFor(/connected:/);
  });

  after(async () => {
    for (const p of [client, server]) await p?.stop('SIGKILL');
    for (const n of [c, s]) await n?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('routes that would take over the host are refused, each with its reason; the honest one is installed', async () => {
    const table = [
      ...(JSON.parse(await c.ip(['-j', 'route', 'show'])) as Array<{ dst: string; dev: string }>),
      ...(JSON.parse(await c.ip(['-j', '-6', 'route', 'show'])) as Array<{ dst: string; dev: string }>),
    ];
    const viaTunnel = table.filter((r) => r.dev === tun).map((r) => r.dst);
    for (const hostile of ['0.0.0.0/1', '128.0.0.0/1', '::/1', '8000::/1', `${LINK}.0/24`])
      assert.ok(!viaTunnel.includes(hostile), `${hostile} was installed: ${viaTunnel.join(' ')}`);
    assert.ok(viaTunnel.includes(HONEST), `the honest route is missing: ${viaTunnel.join(' ')}`);
    // With no default route in C, an arbitrary address is unreachable, not routed into the tunnel.
    const anywhere = await c.exec('ip', ['-j', 'route', 'get', '198.18.250.9']);
    assert.ok(
      !anywhere.stdout.includes(`"dev":"${tun}"`),
      `an arbitrary address goes through the tunnel: ${anywhere.stdout}`,
    );
    for (const hostile of ['0.0.0.0/1', '128.0.0.0/1', '::/1', '8000::/1'])
      assert.ok(
        client?.lines.some(
          (l) => l.includes(`pushed route ${hostile} refused`) && l.includes('--full-tunnel'),
        ),
        `no refusal logged for ${hostile}`,
      );
    assert.ok(
      client?.lines.some((l) => l.includes(`pushed route ${LINK}.0/24 refused`) && l.includes('own address')),
    );
  });

  test('DNS servers pushed without domains are not used for every name', () => {
    assert.ok(
      client?.lines.some((l) => /pushed DNS servers not used: .*without --full-tunnel/.test(l)),
      client?.lines.join('\n'),
    );
  });
});
