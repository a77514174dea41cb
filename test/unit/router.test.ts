// The router: destination lookups by address family, replacement, removal only by the current owner, and
// packets that are not IP.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Router } from '../../src/engine/router.js';
import { ipv4ToNumber, ipv6ToKey } from '../../src/net/packet.js';
import { udp4, udp6 } from '../helpers/packets.js';

const ALICE_V4 = '198.18.0.2';
const ALICE_V6 = 'fd00:18::2';
const BOB_V4 = '198.18.0.3';
const BOB_V6 = 'fd00:18::3';

function routerWithTwo(): Router<string> {
  const router = new Router<string>();
  router.add('alice', ipv4ToNumber(ALICE_V4), ipv6ToKey(ALICE_V6));
  router.add('bob', ipv4ToNumber(BOB_V4), ipv6ToKey(BOB_V6));
  return router;
}

test('IPv4 and IPv6 packets go to the owner of their destination address', () => {
  const router = routerWithTwo();
  assert.equal(router.lookupDestination(udp4('198.19.0.1', ALICE_V4), 0), 'alice');
  assert.equal(router.lookupDestination(udp4('198.19.0.1', BOB_V4), 0), 'bob');
  assert.equal(router.lookupDestination(udp6('fd00:99::1', ALICE_V6), 0), 'alice');
  assert.equal(router.lookupDestination(udp6('fd00:99::1', BOB_V6), 0), 'bob');
  // The source address does not route: a packet from alice to an unknown address has no owner.
  assert.equal(router.lookupDestination(udp4(ALICE_V4, '198.18.0.77'), 0), undefined);
  assert.equal(router.lookupDestination(udp6(ALICE_V6, 'fd00:18::77'), 0), undefined);
});

test('lookups read the packet at its offset inside a larger buffer (a TUN batch)', () => {
  const router = routerWithTwo();
  const first = udp4('198.19.0.1', ALICE_V4);
  const second = udp6('fd00:99::1', BOB_V6);
  const batch = Buffer.concat([Buffer.alloc(3), first, Buffer.alloc(10), second]);
  assert.equal(router.lookupDestination(batch, 3), 'alice');
  assert.equal(router.lookupDestination(batch, 3 + first.length + 10), 'bob');
});

test('an address family without a route finds nothing', () => {
  const router = new Router<string>();
  router.add('v4-only', ipv4ToNumber(ALICE_V4));
  assert.equal(router.lookupDestination(udp4('198.19.0.1', ALICE_V4), 0), 'v4-only');
  assert.equal(router.lookupDestination(udp6('fd00:99::1', ALICE_V6), 0), undefined);
});

test('adding an address again replaces its owner', () => {
  const router = routerWithTwo();
  router.add('alice-again', ipv4ToNumber(ALICE_V4), ipv6ToKey(ALICE_V6));
  assert.equal(router.lookupDestination(udp4('198.19.0.1', ALICE_V4), 0), 'alice-again');
  assert.equal(router.lookupDestination(udp6('fd00:99::1', ALICE_V6), 0), 'alice-again');
});

test('remove takes routes away only from their current owner', () => {
  const router = routerWithTwo();
  router.add('alice-again', ipv4ToNumber(ALICE_V4), ipv6ToKey(ALICE_V6));
  // The replaced owner closing late must not take its successor's routes.
  router.remove('alice', ipv4ToNumber(ALICE_V4), ipv6ToKey(ALICE_V6));
  assert.equal(router.lookupDestination(udp4('198.19.0.1', ALICE_V4), 0), 'alice-again');
  assert.equal(router.lookupDestination(udp6('fd00:99::1', ALICE_V6), 0), 'alice-again');

  router.remove('alice-again', ipv4ToNumber(ALICE_V4), ipv6ToKey(ALICE_V6));
  assert.equal(router.lookupDestination(udp4('198.19.0.1', ALICE_V4), 0), undefined);
  assert.equal(router.lookupDestination(udp6('fd00:99::1', ALICE_V6), 0), undefined);
  // Others keep theirs.
  assert.equal(router.lookupDestination(udp4('198.19.0.1', BOB_V4), 0), 'bob');
  assert.equal(router.lookupDestination(udp6('fd00:99::1', BOB_V6), 0), 'bob');
});

test('removing the IPv4 route alone leaves the IPv6 one', () => {
  const router = routerWithTwo();
  router.remove('alice', ipv4ToNumber(ALICE_V4));
  assert.equal(router.lookupDestination(udp4('198.19.0.1', ALICE_V4), 0), undefined);
  assert.equal(router.lookupDestination(udp6('fd00:99::1', ALICE_V6), 0), 'alice');
});

test('a packet that is not IPv4 or IPv6 has no destination', () => {
  const router = routerWithTwo();
  // Same bytes as a packet to alice, but version 5 / 0 in the first nibble.
  const packet = udp4('198.19.0.1', ALICE_V4);
  packet[0] = 0x55;
  assert.equal(router.lookupDestination(packet, 0), undefined);
  packet[0] = 0x05;
  assert.equal(router.lookupDestination(packet, 0), undefined);
});
