// `facade server --behind-proxy` end to end behind Debian's nginx, with the very config the docs ship
// (docs/nginx-facade.conf, its placeholders filled in): nginx terminates TLS (h2 and HTTP/1.1), serves the
// website and forwards only the secret path to facade's plain-HTTP listener on loopback; facade runs with
// two workers. Three clients, each in its own namespace:
//
//   ns A (--transport websocket), B (upgrade), C (auto) ── veth ── ns S (nginx :8443 ─► facade 127.0.0.1:8080)
//
// What must hold: every transport crosses nginx and passes traffic (auto falls back from nginx's h2, which
// has no extended CONNECT, to the upgrade); status shows each session's transport and the client's address
// from X-Forwarded-For; everything on the secret path that is not a valid tunnel request gets nginx's own
// 404, byte for byte what an unknown path gets. Traffic stays inside these namespaces (198.18.0.0/15).

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { derFingerprint } from '../../src/protocol/pin.js';
import {
  addUser,
  clientArgs,
  type FacadeProcess,
  field,
  startFacade,
  waitForStatus,
} from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, run, uniqueName } from '../helpers/netns.js';

const nginxMissing =
  (await run('nginx', ['-v'])).code === 0 ? null : 'nginx is not installed (apt-get install nginx)';
const skip = netnsSkipReason() ?? nginxMissing;

const net = 60 + (process.pid % 40) * 2;
const POOL = `198.18.${net}`;
const SERVER = `198.19.${net}.1`;
const PORT = 8443;
const BACKEND = '127.0.0.1:8181';
const PATH = '/b3h1nd/tunnel';
const CLIENTS = [
  ['ann', 'websocket', 'websocket'],
  ['ben', 'upgrade', 'upgrade'],
  ['cat', 'auto', 'upgrade'],
] as const;
type User = (typeof CLIENTS)[number][0];

const SHIPPED_CONFIG = fileURLToPath(new URL('../../../docs/nginx-facade.conf', import.meta.url));

/** The shipped config with this test's certificate, site, port, path and backend. */
async function nginxConfig(dir: string): Promise<string> {
  const shipped = await readFile(SHIPPED_CONFIG, 'utf8');
  const server = shipped
    .replaceAll('/k3y9a/tunnel', PATH)
    .replaceAll('127.0.0.1:8080', BACKEND)
    .replace('listen 443 ssl http2;', `listen ${SERVER}:${PORT} ssl http2;`)
    .replace('listen [::]:443 ssl http2;\n', '')
    .replace('/etc/ssl/vpn.example.com/fullchain.pem', join(dir, 'cert.pem'))
    .replace('/etc/ssl/vpn.example.com/privkey.pem', join(dir, 'key.pem'))
    .replace('root /var/www/html;', `root ${join(dir, 'www')};`);
  assert.ok(
    server.includes(PATH) && server.includes(BACKEND),
    'the placeholders are still in the shipped file',
  );
  return (
    `daemon off;\nmaster_process off;\nuser root;\npid ${join(dir, 'nginx.pid')};\n` +
    `error_log ${join(dir, 'nginx-error.log')} info;\nevents { worker_connections 256; }\n` +
    `http {\naccess_log ${join(dir, 'nginx-access.log')};\n` +
    `client_body_temp_path ${dir}/body;\nproxy_temp_path ${dir}/proxy;\nfastcgi_temp_path ${dir}/fcgi;\n` +
    `uwsgi_temp_path ${dir}/uwsgi;\nscgi_temp_path ${dir}/scgi;\n${server}\n}\n`
  );
}

describe('--behind-proxy behind nginx: websocket, upgrade and auto through it, probes get nginx 404', {
  skip: skip ?? false,
}, () => {
  let dir: string;
  let state: string;
  let server: FacadeProcess;
  let fingerprint: string;
  const ns = new Map<User, Netns>();
  let nsS: Netns;
  const clients = new Map<User, FacadeProcess>();
  const address = new Map<User, string>();

  /** curl from client namespace A to nginx: status line and body, with extra arguments. */
  const curl = async (args: readonly string[]): Promise<string> => {
    const result = await (ns.get('ann') as Netns).exec('curl', [
      '-sk',
      '--http1.1',
      '-i',
      '--max-time',
      '5',
      ...args,
    ]);
    // Date differs from one answer to the next; everything else must not.
    return result.stdout.replace(/^Date: .*\r\n/im, '');
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-proxy-'));
    await chmod(dir, 0o755);
    state = join(dir, 'state');
    await mkdir(join(dir, 'www'));
    await writeFile(join(dir, 'www', 'index.html'), '<!doctype html><title>a site</title><p>hello</p>\n');
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '30',
      '-subj',
      '/CN=vpn.test',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ]);
    fingerprint = derFingerprint(new X509Certificate(await readFile(join(dir, 'cert.pem'))).raw);
    await writeFile(join(dir, 'nginx.conf'), await nginxConfig(dir));

    nsS = await Netns.create('ps');
    for (const [i, [user]] of CLIENTS.entries()) {
      const n = await Netns.create(`p${user}`);
      ns.set(user, n);
      const base = 4 * (i + 1);
      await createVethPair(nsS, n, {
        addrA: `198.19.${net}.${base + 1}/30`,
        addrB: `198.19.${net}.${base + 2}/30`,
      });
      await n.ip(['route', 'add', `${SERVER}/32`, 'via', `198.19.${net}.${base + 1}`]);
      await writeFile(join(dir, `${user}.pw`), `pw-${user}\n`);
      await addUser(nsS, {
        users: join(dir, 'users.json'),
        tunnelPath: PATH,
        name: user,
        password: `pw-${user}`,
      });
    }
    await nsS.ip(['addr', 'add', `${SERVER}/32`, 'dev', 'lo']);
    server = startFacade(nsS, [
      'server',
      '--workers',
      '2',
      '--behind-proxy',
      BACKEND,
      '--pool',
      `${POOL}.0/24`,
      '--users',
      join(dir, 'users.json'),
      '--tunnel-path',
      PATH,
      '--state-dir',
      state,
      '--keepalive',
      '1',
    ]);
    await server.waitFor(/facade server ready/);
    const nginx = nsS.spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-e', join(dir, 'nginx-error.log')]);
    nginx.stderr?.on('data', (chunk: Buffer) => process.stderr.write(`[nginx] ${chunk}`));
    // Up when it answers the site.
    for (let i = 0; ; i++) {
      const home = await curl([`https://${SERVER}:${PORT}/`]);
      if (/^HTTP\/1\.1 200/.test(home)) break;
      if (i > 50) throw new Error(`nginx did not come up: ${home}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (const [user, transport] of CLIENTS) {
      const client = startFacade(
        ns.get(user) as Netns,
        clientArgs({
          url: `https://${SERVER}:${PORT}${PATH}`,
          user,
          passwordFile: join(dir, `${user}.pw`),
          pin: fingerprint,
          tun: uniqueName('fp'),
          more: ['--transport', transport],
        }),
      );
      clients.set(user, client);
      const line = await client.waitFor(/connected:/);
      address.set(user, String(field(line, 'ipv4')).split('/')[0] as string);
    }
  });

  after(async () => {
    for (const client of clients.values()) await client.stop('SIGKILL');
    await server?.stop('SIGKILL');
    for (const n of [...ns.values(), nsS]) await n?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('each transport crosses nginx and passes traffic; the client says which it uses', async () => {
    for (const [user, , uses] of CLIENTS) {
      const said = await (clients.get(user) as FacadeProcess).waitFor(/connected:/);
      assert.equal(field(said, 'transport'), uses, user);
      const { stdout } = await (ns.get(user) as Netns).exec('ping', [
        '-c',
        '3',
        '-i',
        '0.2',
        '-W',
        '2',
        `${POOL}.1`,
      ]);
      assert.match(stdout, / 0% packet loss/, user);
    }
    // And bulk data through nginx and the WebSocket: a second of iperf3 from the server to ann's client.
    const ann = address.get('ann') as string;
    const iperf = (ns.get('ann') as Netns).spawn('iperf3', ['-s', '-1', '-B', ann]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const result = await nsS.exec('iperf3', ['-c', ann, '-t', '1', '-J'], { timeoutMs: 15_000 });
    iperf.kill();
    const received = (
      JSON.parse(result.stdout) as { end: { sum_received: { bytes: number; bits_per_second: number } } }
    ).end.sum_received;
    process.stderr.write(
      `# iperf3 through nginx over the WebSocket: ${(received.bits_per_second / 1e6).toFixed(0)} Mbit/s\n`,
    );
    assert.ok(received.bytes > 1_000_000, `iperf3 moved ${received.bytes} bytes`);
  });

  test('status shows each session with its transport and the address nginx saw', async () => {
    const status = await waitForStatus(state, (s) => s.sessions.length === CLIENTS.length);
    for (const [user, , uses] of CLIENTS) {
      const session = status.sessions.find((s) => s.user === user);
      assert.equal(session?.transport, uses, user);
      assert.match(session?.remote ?? '', /^198\.19\.\d+\.\d+ \(via 127\.0\.0\.1:\d+\)$/, user);
    }
    assert.equal(status.workers?.length, 2);
  });

  test('every refusal on the secret path gets what an unknown path gets from nginx', async () => {
    const origin = `https://${SERVER}:${PORT}`;
    const unknown = await curl([`${origin}/no-such-page`]);
    assert.match(unknown, /^HTTP\/1\.1 404 /);
    assert.match(unknown, /nginx/, 'nginx answered it, not facade');
    const ws = ['-H', 'Connection: Upgrade', '-H', 'Upgrade: websocket', '-H', 'Sec-WebSocket-Version: 13'];
    const key = ['-H', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='];
    const probes: Array<readonly string[]> = [
      [],
      ['-X', 'POST', '-d', 'x=1'],
      ['-I'],
      ['-H', 'Authorization: Basic YWxpY2U6d3Jvbmc='],
      ['-H', 'Connection: Upgrade', '-H', 'Upgrade: facade'],
      ['-H', 'Connection: Upgrade', '-H', 'Upgrade: facade', '-H', 'Authorization: Basic YW5uOnh4eA=='],
      [...ws, ...key],
      [...ws, ...key, '-H', 'Authorization: Basic YW5uOnh4eA=='],
      [...ws, '-H', 'Sec-WebSocket-Key: short'],
    ];
    for (const probe of probes) {
      const onPath = await curl([...probe, `${origin}${PATH}`]);
      const elsewhere = await curl([...probe, `${origin}/no-such-page`]);
      assert.equal(onPath, elsewhere, `probe ${probe.join(' ')}`);
    }
  });
});
