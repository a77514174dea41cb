// MemoryTun, the TUN without a kernel: batches laid out as the native reader lays them out, packets held
// while paused, written packets recorded, and the failure knobs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import { MemoryTun } from '../../src/net/memory-tun.js';
import type { PacketBatch } from '../../src/net/tun.js';
import { udp4, udp6 } from '../helpers/packets.js';

/** What a handler can keep of a batch: copies, since the buffer is reused. */
function record(tun: MemoryTun): { batches: Buffer[][]; raw: PacketBatch[] } {
  const batches: Buffer[][] = [];
  const raw: PacketBatch[] = [];
  tun.onBatch((batch) => {
    raw.push(batch);
    const packets: Buffer[] = [];
    for (let i = 0; i < batch.count; i++) {
      const offset = batch.offsets[i] as number;
      packets.push(Buffer.from(batch.buffer.subarray(offset, offset + (batch.lengths[i] as number))));
    }
    batches.push(packets);
  });
  return { batches, raw };
}

const a = udp4('198.18.0.2', '198.19.0.1');
const b = udp6('fd00:18::2', 'fd00:99::1');

test('injected packets arrive as one batch in one reused buffer, each after the headroom', () => {
  const tun = new MemoryTun({ headroom: 4 });
  const { batches, raw } = record(tun);
  tun.inject([a, b]);
  tun.inject([b]);
  assert.deepEqual(batches, [[a, b], [b]]);
  assert.equal(raw[0], raw[1], 'the same batch object every time');
  const batch = raw[1] as PacketBatch;
  assert.equal(batch.offsets[0], 4, 'headroom before the first packet');
  assert.deepEqual(tun.stats, {
    packetsRead: 3,
    bytesRead: 2 * b.length + a.length,
    batches: 2,
    packetsWritten: 0,
    writeDrops: 0,
    largestBatch: 2,
  });
});

test('packets are laid out back to back, headroom apart, like the native reader', () => {
  const tun = new MemoryTun({ headroom: 4 });
  const offsets: number[] = [];
  tun.onBatch((batch) => {
    for (let i = 0; i < batch.count; i++) offsets.push(batch.offsets[i] as number);
  });
  tun.inject([a, b]);
  assert.deepEqual(offsets, [4, 4 + a.length + 4]);
});

test('with vnetHdr each packet follows its 10-byte header: zeros, or the one given', () => {
  const tun = new MemoryTun({ vnetHdr: true });
  const { batches } = record(tun);
  const header = Buffer.from([1, 5, 28, 0, 1200 & 0xff, 1200 >> 8, 20, 0, 6, 0]);
  // The header first: the plain packet after it reuses the buffer and must not inherit the header.
  tun.inject([b], header);
  tun.inject([a]);
  assert.deepEqual(batches, [[Buffer.concat([header, b])], [Buffer.concat([Buffer.alloc(10), a])]]);
});

test('a batch ends at batchPackets, or when a largest read would not fit the buffer', () => {
  const small = new MemoryTun({ batchPackets: 2 });
  const bySize = record(small).batches;
  small.inject([a, a, b, b, a]);
  assert.deepEqual(
    bySize.map((batch) => batch.length),
    [2, 2, 1],
  );
  // Room for exactly one largest read (65535 bytes) after the first packet: not two.
  const tight = new MemoryTun({ batchBytes: 65535 + a.length });
  const byBytes = record(tight).batches;
  tight.inject([a, a, a]);
  assert.deepEqual(
    byBytes.map((batch) => batch.length),
    [2, 1],
  );
});

test('packets wait while paused and before a handler exists, and arrive in order on resume', () => {
  const tun = new MemoryTun();
  tun.inject([a]); // no handler yet
  const { batches } = record(tun);
  assert.deepEqual(batches, [[a]], 'delivered once the handler was set');
  tun.pause();
  const reused = Buffer.from(b);
  tun.inject([reused]);
  reused.fill(0); // the caller's buffer is theirs again: a held packet is a copy
  tun.inject([a]);
  assert.equal(batches.length, 1);
  tun.resume();
  assert.deepEqual(batches.slice(1).flat(), [b, a]);
});

test('a handler that pauses leaves the rest of the injection waiting', () => {
  const tun = new MemoryTun({ batchPackets: 1 });
  const seen: number[] = [];
  tun.onBatch((batch) => {
    seen.push(batch.buffer[batch.offsets[0] as number] as number);
    tun.pause();
  });
  tun.inject([a, b, a]);
  assert.deepEqual(seen, [0x45]);
  tun.resume();
  assert.deepEqual(seen, [0x45, 0x60]);
  tun.resume();
  assert.deepEqual(seen, [0x45, 0x60, 0x45]);
});

test('writePackets keeps copies, honours writeLimit, and whenWritten waits for a count', async () => {
  const tun = new MemoryTun();
  const waiting = tun.whenWritten(2);
  const packet = Buffer.from(a);
  assert.equal(tun.writePackets([packet]), 1);
  packet.fill(0);
  assert.deepEqual(tun.written, [a], 'a copy, not the caller buffer');
  tun.writeLimit = 1;
  assert.equal(
    tun.writePackets([b, b, b], 2),
    1,
    'count bounds the packets considered; the limit the ones taken',
  );
  assert.deepEqual(await waiting, [a, b]);
  assert.equal(tun.stats.writeDrops, 1);
  tun.writeLimit = 0;
  assert.equal(tun.writePackets([a]), 0);
  assert.equal(tun.stats.writeDrops, 2);
});

test('fail() stops reading and calls the error handler; throwOnWrite makes writes throw', () => {
  const tun = new MemoryTun();
  const { batches } = record(tun);
  const errors: Error[] = [];
  tun.onError((err) => errors.push(err));
  tun.fail();
  assert.equal(errors.length, 1);
  assert.ok(isFacadeError(errors[0], 'TUN_IO'), 'the code a deleted device reports');
  tun.inject([a]);
  assert.equal(batches.length, 0, 'nothing is read after a read error');

  const writeError = new Error('gone');
  tun.throwOnWrite(writeError);
  assert.throws(() => tun.writePackets([a]), writeError);
});

test('a read error without a handler is thrown, as an unhandled error event would be', () => {
  const tun = new MemoryTun();
  const err = new Error('no handler');
  assert.throws(() => tun.fail(err), err);
});

test('close() is idempotent, rejects waiters, and the device refuses use afterwards', async () => {
  const tun = new MemoryTun({ name: 'mem7' });
  const waiting = tun.whenWritten(1);
  tun.close();
  tun.close();
  await assert.rejects(waiting, (err) => isFacadeError(err, 'TUN_CLOSED'));
  assert.throws(
    () => tun.inject([a]),
    (err) => isFacadeError(err, 'TUN_CLOSED'),
  );
  assert.throws(
    () => tun.writePackets([a]),
    (err) => isFacadeError(err, 'TUN_CLOSED'),
  );
  assert.equal(tun.closed, true);
});
