// The primary's lease service: one pool for every worker, the steering map kept in step with it.
// The map here records what the kernel's would hold (test/netns/tun-queues.test.ts and workers.test.ts
// check the kernel side); this file checks which entry is set or cleared when.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AddressPool } from '../../src/engine/pool.js';
import { LeaseService, type Steering } from '../../src/server/lease-service.js';

class MapSteering implements Steering {
  readonly map = new Map<string, number>();
  steer(address: string, queue: number): void {
    this.map.set(address, queue);
  }
  unsteer(address: string): void {
    this.map.delete(address);
  }
}

function setup(): { service: LeaseService; steering: MapSteering; pool: AddressPool } {
  const pool = new AddressPool({ ipv4: '198.18.5.0/24', ipv6: 'fd00:5::/64' });
  const steering = new MapSteering();
  return { service: new LeaseService(pool, steering), steering, pool };
}

test('a lease steers both addresses to the asking worker; its release clears them and holds the address', () => {
  const { service, steering, pool } = setup();
  const { lease, replaces } = service.lease(1, 'ann', {});
  assert.equal(replaces, undefined);
  assert.equal(steering.map.get(lease.ipv4), 1);
  assert.equal(steering.map.get(lease.ipv6 as string), 1);
  assert.equal(service.workerOf('ann'), 1);
  service.release('ann', lease.generation);
  assert.equal(steering.map.size, 0);
  assert.equal(service.workerOf('ann'), undefined);
  assert.equal(pool.snapshot()[0]?.state, 'held');
});

test('the same user on another worker: same address, steered there, and the old worker is named', () => {
  const { service, steering } = setup();
  const first = service.lease(0, 'ann', {});
  const second = service.lease(1, 'ann', {});
  assert.equal(second.lease.ipv4, first.lease.ipv4);
  assert.equal(second.replaces, 0);
  assert.equal(steering.map.get(first.lease.ipv4), 1);
  // The old session's late release names the old generation: it changes nothing.
  service.release('ann', first.lease.generation);
  assert.equal(steering.map.get(first.lease.ipv4), 1);
  assert.equal(service.workerOf('ann'), 1);
  // Reconnecting on the same worker replaces nobody elsewhere.
  assert.equal(service.lease(1, 'ann', {}).replaces, undefined);
});

test("a dead worker's leases are released; the other worker's stay steered", () => {
  const { service, steering, pool } = setup();
  const a = service.lease(0, 'ann', {}).lease;
  const b = service.lease(1, 'ben', {}).lease;
  const c = service.lease(1, 'cat', {}).lease;
  assert.equal(service.releaseWorker(1), 2);
  assert.equal(steering.map.get(a.ipv4), 0);
  assert.equal(steering.map.has(b.ipv4), false);
  assert.equal(steering.map.has(c.ipv4), false);
  assert.deepEqual(
    pool.snapshot().map((l) => [l.user, l.state]),
    [
      ['ann', 'active'],
      ['ben', 'held'],
      ['cat', 'held'],
    ],
  );
  // Back on worker 0 within the grace period: the same address.
  assert.equal(service.lease(0, 'ben', {}).lease.ipv4, b.ipv4);
});
