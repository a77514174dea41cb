// ACME end to end with the real binaries: `facade server --domain` gets its certificate from pebble over
// real HTTP-01, a `facade client` that trusts only pebble's root connects by name, and the certificate is
// renewed (SIGHUP) under a live tunnel, then not renewed (CA stopped), then reloaded from the state
// directory with no CA at all.
//
//   ns S: pebble + pebble-challtestsrv (DNS: every name is SERVER) + facade server (HTTPS, port 80, TUN)
//     └── veth ── ns C: facade client
//
// Traffic stays inside these namespaces (198.18.0.0/15 only).

import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { Pebble, pebbleSkipReason } from '../helpers/acme-pebble.js';
import { addUser, type FacadeProcess, field, startFacade } from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, uniqueName } from '../helpers/netns.js';

const skipReason = netnsSkipReason() ?? pebbleSkipReason();

// Per-run subnets, so a leftover of a crashed run never looks like this run's.
const net = 20 + (process.pid % 40) * 2;
const LINK = `198.19.${net}`;
const POOL = `198.18.${net}`;
const SERVER = `${LINK}.1`;
const SERVER_TUNNEL = `${POOL}.1`;
const HTTPS_PORT = 443;
const HTTP_PORT = 80;
const TUNNEL_PATH = '/acme-e2e/tunnel';
const PRELOAD = pathToFileURL(
  new URL('../helpers/acme-no-request-retries.js', import.meta.url).pathname,
).href;

/** `after` does not run when the run is interrupted; this removes /etc/netns/NS (ours) then. */
function removeOnInterrupt(path: string): void {
  const remove = () => rmSync(path, { recursive: true, force: true });
  process.once('exit', remove);
  process.once('SIGINT', remove);
  process.once('SIGTERM', remove);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A serial in one spelling (openssl prints it with leading zeros kept, Node without). */
function normalSerial(serial: string): string {
  return serial.toUpperCase().replace(/^0+/, '');
}

interface PingResult {
  transmitted: number;
  received: number;
  output: string;
}

function pingStats(output: string): PingResult {
  const m = /(\d+) packets transmitted, (\d+) received/.exec(output);
  assert.ok(m, `no ping summary:\n${output}`);
  return { transmitted: Number(m[1]), received: Number(m[2]), output };
}

describe('facade server with an ACME certificate from pebble, a client verifying the chain', {
  skip: skipReason ?? false,
}, () => {
  let dir: string;
  let ns: { s: Netns; c: Netns } | undefined;
  const etcDirs: string[] = [];
  let pebble: Pebble | undefined;
  let domain: string;
  let rootPath: string;
  let server: FacadeProcess | undefined;
  let client: FacadeProcess | undefined;
  const others: FacadeProcess[] = [];

  // Built on by the steps in order.
  let issuedSerial: string | undefined;
  let renewedSerial: string | undefined;
  let caDown = false;

  const serverEnv = (): NodeJS.ProcessEnv => ({
    ...process.env,
    // pebble's HTTPS listener, trusted the Node way (issue 6).
    NODE_EXTRA_CA_CERTS: (pebble as Pebble).listenerCertPath,
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${PRELOAD}`.trim(),
  });
  const startServer = (): FacadeProcess =>
    startFacade(
      (ns as { s: Netns }).s,
      [
        'server',
        '--domain',
        domain,
        '--email',
        'ops@example.test',
        '--acme-directory',
        (pebble as Pebble).directoryUrl,
        '--listen',
        `0.0.0.0:${HTTPS_PORT}`,
        '--http-listen',
        `0.0.0.0:${HTTP_PORT}`,
        '--pool',
        `${POOL}.0/24`,
        '--users',
        join(dir, 'users.json'),
        '--tunnel-path',
        TUNNEL_PATH,
        '--state-dir',
        join(dir, 'state'),
        '--keepalive',
        '1',
      ],
      { env: serverEnv() },
    );

  /** The serial a NEW TLS connection from ns C sees; openssl verifies chain and name against pebble's root. */
  const servedSerial = async (): Promise<string> => {
    const out = await (ns as { c: Netns }).c.exec('bash', [
      '-c',
      `set -o pipefail; openssl s_client -connect ${SERVER}:${HTTPS_PORT} -servername ${domain} -verify_hostname ${domain} -verify_return_error -CAfile ${rootPath} </dev/null | openssl x509 -noout -serial`,
    ]);
    const m = /serial=([0-9A-Fa-f]+)/.exec(out.stdout);
    assert.ok(out.code === 0 && m, `openssl could not verify the served chain:\n${out.stdout}${out.stderr}`);
    return normalSerial(m[1] as string);
  };

  const ping = async (count: number): Promise<PingResult> => {
    const out = await (ns as { c: Netns }).c.exec('ping', [
      '-c',
      String(count),
      '-i',
      '0.05',
      '-W',
      '2',
      SERVER_TUNNEL,
    ]);
    return pingStats(out.stdout);
  };

  /** 'certificate issued' serials the server logged, in order. */
  const issuedSerials = (): string[] =>
    (server as FacadeProcess).lines
      .filter((l) => field(l, 'msg') === 'certificate issued')
      .map((l) => normalSerial(String(field(l, 'serial'))));

  /** Distinct HTTP-01 tokens pebble's validation authority fetched from the server (it asks up to 3 times). */
  const validations = (): number =>
    new Set(
      (server as FacadeProcess).lines
        .filter(
          (l) =>
            field(l, 'msg') === 'answered ACME HTTP-01 challenge' &&
            /Pebble-VA/.test(String(field(l, 'userAgent'))),
        )
        .map((l) => field(l, 'token')),
    ).size;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-acme-tunnel-'));
    // The server runs as nobody after start-up (--run-as): it must reach its files through this one.
    await chmod(dir, 0o755);
    ns = { s: await Netns.create('as'), c: await Netns.create('ac') };
    await createVethPair(ns.s, ns.c, { addrA: `${SERVER}/24`, addrB: `${LINK}.2/24` });
    domain = `vpn-${uniqueName('t')}.test`;
    // The name resolves in both namespaces: in S for acme-client's own challenge check, in C for the
    // client. `ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts.
    for (const n of [ns.s, ns.c]) {
      const etc = join('/etc/netns', n.name);
      await mkdir(etc, { recursive: true });
      etcDirs.push(etc);
      removeOnInterrupt(etc);
      await writeFile(join(etc, 'hosts'), `127.0.0.1 localhost\n${SERVER} ${domain}\n`);
    }

    // pebble reuses a valid authorization for half the orders by default; then a renewal needs no
    // challenge. Never reusing makes every renewal here a real HTTP-01 under tunnel traffic. (Pebble
    // passes this process's environment on; each test file runs in its own process.)
    process.env.PEBBLE_AUTHZREUSE = '0';
    pebble = new Pebble(ns.s, { dir, serverAddress: SERVER, httpPort: HTTP_PORT });
    await pebble.prepare();
    await pebble.start();
    rootPath = join(dir, 'pebble-root.pem');
    await pebble.fetchRoot(rootPath);

    await writeFile(join(dir, 'alice.pw'), 'pw-of-alice\n');
    await addUser(ns.s, {
      users: join(dir, 'users.json'),
      tunnelPath: TUNNEL_PATH,
      name: 'alice',
      password: 'pw-of-alice',
    });
  });

  after(async () => {
    for (const p of [client, server, ...others]) await p?.stop('SIGKILL');
    await pebble?.close().catch(() => {});
    for (const n of Object.values(ns ?? {})) await n.destroy();
    for (const etc of etcDirs) await rm(etc, { recursive: true, force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the server gets its certificate over real HTTP-01; the client verifies the chain and connects', async (t) => {
    const began = Date.now();
    server = startServer();
    const ready = server.waitFor(/facade server ready/, 45_000);
    await ready.catch((err: Error) => {
      throw new Error(`${err.message}\n--- pebble:\n${(pebble as Pebble).output}`);
    });
    t.diagnostic(`server ready with a pebble certificate after ${Date.now() - began} ms`);

    // The order (and the port-80 listener answering its challenge) ran after the server dropped root.
    const lines = (server as FacadeProcess).lines;
    const dropped = lines.findIndex((l) => /dropped root: running as nobody/.test(l));
    const ordered = lines.findIndex((l) => field(l, 'msg') === 'ordering a certificate');
    assert.ok(
      dropped >= 0 && dropped < ordered,
      `root was not dropped before the ACME order:\n${lines.join('\n')}`,
    );

    // pebble's validation authority fetched the token from the server's port 80 (no ALWAYS_VALID).
    assert.equal(validations(), 1, `pebble did not fetch the HTTP-01 token:\n${server.lines.join('\n')}`);
    assert.equal(issuedSerials().length, 1);
    issuedSerial = issuedSerials()[0] as string;
    assert.equal(await servedSerial(), issuedSerial);

    client = startFacade((ns as { c: Netns }).c, [
      'client',
      `https://${domain}:${HTTPS_PORT}${TUNNEL_PATH}`,
      '--user',
      'alice',
      '--password-file',
      join(dir, 'alice.pw'),
      '--ca',
      rootPath,
      '--tun',
      uniqueName('fc'),
      '--keepalive',
      '1',
    ]);
    await client.waitFor(/connected:/);
    const first = await ping(10);
    assert.equal(first.received, first.transmitted, first.output);
  });

  test('SIGHUP renews under a live tunnel: no reconnect, pings keep flowing, new connections get the new certificate', async (t) => {
    assert.ok(issuedSerial && server && client, 'needs the issuance step');
    const s = server;
    const c = client;
    const pinger = (ns as { c: Netns }).c.spawn('ping', ['-i', '0.05', '-W', '1', SERVER_TUNNEL]);
    let out = '';
    pinger.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const pingerExited = new Promise<void>((resolve) => pinger.once('exit', () => resolve()));
    const replies = () => (out.match(/bytes from/g) ?? []).length;
    try {
      for (let i = 0; i < 100 && replies() < 10; i++) await sleep(50);
      assert.ok(replies() >= 10, `no ping replies before the renewal:\n${out}`);

      const asked = Date.now();
      s.child.kill('SIGHUP');
      await s.waitFor(/renewed certificate in service/, 45_000);
      t.diagnostic(`forced renewal took ${Date.now() - asked} ms`);
      // Traffic after the swap too, over the same session.
      const atSwap = replies();
      for (let i = 0; i < 100 && replies() < atSwap + 20; i++) await sleep(50);
    } finally {
      pinger.kill('SIGINT');
      await pingerExited;
    }
    const stats = pingStats(out);
    t.diagnostic(`during the renewal: ${stats.transmitted} pings sent, ${stats.received} answered`);
    assert.ok(stats.transmitted - stats.received <= 2, `pings lost during the renewal:\n${out}`);

    assert.equal(c.count(/connected:/), 1, 'the client did not reconnect');
    assert.equal(c.count(/tunnel closed/), 0, `the tunnel closed:\n${c.lines.join('\n')}`);

    assert.equal(validations(), 2, 'the renewal was validated over HTTP-01 again');
    const issued = issuedSerials();
    assert.equal(issued.length, 2);
    renewedSerial = issued[1] as string;
    assert.notEqual(renewedSerial, issuedSerial);
    assert.equal(await servedSerial(), renewedSerial);
  });

  test('CA stopped: the forced renewal fails with a warning, the renewed certificate keeps serving', async () => {
    assert.ok(renewedSerial && server && client, 'needs the renewal step');
    await (pebble as Pebble).stop();
    caDown = true;
    server.child.kill('SIGHUP');
    const failed = await server.waitFor(/forced renewal failed/, 30_000);
    assert.equal(field(failed, 'level'), 40, failed);
    assert.match(String(field(failed, 'err')), /ECONNREFUSED/);
    // The manager's own line says when it tries again.
    const why = server.lines.find((l) => /certificate renewal failed/.test(String(field(l, 'msg'))));
    assert.ok(why && !Number.isNaN(Date.parse(String(field(why, 'nextAttemptAt')))), why);

    assert.equal(await servedSerial(), renewedSerial);
    assert.equal(issuedSerials().length, 2);
    const stats = await ping(20);
    assert.equal(stats.received, stats.transmitted, stats.output);
    assert.equal(client.count(/connected:/), 1);
  });

  test('restart with the stored certificate and no CA: ready, same certificate, the client reconnects', async (t) => {
    assert.ok(caDown && renewedSerial && server && client, 'needs the CA-stopped step');
    const c = client;
    let timer: NodeJS.Timeout | undefined;
    const exit = await Promise.race([
      server.stop('SIGTERM'),
      new Promise((resolve) => {
        timer = setTimeout(() => resolve('no exit within 10 s'), 10_000);
      }),
    ]);
    clearTimeout(timer);
    assert.equal(exit, 0, `the server did not exit on SIGTERM:\n${server.lines.slice(-10).join('\n')}`);
    others.push(server);

    const began = Date.now();
    server = startServer();
    await server.waitFor(/facade server ready/);
    t.diagnostic(`restart without a CA ready after ${Date.now() - began} ms`);
    assert.ok(server.lines.some((l) => field(l, 'msg') === 'using the stored certificate'));
    assert.ok(!server.lines.some((l) => field(l, 'msg') === 'ordering a certificate'));
    assert.equal(await servedSerial(), renewedSerial);

    const deadline = Date.now() + 30_000;
    while (c.count(/connected:/) < 2 && Date.now() < deadline) await sleep(100);
    assert.equal(c.count(/connected:/), 2, `the client did not reconnect:\n${c.lines.slice(-10).join('\n')}`);
    // Once one echo has come back: in one CI run under load the first ~300 ms after this reconnect were
    // lost (5 of 10 pings at 50 ms), the rest flowed (noted in the issue for a closer look).
    for (let i = 0; i < 50 && (await ping(1)).received === 0; i++) await sleep(100);
    const stats = await ping(10);
    assert.equal(stats.received, stats.transmitted, stats.output);
  });
});
