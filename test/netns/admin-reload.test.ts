// The live status and the reload of a running server (`--workers 2`, its default on this machine):
//
//   ns C (client) ── veth ── ns S (facade server --config FILE)
//
// `facade status` asks the server over its admin socket (sessions with user, address, since, bytes, last
// seen; --json too) and says plainly when no server runs, showing the last snapshot as such; SIGHUP
// re-reads the config file, applies what can change without dropping the session, names what needs a
// restart, and a new session gets the new pushed routes. Traffic stays inside 198.18.0.0/15.

import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { addUser, CLI, clientArgs, type FacadeProcess, field, startFacade } from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, run, uniqueName } from '../helpers/netns.js';

const skip = netnsSkipReason();
const net = 140 + (process.pid % 30) * 2;
const POOL = `198.18.${net}`;
const LINK = `198.19.${net}`;
const PORT = 8443;
const PATH = '/adm1n/t';

describe('admin socket and SIGHUP reload', { skip: skip ?? false }, () => {
  let dir: string;
  let state: string;
  let configFile: string;
  let nsS: Netns;
  let nsC: Netns;
  let server: FacadeProcess;
  let client: FacadeProcess;
  let fingerprint: string;
  const settings = (more: Record<string, unknown> = {}) => ({
    listen: `0.0.0.0:${PORT}`,
    httpListen: '127.0.0.1:8080',
    pool: `${POOL}.0/24`,
    users: join(dir, 'users.json'),
    tunnelPath: PATH,
    stateDir: state,
    keepalive: 1,
    ...more,
  });
  const status = (...args: string[]) => run(process.execPath, [CLI, 'status', '--state-dir', state, ...args]);
  const startClient = () =>
    startFacade(
      nsC,
      clientArgs({
        url: `https://${LINK}.1:${PORT}${PATH}`,
        user: 'ann',
        passwordFile: join(dir, 'ann.pw'),
        pin: fingerprint,
        tun: uniqueName('fa'),
      }),
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-admin-'));
    await chmod(dir, 0o755);
    state = join(dir, 'state');
    configFile = join(dir, 'facade.json');
    nsS = await Netns.create('as');
    nsC = await Netns.create('ac');
    await createVethPair(nsS, nsC, { addrA: `${LINK}.1/24`, addrB: `${LINK}.2/24` });
    await writeFile(join(dir, 'ann.pw'), 'pw-ann\n');
    await addUser(nsS, { users: join(dir, 'users.json'), tunnelPath: PATH, name: 'ann', password: 'pw-ann' });
    await writeFile(configFile, JSON.stringify(settings({ routes: ['198.19.210.0/24'] })));
    server = startFacade(nsS, ['server', '--config', configFile]);
    fingerprint = String(field(await server.waitFor(/self-signed certificate/), 'fingerprint'));
    await server.waitFor(/facade server ready/);
    client = startClient();
    await client.waitFor(/connected:/);
  });

  after(async () => {
    await client?.stop('SIGKILL');
    await server?.stop('SIGKILL');
    await nsS?.destroy();
    await nsC?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the admin socket is 0600 in the state directory; `facade status` shows the live session', async () => {
    const mode = (await stat(join(state, 'admin.sock'))).mode & 0o777;
    assert.equal(mode, 0o600);
    const ping = await nsC.exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', `${POOL}.1`]);
    assert.match(ping.stdout, / 0% packet loss/);
    const out = await status();
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^server pid \d+, listening on 0\.0\.0\.0:8443/m);
    assert.match(
      out.stdout,
      new RegExp(
        `ann  ${POOL.replace(/\./g, '\\.')}\\.\\d+  from ${LINK.replace(/\./g, '\\.')}\\.2:\\d+ \\(h2\\)  since \\S+  in \\d+ B  out \\d+ B  last seen \\d+ s ago`,
      ),
      out.stdout,
    );
    // Workers report their counters every second: the ping's bytes show within two.
    type Live = { running: boolean; sessions: { user: string; bytesIn: number; lastSeen: string }[] };
    let json = JSON.parse((await status('--json')).stdout) as Live;
    for (let i = 0; i < 20 && !(json.sessions[0]?.bytesIn ?? 0); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      json = JSON.parse((await status('--json')).stdout) as Live;
    }
    assert.equal(json.running, true);
    assert.equal(json.sessions[0]?.user, 'ann');
    assert.ok((json.sessions[0]?.bytesIn ?? 0) > 0);
    assert.ok(Date.now() - Date.parse(json.sessions[0]?.lastSeen ?? '') < 10_000);
  });

  test('SIGHUP: new routes and log level applied, the listen change named for a restart; the session stays', async () => {
    await writeFile(
      configFile,
      JSON.stringify(
        settings({ routes: ['198.19.211.0/24'], logLevel: 'debug', listen: `0.0.0.0:${PORT + 1}` }),
      ),
    );
    const from = server.lines.length;
    server.child.kill('SIGHUP');
    const line = await server.waitFor(/SIGHUP: configuration reloaded/);
    assert.ok(server.lines.indexOf(line) >= from);
    assert.deepEqual((field(line, 'applied') as string[]).sort(), ['logLevel', 'routes']);
    assert.deepEqual(field(line, 'needsRestart'), ['listen']);
    assert.equal(client.count(/client disconnected|not connected/), 0, 'the session was not dropped');
    // A new session gets the new routes.
    await client.stop('SIGTERM');
    client = startClient();
    const connected = await client.waitFor(/connected:/);
    assert.ok((field(connected, 'routes') as string[]).includes('198.19.211.0/24'), connected);
  });

  test('a config with a mistake: nothing changes, the log says why', async () => {
    await writeFile(configFile, JSON.stringify(settings({ mtu: 12 })));
    server.child.kill('SIGHUP');
    const line = await server.waitFor(/SIGHUP: the configuration has a problem/);
    assert.match(String(field(line, 'err')), /mtu/);
  });

  test('no server: `facade status` says so plainly and shows the last snapshot as such (exit 1)', async () => {
    await client.stop('SIGTERM');
    await server.stop('SIGKILL'); // a crash: the socket file stays, nothing answers it
    const out = await status();
    assert.equal(out.code, 1);
    assert.match(out.stdout, /^no facade server is running with --state-dir /m);
    assert.match(out.stdout, /last known status, written \S+ by pid \d+ before it stopped:/);
    const json = JSON.parse((await status('--json')).stdout) as { running: boolean; lastKnown: unknown };
    assert.equal(json.running, false);
    assert.notEqual(json.lastKnown, null);
  });
});
