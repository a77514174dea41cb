import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decideDns, decideRoutes } from '../../src/client/route-policy.js';
import type { Route } from '../../src/protocol/control.js';

const r4 = (address: string, prefix: number): Route => ({ family: 4, address, prefix });
const r6 = (address: string, prefix: number): Route => ({ family: 6, address, prefix });
const cidrs = (routes: readonly Route[]) => routes.map((r) => `${r.address}/${r.prefix}`);

test('without --full-tunnel, routes that take over the host are refused, with the reason', () => {
  // The hostile server's push from the security review: halves of both families, then a /8.
  const pushed = [r4('0.0.0.0', 1), r4('128.0.0.0', 1), r6('::', 1), r6('8000::', 1), r4('0.0.0.0', 0)];
  const { accepted, refused } = decideRoutes(pushed, { fullTunnel: false, serverAddress: '198.18.0.1' });
  assert.deepEqual(accepted, []);
  assert.equal(refused.length, 5);
  assert.match(refused[4]?.why ?? '', /default route/);
  assert.match(refused[0]?.why ?? '', /shorter than \/8.*--full-tunnel/);
});

test('ordinary internal prefixes are installed, down to the documented minimum', () => {
  const pushed = [r4('198.18.8.0', 24), r4('198.0.0.0', 8), r6('fd00:fa:ca:de::', 64), r6('fd00::', 16)];
  const { accepted, refused } = decideRoutes(pushed, { fullTunnel: false, serverAddress: '203.0.113.7' });
  assert.deepEqual(cidrs(accepted), ['198.18.8.0/24', '198.0.0.0/8', 'fd00:fa:ca:de::/64', 'fd00::/16']);
  assert.deepEqual(refused, []);
  assert.equal(
    decideRoutes([r4('198.0.0.0', 7)], { fullTunnel: false, serverAddress: '::1' }).accepted.length,
    0,
  );
  assert.equal(
    decideRoutes([r6('fd00::', 15)], { fullTunnel: false, serverAddress: '::1' }).accepted.length,
    0,
  );
});

test('a route containing the server itself is refused, also in a full tunnel', () => {
  for (const fullTunnel of [false, true]) {
    const { accepted, refused } = decideRoutes([r4('198.18.0.0', 15), r6('fd00:1::', 32)], {
      fullTunnel,
      serverAddress: '198.18.3.4',
    });
    assert.deepEqual(cidrs(accepted), ['fd00:1::/32']);
    assert.match(refused[0]?.why ?? '', /server's own address 198\.18\.3\.4/);
  }
  const v6 = decideRoutes([r6('fd00:1::', 32)], { fullTunnel: false, serverAddress: 'fd00:1::9' });
  assert.equal(v6.accepted.length, 0);
});

test('with --full-tunnel the user asked for everything: short routes pass', () => {
  const { accepted } = decideRoutes([r4('0.0.0.0', 1), r6('::', 1)], {
    fullTunnel: true,
    serverAddress: '198.19.0.1',
  });
  assert.equal(accepted.length, 2);
});

test('pushed DNS answers every name only in a full tunnel; otherwise only the pushed domains, or nothing', () => {
  const servers = ['198.18.0.1'];
  assert.deepEqual(decideDns({ dns: servers }, { fullTunnel: true, dns: true }), {
    apply: true,
    servers,
    domains: ['~.'],
    defaultRoute: true,
  });
  assert.deepEqual(
    decideDns({ dns: servers, dnsDomains: ['corp.example'] }, { fullTunnel: false, dns: true }),
    {
      apply: true,
      servers,
      domains: ['~corp.example'],
      defaultRoute: false,
    },
  );
  const none = decideDns({ dns: servers }, { fullTunnel: false, dns: true });
  assert.equal(none.apply, false);
  assert.match(none.apply ? '' : none.why, /without --full-tunnel/);
  assert.equal(decideDns({ dns: servers }, { fullTunnel: true, dns: false }).apply, false);
  assert.equal(decideDns({ dns: [] }, { fullTunnel: true, dns: true }).apply, false);
});
