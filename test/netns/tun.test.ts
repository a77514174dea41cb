// The TUN device against the real kernel: each test opens a TUN in this process, moves it into a fresh
// network namespace (the fd keeps working) and pings through it from inside, with a JS echo responder
// on the other end of the fd. Nothing touches the host's own network.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isFacadeError } from '../../src/core/errors.js';
import {
  addAddress,
  addRoute,
  delRoute,
  moveToNetns,
  routeGet,
  setLinkDown,
  setLinkUp,
  setMtu,
} from '../../src/net/ifconfig.js';
import { checkPacket } from '../../src/net/packet.js';
import { type PacketBatch, TunDevice, type TunOpenOptions, VNET_HDR_SIZE } from '../../src/net/tun.js';
import { echoReply } from '../helpers/icmp.js';
import { type Netns, netnsSkipReason, uniqueName, withNetns } from '../helpers/netns.js';

const skip = netnsSkipReason() ?? false;

/** Opens a TUN here, moves it into a new namespace and gives it addresses there. */
async function tunInNetns(
  t: TestContext,
  subnet: number,
  options: TunOpenOptions = {},
): Promise<{ ns: Netns; tun: TunDevice; peer4: string; peer6: string }> {
  // Registered first so it runs first: deleting the namespace under an open TUN deletes the device.
  const tun = TunDevice.open({ name: uniqueName('ft'), ...options });
  t.after(() => tun.close());
  const ns = await withNetns(t, 'ftun');
  await moveToNetns(tun.name, ns.name);
  await addAddress(tun.name, `198.18.${subnet}.1/24`, { netns: ns.name });
  await addAddress(tun.name, `fd00:${subnet}::1/64`, { netns: ns.name });
  await setLinkUp(tun.name, { netns: ns.name });
  return { ns, tun, peer4: `198.18.${subnet}.2`, peer6: `fd00:${subnet}::2` };
}

interface Responder {
  /** Batch sizes seen, in order. */
  sizes: number[];
  replies: number;
}

/** Answers every echo request in each batch with one writePackets call per batch. */
function startResponder(tun: TunDevice, check?: (batch: PacketBatch) => void): Responder {
  const responder: Responder = { sizes: [], replies: 0 };
  const header = tun.vnetHdr ? VNET_HDR_SIZE : 0;
  const out: Buffer[] = [];
  tun.onBatch((batch) => {
    check?.(batch);
    responder.sizes.push(batch.count);
    out.length = 0;
    for (let i = 0; i < batch.count; i++) {
      const reply = echoReply(batch.buffer, batch.offsets[i]! + header, batch.lengths[i]! - header);
      if (reply === null) continue;
      // With IFF_VNET_HDR every write starts with a virtio_net_hdr; all zero = no offload requested.
      out.push(header === 0 ? reply : Buffer.concat([Buffer.alloc(header), reply]));
    }
    responder.replies += tun.writePackets(out);
  });
  return responder;
}

function lossOf(pingOutput: string): string {
  return /(\d+(?:\.\d+)?)% packet loss/.exec(pingOutput)?.[1] ?? `unparsable: ${pingOutput}`;
}

function histogram(sizes: readonly number[]): string {
  const counts = new Map<number, number>();
  for (const s of sizes) counts.set(s, (counts.get(s) ?? 0) + 1);
  return [...counts.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([size, n]) => `${size}:${n}`)
    .join(' ');
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

test('ping through a TUN in a namespace: batches in, echo replies out, IPv4 and IPv6', {
  skip,
}, async (t) => {
  const headroom = 4;
  const { ns, tun, peer4, peer6 } = await tunInNetns(t, 1, { headroom });
  let checkedBatches = 0;
  const responder = startResponder(tun, (batch) => {
    assert.ok(batch.count >= 1);
    let end = 0;
    for (let i = 0; i < batch.count; i++) {
      // Headroom free bytes before each packet, packets in order without overlap.
      assert.ok(batch.offsets[i]! >= end + headroom, `offset ${batch.offsets[i]} after end ${end}`);
      assert.equal(checkPacket(batch.buffer, batch.offsets[i]!, batch.lengths[i]!), null);
      end = batch.offsets[i]! + batch.lengths[i]!;
    }
    checkedBatches += 1;
  });
  assert.equal(tun.headroom, headroom);

  const v4 = await ns.exec('ping', ['-c', '5', '-i', '0.2', '-W', '2', peer4]);
  assert.equal(lossOf(v4.stdout), '0', v4.stdout + v4.stderr);
  const v6 = await ns.exec('ping', ['-6', '-c', '5', '-i', '0.2', '-W', '2', peer6]);
  assert.equal(lossOf(v6.stdout), '0', v6.stdout + v6.stderr);

  const stats = tun.stats;
  assert.equal(responder.replies, 10);
  assert.equal(stats.packetsWritten, 10);
  assert.equal(stats.writeDrops, 0);
  // The kernel may also send router solicitations or MLD reports into the TUN: at least 10 read.
  assert.ok(stats.packetsRead >= 10, `packetsRead ${stats.packetsRead}`);
  assert.equal(stats.batches, checkedBatches);
  assert.equal(
    stats.packetsRead,
    responder.sizes.reduce((a, b) => a + b, 0),
  );
  assert.ok(stats.bytesRead >= 5 * 84 + 5 * 104, `bytesRead ${stats.bytesRead}`);
  assert.equal(stats.largestBatch, Math.max(...responder.sizes));
});

test('a ping flood is read in batches of more than one packet', { skip }, async (t) => {
  const { ns, tun, peer4 } = await tunInNetns(t, 2);
  const responder = startResponder(tun);
  // Plain flood first, for the record: ping waits for each reply, so the queue rarely holds two.
  const plain = await ns.exec('ping', ['-f', '-q', '-c', '1000', '-W', '2', peer4], { timeoutMs: 60_000 });
  const plainSizes = responder.sizes.splice(0);
  t.diagnostic(
    `ping -f -c 1000 (no preload): ${plainSizes.length} batches, histogram ${histogram(plainSizes)}`,
  );
  assert.equal(lossOf(plain.stdout), '0', plain.stdout + plain.stderr);
  // -l 64 preloads 64 requests back to back, so the kernel queues several before the reader wakes.
  const flood = await ns.exec('ping', ['-f', '-q', '-l', '64', '-c', '2000', '-W', '2', peer4], {
    timeoutMs: 60_000,
  });
  const sizes = responder.sizes;
  const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length;
  t.diagnostic(
    `ping -f -l 64 -c 2000: ${sizes.length} batches, max ${Math.max(...sizes)}, mean ${mean.toFixed(2)}`,
  );
  t.diagnostic(`batch-size histogram (size:batches): ${histogram(sizes)}`);
  t.diagnostic(flood.stdout.trim().split('\n').slice(-2).join(' | '));
  assert.equal(lossOf(flood.stdout), '0', flood.stdout + flood.stderr);
  assert.ok(
    tun.stats.largestBatch > 1,
    `largest batch ${tun.stats.largestBatch}: never more than one packet`,
  );
  assert.ok(responder.replies >= 3000);
});

test('pause() stops reading; resume() delivers what the kernel queued', { skip }, async (t) => {
  const { ns, tun, peer4 } = await tunInNetns(t, 3);
  let requests = 0;
  let batches = 0;
  let wake: (() => void) | undefined;
  tun.onBatch((batch) => {
    batches += 1;
    for (let i = 0; i < batch.count; i++) {
      if (echoReply(batch.buffer, batch.offsets[i]!, batch.lengths[i]!) !== null) requests += 1;
    }
    wake?.();
  });
  tun.pause();
  tun.pause();
  assert.equal(tun.paused, true);
  // No replies while paused: ping reports 100% loss after its deadline.
  const ping = await ns.exec('ping', ['-c', '3', '-i', '0.2', '-w', '1', peer4]);
  assert.equal(lossOf(ping.stdout), '100');
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(batches, 0, 'a batch arrived while paused');

  const arrived = new Promise<void>((resolve) => {
    wake = () => {
      if (requests >= 3) resolve();
    };
  });
  tun.resume();
  tun.resume();
  const timeout = setTimeout(
    () => assert.fail(`only ${requests} of 3 queued requests arrived after resume`),
    5000,
  );
  await arrived;
  clearTimeout(timeout);
  assert.ok(requests >= 3);
});

test('opening and closing 1,000 TUNs leaks no file descriptor, also when opening fails', {
  skip,
}, async () => {
  // Warm up: the first open loads the addon and may open files of its own.
  TunDevice.open({ name: uniqueName('fl') }).close();
  const before = openFds();
  // Creating and deleting a netdev costs the kernel ~20 ms (RCU grace periods), so most rounds attach
  // and detach a queue of a device that an anchor queue keeps alive: the same open/ioctl/close path.
  const name = uniqueName('fq');
  const anchor = TunDevice.open({ name, multiQueue: true });
  let refused = 0;
  for (let i = 0; i < 1000; i++) {
    const tun = TunDevice.open({ name, multiQueue: true, batchBytes: 128 * 1024, batchPackets: 8 });
    if (i % 2 === 0) tun.onBatch(() => {}); // exercise the poll handle's start/close path too
    if (i % 4 === 0) tun.pause();
    tun.close();
    tun.close();
    if (i % 10 === 0) {
      // Flags that do not match the device: TUNSETIFF fails after /dev/net/tun was opened.
      assert.throws(
        () => TunDevice.open({ name }),
        (err) => isFacadeError(err, 'TUN_OPEN'),
      );
      refused += 1;
    }
  }
  anchor.close();
  for (let i = 0; i < 20; i++) TunDevice.open({}).close(); // kernel-chosen names: device created, deleted
  // Poll handles are freed in their close callbacks, on the next loop turn.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(refused, 100);
  assert.equal(openFds(), before);
});

test('deleting the device under a reading TunDevice reports a coded read error', { skip }, async (t) => {
  const { ns, tun } = await tunInNetns(t, 4);
  tun.onBatch(() => {});
  const failed = new Promise<Error>((resolve) => tun.onError(resolve));
  await ns.ip(['link', 'del', 'dev', tun.name]);
  const err = await failed;
  assert.ok(isFacadeError(err, 'TUN_IO'), String(err));
  assert.equal(err.errno, 'EBADFD');
  assert.match(err.message, /device was deleted/);
  tun.close();
});

test('open errors are coded and say what to do', { skip }, async (t) => {
  await t.test('an unprivileged user gets the root or CAP_NET_ADMIN hint', async () => {
    const tunModule = fileURLToPath(new URL('../../src/net/tun.js', import.meta.url));
    const script = `import(${JSON.stringify(tunModule)}).then(({ TunDevice }) => {
      try { TunDevice.open({ name: ${JSON.stringify(uniqueName('fn'))} }); console.log('{"opened":true}'); }
      catch (err) { console.log(JSON.stringify({ code: err.code, errno: err.errno, message: err.message })); }
    });`;
    const child = spawn(process.execPath, ['-e', script], {
      uid: 65534,
      gid: 65534,
      cwd: '/',
      stdio: 'pipe',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const code = await new Promise((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout);
    assert.equal(result.code, 'FACADE_ERR_TUN_OPEN', stdout);
    assert.match(result.errno, /^(EPERM|EACCES)$/);
    assert.match(result.message, /needs root or CAP_NET_ADMIN/);
  });

  await t.test('a name in use gives the EBUSY hint; multiQueue allows two queues', () => {
    const name = uniqueName('fb');
    const first = TunDevice.open({ name });
    t.after(() => first.close());
    assert.throws(
      () => TunDevice.open({ name }),
      (err) =>
        isFacadeError(err, 'TUN_OPEN') &&
        err.errno === 'EBUSY' &&
        err.message.includes(name) &&
        /name is in use by another device or process/.test(err.message),
    );

    const mqName = uniqueName('fm');
    const queue1 = TunDevice.open({ name: mqName, multiQueue: true });
    const queue2 = TunDevice.open({ name: mqName, multiQueue: true });
    assert.equal(queue1.name, mqName);
    assert.equal(queue2.name, mqName);
    queue1.close();
    queue2.close();
  });

  await t.test('bad options are refused before any system call', () => {
    assert.throws(
      () => TunDevice.open({ name: 'a-name-far-too-long' }),
      (err) => isFacadeError(err, 'TUN_OPEN'),
    );
    assert.throws(
      () => TunDevice.open({ name: 'bad/name' }),
      (err) => isFacadeError(err, 'TUN_OPEN'),
    );
    assert.throws(
      () => TunDevice.open({ name: uniqueName('fo'), headroom: 100_000 }),
      (err) => isFacadeError(err, 'TUN_OPEN') && /headroom is 100000/.test(err.message),
    );
    assert.throws(
      () => TunDevice.open({ name: uniqueName('fo'), batchBytes: 1000 }),
      (err) => isFacadeError(err, 'TUN_OPEN') && /batchBytes is 1000/.test(err.message),
    );
    const tun = TunDevice.open({ name: uniqueName('fc') });
    tun.close();
    assert.throws(
      () => tun.writePackets([Buffer.alloc(20)]),
      (err) => isFacadeError(err, 'TUN_CLOSED'),
    );
    assert.throws(
      () => tun.onBatch(() => {}),
      (err) => isFacadeError(err, 'TUN_CLOSED'),
    );
  });
});

test('a vnetHdr device round-trips pings with the 10-byte virtio header', { skip }, async (t) => {
  const { ns, tun, peer4, peer6 } = await tunInNetns(t, 6, { vnetHdr: true });
  assert.equal(tun.vnetHdr, true);
  const responder = startResponder(tun, (batch) => {
    for (let i = 0; i < batch.count; i++) {
      const off = batch.offsets[i]! + VNET_HDR_SIZE;
      assert.equal(checkPacket(batch.buffer, off, batch.lengths[i]! - VNET_HDR_SIZE), null);
    }
  });
  const v4 = await ns.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', peer4]);
  assert.equal(lossOf(v4.stdout), '0', v4.stdout + v4.stderr);
  const v6 = await ns.exec('ping', ['-6', '-c', '3', '-i', '0.2', '-W', '2', peer6]);
  assert.equal(lossOf(v6.stdout), '0', v6.stdout + v6.stderr);
  assert.equal(responder.replies, 6);
});

test('ifconfig sets addresses, MTU, link state and routes inside a namespace', { skip }, async (t) => {
  const ns = await withNetns(t, 'fif');
  const other = await withNetns(t, 'fif');
  const tun = TunDevice.open({ name: uniqueName('fi') });
  t.after(() => tun.close());
  const dev = tun.name;
  const netns = ns.name;
  await moveToNetns(dev, netns);
  await addAddress(dev, '198.18.7.1/24', { netns });
  await addAddress(dev, 'fd00:7::1/64', { netns });
  await setMtu(dev, 1400, { netns });
  await setLinkUp(dev, { netns });

  const [link] = JSON.parse(await ns.ip(['-j', 'addr', 'show', 'dev', dev]));
  assert.equal(link.mtu, 1400);
  assert.ok(link.flags.includes('UP'));
  const addrs = link.addr_info.map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`);
  assert.ok(addrs.includes('198.18.7.1/24'), addrs.join(' '));
  assert.ok(addrs.includes('fd00:7::1/64'), addrs.join(' '));

  await addRoute('198.18.77.0/24', { dev, metric: 50, netns });
  await addRoute('fd00:77::/64', { dev, netns });
  const routes = JSON.parse(await ns.ip(['-j', 'route', 'show', '198.18.77.0/24']));
  assert.equal(routes[0]?.dev, dev);
  assert.equal(routes[0]?.metric, 50);
  assert.deepEqual(await routeGet('198.18.77.9', { netns }), { dev, src: '198.18.7.1' });
  assert.equal((await routeGet('fd00:77::9', { netns })).dev, dev);

  await delRoute('198.18.77.0/24', { dev, netns });
  await delRoute('198.18.77.0/24', { dev, netns }); // already gone: tolerated
  await delRoute('fd00:77::/64', { netns });
  assert.deepEqual(JSON.parse(await ns.ip(['-j', 'route', 'show', '198.18.77.0/24'])), []);
  await assert.rejects(routeGet('198.18.77.9', { netns }), (err) => isFacadeError(err, 'IFCONFIG'));

  await setLinkDown(dev, { netns });
  const [down] = JSON.parse(await ns.ip(['-j', 'link', 'show', 'dev', dev]));
  assert.ok(!down.flags.includes('UP'));

  await assert.rejects(
    addAddress('nosuchdev0', '198.18.7.9/24', { netns }),
    (err) =>
      isFacadeError(err, 'IFCONFIG') &&
      /nosuchdev0/.test(err.message) &&
      /Cannot find device/.test(err.message),
  );
  await assert.rejects(addAddress(dev, '198.18.7.9', { netns }), (err) =>
    isFacadeError(err, 'ADDRESS_INVALID'),
  );

  await moveToNetns(dev, other.name, { netns });
  const moved = JSON.parse(await other.ip(['-j', 'link', 'show', 'dev', dev]));
  assert.equal(moved[0]?.ifname, dev);
});
