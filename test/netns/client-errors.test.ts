// What the client says when it cannot connect, with the real CLI in namespaces: each case of issue 12's
// list, whether the client stops (exit 1) or keeps retrying, and that its words name the cause.
//
//   ns S (facade server on 8443, pool of one address) ── veth ── ns C (clients; a DNS stub on 127.0.0.1)
//
// C's resolver is a stub that knows no name (test/helpers/dns-stub.ts, through /etc/netns/C/resolv.conf),
// so no lookup leaves the namespace. Traffic stays inside these namespaces (198.18.0.0/15 only).

import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { addUser, clientArgs, type FacadeProcess, field, startFacade } from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, uniqueName } from '../helpers/netns.js';

const skip = netnsSkipReason();
const DNS_STUB = fileURLToPath(new URL('../helpers/dns-stub.js', import.meta.url));

// Per-run subnets inside 198.18.0.0/15, so parallel files never share addresses even by mistake.
const net = 60 + (process.pid % 20) * 2;
const LINK = `198.19.${net}`;
const SERVER = `${LINK}.1`;
const POOL = `198.18.${net}.0/30`; // the server and one client
const PORT = 8443;
const PATH = '/err/tunnel';

/** Resolves with the exit code once the client has exited on its own (SIGCONT does nothing to it). */
const exitCode = (p: FacadeProcess): Promise<number | null> => p.stop('SIGCONT');

describe('clear client errors', { skip: skip ?? false }, () => {
  let dir: string;
  let ns: { s: Netns; c: Netns };
  let server: FacadeProcess;
  let fingerprint: string;
  const procs: FacadeProcess[] = [];

  const client = (user: string, more: string[], url = `https://${SERVER}:${PORT}${PATH}`): FacadeProcess => {
    const p = startFacade(
      ns.c,
      clientArgs({ url, user, passwordFile: join(dir, `${user}.pw`), tun: uniqueName('fe'), more }),
    );
    procs.push(p);
    return p;
  };
  const msgOf = (line: string): string => String(field(line, 'msg'));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-errors-'));
    await chmod(dir, 0o755);
    ns = { s: await Netns.create('es'), c: await Netns.create('ec') };
    await createVethPair(ns.s, ns.c, { addrA: `${LINK}.1/24`, addrB: `${LINK}.2/24` });
    // `ip netns exec` puts /etc/netns/NAME/resolv.conf in place of /etc/resolv.conf.
    await mkdir(`/etc/netns/${ns.c.name}`, { recursive: true });
    await writeFile(
      `/etc/netns/${ns.c.name}/resolv.conf`,
      'nameserver 127.0.0.1\noptions attempts:1 timeout:1\n',
    );
    const stub = ns.c.spawn(process.execPath, [DNS_STUB, '127.0.0.1']);
    await new Promise<void>((resolve, reject) => {
      stub.stdout?.once('data', () => resolve());
      stub.once('exit', (code) => reject(new Error(`the DNS stub exited (${code})`)));
    });
    for (const user of ['alice', 'bob', 'mallory'])
      await writeFile(join(dir, `${user}.pw`), `pw-of-${user}\n`);
    for (const user of ['alice', 'bob'])
      await addUser(ns.s, {
        users: join(dir, 'users.json'),
        tunnelPath: PATH,
        name: user,
        password: `pw-of-${user}`,
      });
    server = startFacade(ns.s, [
      'server',
      '--listen',
      `0.0.0.0:${PORT}`,
      '--http-listen',
      '127.0.0.1:8080',
      '--pool',
      POOL,
      '--users',
      join(dir, 'users.json'),
      '--tunnel-path',
      PATH,
      '--state-dir',
      join(dir, 'state'),
      '--keepalive',
      '1',
    ]);
    procs.push(server);
    fingerprint = String(field(await server.waitFor(/self-signed certificate/), 'fingerprint'));
    await server.waitFor(/facade server ready/);
  });

  after(async () => {
    for (const p of procs) await p.stop('SIGKILL');
    if (ns !== undefined) await rm(`/etc/netns/${ns.c.name}`, { recursive: true, force: true });
    for (const n of Object.values(ns ?? {})) await n.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('a certificate this machine does not trust: it stops, printing the fingerprint and the --pin to use', async () => {
    const c = client('alice', []);
    assert.equal(await exitCode(c), 1);
    const line = c.lines.find((l) => /does not trust/.test(l)) ?? '';
    assert.match(
      msgOf(line),
      new RegExp(
        `^server ${SERVER}:${PORT} presented a certificate this machine does not trust \\(it is self-signed\\)\\. Its fingerprint is ${fingerprint}; .* connect with --pin ${fingerprint}$`,
      ),
    );
    assert.equal(c.count(/will retry/), 0, 'no retry: another attempt meets the same certificate');
  });

  test('a server name that does not exist: it stops and says so', async () => {
    const c = client('alice', ['--pin', fingerprint], `https://nosuch.facade.test:${PORT}${PATH}`);
    assert.equal(await exitCode(c), 1);
    assert.ok(
      c.lines.some((l) =>
        /the server name "nosuch\.facade\.test" does not resolve \(ENOTFOUND/.test(msgOf(l)),
      ),
      c.lines.join('\n'),
    );
  });

  test('a DNS that fails to answer: it retries, saying the name could not be resolved now', async () => {
    const c = client('alice', ['--pin', fingerprint], `https://servfail.facade.test:${PORT}${PATH}`);
    await c.waitFor(/will retry/);
    const line = await c.waitFor(/could not be resolved now/);
    assert.match(
      msgOf(line),
      /^not connected \(the server name "servfail\.facade\.test" could not be resolved now \(EAI_AGAIN/,
    );
    assert.equal(c.child.exitCode, null, 'still running');
    await c.stop();
  });

  test('a server that does not answer on its port: it retries, saying so', async () => {
    const c = client('alice', ['--pin', fingerprint], `https://${SERVER}:${PORT + 1}${PATH}`);
    await c.waitFor(/will retry/);
    await new Promise((r) => setTimeout(r, 1500));
    const retries = c.lines.filter((l) => /will retry/.test(l));
    assert.ok(retries.length >= 2, `retried: ${retries.join('\n')}`);
    assert.match(
      msgOf(retries[0] as string),
      new RegExp(
        `^not connected \\(server ${SERVER}:${PORT + 1} refused the connection: nothing listens on that port, or a firewall rejects it \\(ECONNREFUSED\\)\\); will retry in [\\d.]+ s$`,
      ),
    );
    assert.equal(c.child.exitCode, null, 'still running');
    await c.stop();
  });

  test('credentials or path refused: the site answered, and the client stops', async () => {
    const wrong = client('mallory', ['--pin', fingerprint]);
    assert.equal(await exitCode(wrong), 1);
    assert.ok(
      wrong.lines.some((l) =>
        // The default transport (auto) opens an h2 CONNECT stream, which the site answers with 405.
        /did not accept the tunnel: it answered HTTP 405 like a website: the tunnel path, user or password is wrong/.test(
          msgOf(l),
        ),
      ),
      wrong.lines.join('\n'),
    );
    const wrongPath = client('alice', ['--pin', fingerprint], `https://${SERVER}:${PORT}/err/tunnelx`);
    assert.equal(await exitCode(wrongPath), 1);
    assert.ok(wrongPath.lines.some((l) => /answered HTTP 405 like a website/.test(l)));
  });

  test('a full pool: it says the server has no free address and retries; another login as the same user replaces the first, which stops and says why', async () => {
    const alice = client('alice', ['--pin', fingerprint]);
    await alice.waitFor(/connected:/);
    const bob = client('bob', ['--pin', fingerprint]);
    const full = await bob.waitFor(/server has no free address/);
    assert.match(msgOf(full), /address pool 198\.18\.\d+\.0\/30 is exhausted/);
    await bob.waitFor(/will retry/);
    assert.equal(bob.child.exitCode, null, 'bob keeps retrying');
    await bob.stop();

    const again = client('alice', ['--pin', fingerprint]);
    await again.waitFor(/connected:/);
    assert.equal(await exitCode(alice), 1);
    assert.ok(
      alice.lines.some((l) => msgOf(l) === 'another client connected as "alice"; this one stops'),
      alice.lines.join('\n'),
    );
    assert.equal(again.child.exitCode, null, 'the newer login stays');
    await again.stop();
  });
});
