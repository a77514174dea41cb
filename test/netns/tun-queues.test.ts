// The multi-queue TUN's steering against the real kernel: a device with three queues moved into a fresh
// namespace, pings from inside to addresses steered to queues 1 and 2, and to one with no entry. Each
// queue answers only its own echo requests, so a packet steered to the wrong queue shows as a loss there
// and as a count on the wrong reader. IPv4 and IPv6.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addAddress, moveToNetns, setLinkUp } from '../../src/net/ifconfig.js';
import { TunDevice } from '../../src/net/tun.js';
import { steeringKey, TunQueues } from '../../src/net/tun-queues.js';
import { echoReply } from '../helpers/icmp.js';
import { netnsSkipReason, uniqueName, withNetns } from '../helpers/netns.js';

const skip = netnsSkipReason() ?? false;

test('steering: each address reaches the queue the map names, others queue 0, both families', {
  skip,
}, async (t) => {
  const queues = TunQueues.open({ name: uniqueName('fq'), queues: 3, vnetHdr: false, maxAddresses: 16 });
  t.after(() => queues.close());
  // Each queue read as a worker would: through its own TunDevice on the fd.
  const readers = queues.fds.map((fd, i) => {
    const tun = TunDevice.fromFd(fd, { name: queues.name, vnetHdr: false });
    const seen: string[] = [];
    tun.onBatch((batch) => {
      const replies: Buffer[] = [];
      for (let p = 0; p < batch.count; p++) {
        const offset = batch.offsets[p]!;
        const version = batch.buffer[offset]! >> 4;
        const destination =
          version === 4
            ? batch.buffer.subarray(offset + 16, offset + 20).join('.')
            : batch.buffer.subarray(offset + 24, offset + 40).toString('hex');
        const reply = echoReply(batch.buffer, offset, batch.lengths[p]!);
        if (reply === null) continue; // the kernel's own (router solicitations): not ours to count
        seen.push(destination);
        replies.push(reply);
      }
      tun.writePackets(replies);
    });
    return { index: i, tun, seen };
  });
  // Only this process's wrappers: the fds themselves are closed by queues.close().
  t.after(() => {
    for (const reader of readers) reader.tun.pause();
  });

  const ns = await withNetns(t, 'fq');
  await moveToNetns(queues.name, ns.name);
  await addAddress(queues.name, '198.18.40.1/24', { netns: ns.name });
  await addAddress(queues.name, 'fd00:40::1/64', { netns: ns.name });
  await setLinkUp(queues.name, { netns: ns.name });

  queues.steer('198.18.40.11', 1);
  queues.steer('198.18.40.12', 2);
  queues.steer('fd00:40::12', 2);
  assert.equal(queues.queueOf('198.18.40.11'), 1);
  assert.equal(queues.queueOf('198.18.40.13'), undefined);
  assert.deepEqual([...steeringKey('198.18.40.11')].slice(10), [0xff, 0xff, 198, 18, 40, 11]);

  const ping = async (address: string): Promise<void> => {
    const result = await ns.exec('ping', ['-c', '3', '-i', '0.05', '-W', '2', address]);
    assert.match(result.stdout, / 0% packet loss/, `${address}: ${result.stdout}${result.stderr}`);
  };
  await ping('198.18.40.11');
  await ping('198.18.40.12');
  await ping('198.18.40.13');
  await ping('fd00:40::12');

  const v6Hex = 'fd000040000000000000000000000012';
  assert.deepEqual(
    readers.map((r) => [...new Set(r.seen)].sort()),
    [['198.18.40.13'], ['198.18.40.11'], ['198.18.40.12', v6Hex]],
  );

  // Moved: the same address now reaches queue 0's reader, then, unsteered, the default queue again.
  queues.steer('198.18.40.11', 0);
  await ping('198.18.40.11');
  assert.ok(readers[0]!.seen.includes('198.18.40.11'));
  const before = readers[1]!.seen.length;
  queues.unsteer('198.18.40.12');
  await ping('198.18.40.12');
  assert.equal(readers[1]!.seen.length, before);
  assert.ok(readers[0]!.seen.includes('198.18.40.12'));
});
