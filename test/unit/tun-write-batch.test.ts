// TunWriteBatch: the packets of one socket chunk, written to the TUN in one batch. Plain mode hands the
// decoder's views over as they are; vnetHdr mode stages each behind its virtio_net_hdr in a reused slab.
// A full queue and a failed device are counted, never thrown into the socket listener that flushes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_PACKET_SIZE } from '../../src/core/limits.js';
import { MemoryTun } from '../../src/net/memory-tun.js';
import { GsoType, OFFLOAD_HEADER_SIZE, OffloadFlag, type OffloadHeader } from '../../src/protocol/frame.js';
import { TunWriteBatch } from '../../src/session/tun-write-batch.js';
import { udp4, udp6 } from '../helpers/packets.js';

/** A MemoryTun that also keeps the very objects writePackets() was given. */
class SpyTun extends MemoryTun {
  readonly given: Uint8Array[] = [];
  override writePackets(packets: readonly Uint8Array[], count = packets.length): number {
    this.given.push(...packets.slice(0, count));
    return super.writePackets(packets, count);
  }
}

const noError = (err: unknown): void => assert.fail(`unexpected TUN error: ${String(err)}`);

/** A TCPv4 GSO header: the batch does not judge metadata (the session did), it passes the bytes on. */
const GSO: OffloadHeader = {
  flags: OffloadFlag.NEEDS_CSUM,
  gsoType: GsoType.TCPV4,
  hdrLen: 52,
  gsoSize: 1388,
  csumStart: 20,
  csumOffset: 16,
};
const GSO_BYTES = Buffer.from([0x01, 0x01, 52, 0, 1388 & 0xff, 1388 >> 8, 20, 0, 16, 0]);

test('plain mode hands the decoded packets themselves to the TUN, in one write', () => {
  const tun = new SpyTun();
  const batch = new TunWriteBatch(tun, false, noError);
  const a = udp4('198.18.0.2', '198.19.0.1');
  const b = udp6('fd00:18::2', 'fd00:99::1');
  assert.equal(batch.add(a, null), a);
  assert.equal(batch.add(b, GSO), b, 'without vnetHdr the offload metadata has nowhere to go');
  assert.equal(tun.written.length, 0, 'nothing is written before flush');
  batch.flush();
  assert.equal(tun.given.length, 2);
  assert.equal(tun.given[0], a, 'no copy');
  assert.equal(tun.given[1], b, 'no copy');
  assert.equal(tun.stats.packetsWritten, 2);
  batch.flush();
  assert.equal(tun.stats.packetsWritten, 2, 'a flush with nothing gathered writes nothing');
  assert.equal(batch.drops, 0);
});

test('vnetHdr mode stages zeros before a plain packet and the offload header before the others', () => {
  const tun = new MemoryTun({ vnetHdr: true });
  const batch = new TunWriteBatch(tun, true, noError);
  const plain = udp4('198.18.0.2', '198.19.0.1');
  const offloaded = udp4('198.18.0.2', '198.19.0.2', Buffer.alloc(200, 7));
  assert.deepEqual(batch.add(offloaded, GSO), Buffer.concat([GSO_BYTES, offloaded]));
  batch.flush();
  // Staged where the header above was: its bytes must be zeroed, not inherited.
  assert.deepEqual(batch.add(plain, null), Buffer.concat([Buffer.alloc(OFFLOAD_HEADER_SIZE), plain]));
  batch.flush();
  assert.deepEqual(tun.written, [
    Buffer.concat([GSO_BYTES, offloaded]),
    Buffer.concat([Buffer.alloc(OFFLOAD_HEADER_SIZE), plain]),
  ]);
});

test('vnetHdr mode reuses its slab after each flush, and flushes early when it is full', () => {
  const tun = new SpyTun({ vnetHdr: true });
  const batch = new TunWriteBatch(tun, true, noError);
  const first = batch.add(udp4('198.18.0.2', '198.19.0.1'), null);
  batch.flush();
  const second = batch.add(udp4('198.18.0.2', '198.19.0.9'), GSO);
  assert.equal(second.buffer, first.buffer, 'the same slab');
  assert.equal(second.byteOffset, first.byteOffset, 'from its start again');
  assert.deepEqual(tun.written[0]?.subarray(0, OFFLOAD_HEADER_SIZE), Buffer.alloc(OFFLOAD_HEADER_SIZE));
  batch.flush();

  // The slab holds four largest packets: the fifth makes add() write the first four.
  const big = udp4('198.18.0.2', '198.19.0.1', Buffer.alloc(MAX_PACKET_SIZE - 28, 1));
  for (let i = 0; i < 4; i++) batch.add(big, null);
  assert.equal(tun.stats.packetsWritten, 2, 'four fit');
  batch.add(big, null);
  assert.equal(tun.stats.packetsWritten, 6, 'the fifth did not fit: the four went first');
  batch.flush();
  assert.equal(tun.stats.packetsWritten, 7);
  assert.ok(
    tun.given.every((packet) => packet.buffer === first.buffer),
    'every packet was staged in the one slab',
  );
  assert.equal(batch.drops, 0);
});

test('packets a full TUN queue refuses are counted as drops', () => {
  const tun = new MemoryTun();
  const batch = new TunWriteBatch(tun, false, noError);
  tun.writeLimit = 1;
  for (let i = 1; i <= 3; i++) batch.add(udp4('198.18.0.2', `198.19.0.${i}`), null);
  batch.flush();
  assert.equal(tun.written.length, 1);
  assert.equal(batch.drops, 2);
  tun.writeLimit = 0;
  batch.add(udp4('198.18.0.2', '198.19.0.4'), null);
  batch.flush();
  assert.equal(batch.drops, 3);
  assert.equal(tun.stats.writeDrops, 3);
  assert.equal(tun.written.length, 1);
});

test('a TUN write that throws goes to onError, counts the packets as drops and does not throw', () => {
  const tun = new MemoryTun({ vnetHdr: true });
  const errors: unknown[] = [];
  const batch = new TunWriteBatch(tun, true, (err) => errors.push(err));
  const gone = new Error('device deleted');
  tun.throwOnWrite(gone);
  batch.add(udp4('198.18.0.2', '198.19.0.1'), null);
  batch.add(udp4('198.18.0.2', '198.19.0.2'), GSO);
  assert.doesNotThrow(() => batch.flush());
  assert.deepEqual(errors, [gone]);
  assert.equal(batch.drops, 2);
  assert.equal(tun.written.length, 0);
  // The batch is empty again: a second flush has nothing to write and reports nothing.
  batch.flush();
  assert.equal(errors.length, 1);
  assert.equal(batch.drops, 2);
});
