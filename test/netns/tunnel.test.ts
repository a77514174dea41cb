// The tunnel end to end: a real server and real clients in their own namespaces, real TLS, real TUNs.
//
//   ns C1 (client A) ── veth ──┐
//                              ns S (facade server, TUN facade0 = first pool address)
//   ns C2 (client B) ── veth ──┘
//
// Traffic stays inside these namespaces (198.18.0.0/15 only).

import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  addUser,
  CLI,
  clientArgs,
  type FacadeProcess,
  field,
  startFacade,
  waitForStatus,
} from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, uniqueName } from '../helpers/netns.js';

const skip = netnsSkipReason();
const RAW_REQUEST = fileURLToPath(new URL('../helpers/raw-request-cli.js', import.meta.url));

// Per-run subnets inside 198.18.0.0/15, so parallel files never share addresses even by mistake.
const net = 100 + (process.pid % 50) * 2;
const LINK_A = `198.19.${net}`;
const LINK_B = `198.19.${net + 1}`;
const POOL = `198.18.${net}`;
/** IPv6 pool prefix (fd00::/8), written so that `${POOL6}:/64` is the pool and `${POOL6}:1` its server. */
const POOL6 = `fd00:${net.toString(16)}:`;
const SERVER = `${LINK_A}.1`;
const PORT = 8443;
const PATH = '/k3y/tunnel';

describe('tunnel between a facade server and two clients', { skip: skip ?? false }, () => {
  let dir: string;
  let ns: { s: Netns; a: Netns; b: Netns };
  let server: FacadeProcess;
  let clientA: FacadeProcess;
  let clientB: FacadeProcess;
  let fingerprint: string;
  let addrA: string;
  let addrB: string;
  const extra: FacadeProcess[] = [];
  const extraNs: Netns[] = [];

  const serverArgs = (more: string[] = []): string[] => [
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
    '--keepalive',
    '1',
    ...more,
  ];
  const argsOf = (user: string, tun: string, more: string[] = []): string[] =>
    clientArgs({
      url: `https://${SERVER}:${PORT}${PATH}`,
      user,
      passwordFile: join(dir, `${user}.pw`),
      pin: fingerprint,
      tun,
      more,
    });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-tunnel-'));
    // The server runs as nobody after start-up (--run-as): it must reach its files through this one.
    await chmod(dir, 0o755);
    ns = { s: await Netns.create('ts'), a: await Netns.create('ta'), b: await Netns.create('tb') };
    await createVethPair(ns.s, ns.a, { addrA: `${LINK_A}.1/24`, addrB: `${LINK_A}.2/24` });
    await createVethPair(ns.s, ns.b, { addrA: `${LINK_B}.1/24`, addrB: `${LINK_B}.2/24` });
    await ns.b.ip(['route', 'add', `${LINK_A}.0/24`, 'via', `${LINK_B}.1`]);
    await ns.s.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    for (const user of ['alice', 'bob', 'carol']) await writeFile(join(dir, `${user}.pw`), `pw-of-${user}\n`);
    for (const user of ['alice', 'bob', 'carol']) {
      await addUser(ns.s, {
        users: join(dir, 'users.json'),
        tunnelPath: PATH,
        name: user,
        password: `pw-of-${user}`,
      });
    }
    server = startFacade(ns.s, serverArgs());
    const selfSigned = await server.waitFor(/self-signed certificate/);
    fingerprint = String(field(selfSigned, 'fingerprint'));
    await server.waitFor(/facade server ready/);
    clientA = startFacade(ns.a, argsOf('alice', uniqueName('fa')));
    clientB = startFacade(ns.b, argsOf('bob', uniqueName('fb')));
    addrA = String(field(await clientA.waitFor(/connected:/), 'ipv4')).split('/')[0] as string;
    addrB = String(field(await clientB.waitFor(/connected:/), 'ipv4')).split('/')[0] as string;
  });

  after(async () => {
    for (const p of [clientA, clientB, server, ...extra]) await p?.stop('SIGKILL');
    for (const n of [...Object.values(ns ?? {}), ...extraNs]) await n.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('clients get distinct addresses from the pool; the server holds the first', () => {
    assert.match(addrA, new RegExp(`^${POOL.replace(/\./g, '\\.')}\\.\\d+$`));
    assert.match(addrB, new RegExp(`^${POOL.replace(/\./g, '\\.')}\\.\\d+$`));
    assert.notEqual(addrA, addrB);
    assert.notEqual(addrA, `${POOL}.1`);
  });

  test('facade status lists the sessions of the running server', async () => {
    await waitForStatus(join(dir, 'state'), (st) => st.sessions.length === 2);
    const out = await ns.s.exec(process.execPath, [CLI, 'status', '--state-dir', join(dir, 'state')]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^server pid \d+, listening on /m);
    assert.match(out.stdout, /2 session\(s\)/);
    assert.match(out.stdout, new RegExp(`alice\\s+${addrA.replace(/\./g, '\\.')}`));
    assert.match(out.stdout, new RegExp(`bob\\s+${addrB.replace(/\./g, '\\.')}`));
  });

  test('ping both ways through the tunnel', async () => {
    const out = await ns.a.exec('ping', ['-c', '5', '-i', '0.2', '-W', '2', `${POOL}.1`]);
    assert.match(out.stdout, / 0% packet loss/, out.stdout);
    const back = await ns.s.exec('ping', ['-c', '5', '-i', '0.2', '-W', '2', addrA]);
    assert.match(back.stdout, / 0% packet loss/, back.stdout);
  });

  test('IPv6 through the tunnel: addresses from --pool6, ping both ways', async () => {
    const line = clientA.lines.find((l) => /connected:/.test(l)) ?? '';
    const addr6 = String(field(line, 'ipv6')).split('/')[0] as string;
    assert.ok(addr6.startsWith(POOL6), `client A got ${addr6} from ${POOL6}:/64`);
    const out = await ns.a.exec('ping', ['-6', '-c', '3', '-i', '0.2', '-W', '2', `${POOL6}:1`]);
    assert.match(out.stdout, / 0% packet loss/, out.stdout);
    const back = await ns.s.exec('ping', ['-6', '-c', '3', '-i', '0.2', '-W', '2', addr6]);
    assert.match(back.stdout, / 0% packet loss/, back.stdout);
  });

  test('a 256 MB TCP transfer arrives intact (sha256 matches), no frame corrupted on the way (h2 by default)', async () => {
    const from = server.lines.length;
    const sink = ns.s.spawn(process.execPath, [
      '-e',
      `const h=require('crypto').createHash('sha256');let n=0;require('net').createServer(s=>{s.on('data',d=>{h.update(d);n+=d.length});s.on('end',()=>{console.log(JSON.stringify({n,sha:h.digest('hex')}));process.exit(0)})}).listen(9000,'${POOL}.1',()=>console.log('listening'))`,
    ]);
    const sinkExited = new Promise((resolve) => sink.once('exit', resolve));
    let sinkOut = '';
    sink.stdout?.on('data', (d: Buffer) => (sinkOut += d.toString()));
    for (let i = 0; i < 200 && !sinkOut.includes('listening'); i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.match(sinkOut, /listening/, 'the TCP sink is listening on the server tunnel address');
    const source = await ns.a.exec(
      process.execPath,
      [
        '-e',
        `const c=require('crypto');const h=c.createHash('sha256');let left=256;const s=require('net').connect(9000,'${POOL}.1',()=>{const go=()=>{while(left>0){const b=c.randomBytes(1<<20);h.update(b);left--;if(!s.write(b)){s.once('drain',go);return}}s.end(()=>console.log(JSON.stringify({sha:h.digest('hex')})))};go()})`,
      ],
      { timeoutMs: 120_000 },
    );
    await sinkExited;
    const sent = JSON.parse(source.stdout.trim()) as { sha: string };
    const received = JSON.parse(sinkOut.split('\n').find((l) => l.startsWith('{')) ?? '{}') as {
      n: number;
      sha: string;
    };
    assert.equal(received.n, 256 * 1024 * 1024);
    assert.equal(received.sha, sent.sha);
    // A frame corrupted on the way ends the session (the client reconnects and TCP inside may well survive
    // it): the log is where it shows. An h2 stream reads a written buffer after its callback (session.ts).
    const broken = server.lines.slice(from).filter((l) => /protocol error/.test(l));
    assert.deepEqual(broken, []);
  });

  test('wrong password and missing credentials are answered exactly like an unknown path', async () => {
    const raw = async (request: string): Promise<{ response: string; closed: boolean }> => {
      const out = await ns.a.exec(process.execPath, [
        RAW_REQUEST,
        SERVER,
        String(PORT),
        Buffer.from(request).toString('base64'),
      ]);
      const parsed = JSON.parse(out.stdout.trim()) as { response: string; closed: boolean };
      return {
        response: Buffer.from(parsed.response, 'base64')
          .toString('latin1')
          .replace(/^Date: .*$/m, 'Date: X'),
        closed: parsed.closed,
      };
    };
    const head = (path: string, extraHeaders: string): string =>
      `GET ${path} HTTP/1.1\r\nHost: ${SERVER}\r\nConnection: Upgrade\r\nUpgrade: facade\r\n${extraHeaders}\r\n`;
    const wrongKey = Buffer.from(`alice:${Buffer.alloc(32, 7).toString('base64url')}`).toString('base64');
    const unknownPath = await raw(head('/k3y/tunnelx', ''));
    const noCredentials = await raw(head(PATH, ''));
    const wrongPassword = await raw(head(PATH, `Authorization: Basic ${wrongKey}\r\n`));
    const unknownUser = await raw(
      head(
        PATH,
        `Authorization: Basic ${Buffer.from(`mallory:${Buffer.alloc(32).toString('base64url')}`).toString('base64')}\r\n`,
      ),
    );
    assert.match(unknownPath.response, /^HTTP\/1\.1 404 /);
    assert.equal(noCredentials.response, unknownPath.response);
    assert.equal(wrongPassword.response, unknownPath.response);
    assert.equal(unknownUser.response, unknownPath.response);
    assert.equal(noCredentials.closed, unknownPath.closed);
    assert.equal(wrongPassword.closed, unknownPath.closed);
    // Refusals are logged in aggregate, once a second, naming the users that were tried.
    await server.waitFor(/tunnel requests refused/, 5_000);
    const refusedLines = server.lines.filter((l) => /tunnel requests refused/.test(l));
    const refused = refusedLines.reduce((sum, l) => sum + Number(field(l, 'refused')), 0);
    assert.ok(refused >= 3, `auth failures are logged (${refused})`);
    assert.ok(refusedLines.some((l) => (field(l, 'users') as string[]).includes('mallory')));
  });

  test('a stalled client never stalls the others: its packets are dropped, theirs flow', async () => {
    const connectedBefore = clientB.count(/connected:/);
    // Freeze bob's client: its socket stops reading, so the server's queue for it fills.
    clientB.child.kill('SIGSTOP');
    try {
      // 20,000 UDP datagrams of 1400 bytes (28 MB) from the server's namespace to bob's tunnel address,
      // paced at ~220 Mbit/s: well under what the engine drains, so the shared TUN queue does not overflow
      // (that would be the kernel dropping everyone's packets, not one session stalling the others).
      const blast = ns.s.exec(process.execPath, [
        '-e',
        `const s=require('dgram').createSocket('udp4');const b=Buffer.alloc(1400);let n=0;` +
          `const go=()=>{for(let i=0;i<100&&n<20000;i++,n++)s.send(b,9,'${addrB}');if(n<20000)setTimeout(go,5);else setTimeout(()=>s.close(),200)};go()`,
      ]);
      // Meanwhile alice is not held up behind bob: her pings come back, none of them late.
      const out = await ns.a.exec('ping', ['-c', '20', '-i', '0.05', '-W', '2', `${POOL}.1`]);
      const received = Number(/(\d+) received/.exec(out.stdout)?.[1] ?? 0);
      const maxRtt = Number(/= [\d.]+\/[\d.]+\/([\d.]+)\//.exec(out.stdout)?.[1] ?? Number.POSITIVE_INFINITY);
      assert.ok(received >= 18, `alice got ${received} of 20 replies:\n${out.stdout}`);
      assert.ok(maxRtt < 1000, `alice's slowest reply took ${maxRtt} ms:\n${out.stdout}`);
      await blast;
      // bob's queue overflowed: see it in the status file, or in the line logged when his session ended
      // (the server may declare the frozen peer dead after three keepalive intervals).
      const deadline = Date.now() + 10_000;
      let dropped = 0;
      while (dropped === 0 && Date.now() < deadline) {
        const fromLog = server.lines
          .filter((l) => /client disconnected/.test(l) && field(l, 'user') === 'bob')
          .map((l) => Number(field(l, 'queueDrops')));
        const status = await waitForStatus(join(dir, 'state'), () => true).catch(() => undefined);
        const fromStatus = status?.sessions.filter((x) => x.user === 'bob').map((x) => x.queueDrops) ?? [];
        dropped = Math.max(0, ...fromLog, ...fromStatus);
        if (dropped === 0) await new Promise((r) => setTimeout(r, 250));
      }
      assert.ok(dropped > 0, 'packets for the stalled client were dropped, not buffered without bound');
    } finally {
      clientB.child.kill('SIGCONT');
    }
    // bob recovers by himself (same session, or a reconnect with the same address).
    const deadline = Date.now() + 20_000;
    let ok = false;
    while (!ok && Date.now() < deadline) {
      const back = await ns.b.exec('ping', ['-c', '1', '-W', '1', `${POOL}.1`]);
      ok = back.code === 0;
    }
    assert.ok(ok, 'bob reaches the server again');
    const lines = clientB.lines.filter((l) => /connected:/.test(l));
    if (lines.length > connectedBefore)
      assert.equal(String(field(lines.at(-1) as string, 'ipv4')).split('/')[0], addrB);
  });

  test('a malformed frame ends that one session with a logged reason; the server and others carry on', async () => {
    // The credential is signed for the connection by the helper (it replaces the marker).
    const request =
      `GET ${PATH} HTTP/1.1\r\nHost: ${SERVER}\r\nConnection: Upgrade\r\nUpgrade: facade\r\n` +
      `Facade-Capabilities: offload\r\nAuthorization: @@AUTHORIZATION@@\r\n\r\n`;
    // Right after the head: a frame claiming protocol version 9.
    const bytes = Buffer.concat([Buffer.from(request), Buffer.from([9, 1, 0, 4, 1, 2, 3, 4])]);
    const out = await ns.a.exec(process.execPath, [
      RAW_REQUEST,
      SERVER,
      String(PORT),
      bytes.toString('base64'),
      'carol',
      'pw-of-carol',
      PATH,
    ]);
    const answer = Buffer.from((JSON.parse(out.stdout.trim()) as { response: string }).response, 'base64');
    assert.match(answer.toString('latin1'), /^HTTP\/1\.1 101 /);
    // After the 101 head: CONFIG, then DISCONNECT with PROTOCOL_ERROR (1) naming the version.
    assert.match(answer.toString('latin1'), /version 9/);
    await server.waitFor(/protocol error/);
    const ping = await ns.a.exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', `${POOL}.1`]);
    assert.match(ping.stdout, / 0% packet loss/, ping.stdout);
  });

  test('a packet with a spoofed source address is dropped and counted', async () => {
    const tunA = String(field(clientA.lines.find((l) => /connected:/.test(l)) ?? '', 'dev'));
    const spoofed = `${POOL}.250`;
    await ns.a.ip(['addr', 'add', `${spoofed}/32`, 'dev', tunA]);
    const out = await ns.a.exec('ping', ['-c', '3', '-i', '0.2', '-W', '1', '-I', spoofed, `${POOL}.1`]);
    assert.match(out.stdout, / 100% packet loss/, out.stdout);
    const status = await waitForStatus(join(dir, 'state'), (s) =>
      s.sessions.some((x) => x.user === 'alice' && x.spoofDrops >= 3),
    );
    assert.ok(status.sessions.length >= 2);
    const honest = await ns.a.exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', `${POOL}.1`]);
    assert.match(honest.stdout, / 0% packet loss/);
  });

  test('client-to-client traffic is blocked by default', async () => {
    const out = await ns.a.exec('ping', ['-c', '3', '-i', '0.2', '-W', '1', addrB]);
    assert.match(out.stdout, / 100% packet loss/, out.stdout);
    await waitForStatus(join(dir, 'state'), (s) => s.engine.clientToClientDrops >= 3);
  });

  test('a client without the offload capability is told why this server refuses it', async () => {
    const plain = startFacade(ns.b, argsOf('carol', uniqueName('fp'), ['--no-offload']));
    extra.push(plain);
    const line = await plain.waitFor(/tunnel closed/);
    assert.match(String(field(line, 'message')), /requires the offload capability/);
    await plain.stop();
  });

  test('--full-tunnel routes everything through the tunnel but the server, and removes it all on exit', async () => {
    const c = await Netns.create('tc');
    extraNs.push(c);
    await createVethPair(ns.s, c, { addrA: '198.18.250.1/24', addrB: '198.18.250.2/24' });
    const tun = uniqueName('ff');
    const full = startFacade(c, [
      ...argsOf('carol', tun, ['--full-tunnel']).map((a) => a.replace(`${SERVER}:`, '198.18.250.1:')),
    ]);
    extra.push(full);
    const connected = await full.waitFor(/connected:/);
    assert.deepEqual(
      [...(field(connected, 'routes') as string[])].sort(),
      // The pool prefix is the interface's own kernel route: not added by the client, so not removed by it.
      ['0.0.0.0/1', '128.0.0.0/1', '198.18.250.1/32', '::/1', '8000::/1'].sort(),
    );
    const routes = await c.ip(['-j', 'route', 'show']);
    const table = JSON.parse(routes) as Array<{ dst: string; dev: string }>;
    assert.ok(
      table.some((r) => r.dst === '0.0.0.0/1' && r.dev === tun),
      routes,
    );
    assert.ok(
      table.some((r) => r.dst === '128.0.0.0/1' && r.dev === tun),
      routes,
    );
    assert.ok(
      table.some((r) => r.dst === '198.18.250.1' && r.dev !== tun),
      'the server stays outside the tunnel',
    );
    const anywhere = JSON.parse(await c.ip(['-j', 'route', 'get', '198.18.251.9'])) as Array<{ dev: string }>;
    assert.equal(anywhere[0]?.dev, tun, 'an arbitrary address goes through the tunnel');
    const ping = await c.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', `${POOL}.1`]);
    assert.match(ping.stdout, / 0% packet loss/, ping.stdout);
    assert.equal(await full.stop('SIGTERM'), 0);
    const after = JSON.parse(await c.ip(['-j', 'route', 'show'])) as Array<{ dst: string }>;
    assert.deepEqual(
      after.map((r) => r.dst),
      ['198.18.250.0/24'],
      'only the veth route is left: the /1 halves, the host route and the TUN are gone',
    );
  });

  test('server killed and restarted: clients reconnect by themselves, keep their addresses; client-to-client when enabled', async () => {
    const before = { a: clientA.count(/connected:/), b: clientB.count(/connected:/) };
    await server.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 500));
    server = startFacade(ns.s, serverArgs(['--client-to-client']));
    await server.waitFor(/facade server ready/);
    const again = async (client: FacadeProcess, earlier: number): Promise<string> => {
      const deadline = Date.now() + 30_000;
      while (client.count(/connected:/) === earlier && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 200));
      const lines = client.lines.filter((l) => /connected:/.test(l));
      assert.equal(lines.length, earlier + 1, 'the client reconnected');
      return String(field(lines.at(-1) as string, 'ipv4')).split('/')[0] as string;
    };
    assert.equal(await again(clientA, before.a), addrA);
    assert.equal(await again(clientB, before.b), addrB);
    const out = await ns.a.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', addrB]);
    assert.match(out.stdout, / 0% packet loss/, out.stdout);
  });

  test('a full pool gives the next client a clear reason', async () => {
    // A second server with a /30 pool: one address for clients. alice takes it, carol is told why not.
    const small = `198.18.${net + 1}`;
    const tunName = uniqueName('fs');
    const port = PORT + 1;
    const full = startFacade(ns.s, [
      ...serverArgs().slice(0, 1),
      '--listen',
      `0.0.0.0:${port}`,
      '--http-listen',
      '127.0.0.1:8081',
      '--pool',
      `${small}.0/30`,
      '--users',
      join(dir, 'users.json'),
      '--tunnel-path',
      PATH,
      '--state-dir',
      join(dir, 'state-small'),
      '--tun',
      tunName,
      // This server also covers the plain path: no IFF_VNET_HDR, DATA frames only.
      '--no-offload',
    ]);
    extra.push(full);
    const smallFingerprint = String(field(await full.waitFor(/self-signed certificate/), 'fingerprint'));
    await full.waitFor(/facade server ready/);
    const args = (user: string, tun: string): string[] => [
      'client',
      `https://${SERVER}:${port}${PATH}`,
      '--user',
      user,
      '--password-file',
      join(dir, `${user}.pw`),
      '--pin',
      smallFingerprint,
      '--tun',
      tun,
    ];
    const first = startFacade(ns.a, args('alice', uniqueName('fx')));
    extra.push(first);
    await first.waitFor(/connected:/);
    const ping = await ns.a.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', `${small}.1`]);
    assert.match(ping.stdout, / 0% packet loss/, ping.stdout);
    const second = startFacade(ns.b, args('carol', uniqueName('fy')));
    extra.push(second);
    const line = await second.waitFor(/server has no free address/);
    assert.match(line, /exhausted/);
    await full.waitFor(/pool exhausted/);
    // The same user from elsewhere takes over; the replaced client stops instead of fighting back.
    const again = startFacade(ns.b, args('alice', uniqueName('fz')));
    extra.push(again);
    await again.waitFor(/connected:/);
    const exitCode = await new Promise<number | null>((resolve) => {
      if (first.child.exitCode !== null) resolve(first.child.exitCode);
      else first.child.once('exit', resolve);
    });
    assert.equal(exitCode, 1);
    assert.ok(
      first.lines.some((l) => field(l, 'msg') === 'another client connected as "alice"; this one stops'),
    );
  });
});
