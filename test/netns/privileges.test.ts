// The server gives up root once its TUN and ports are open (src/server/privileges.ts), with the real CLI in
// namespaces: after "facade server ready" every uid and gid is the --run-as user's and no capability is
// left, and everything it does later still works unprivileged (tunnel traffic, a user added by root and
// picked up by the reload, status.json, a clean SIGTERM that removes the TUN). --run-as root keeps root
// (with a warning); an unknown user stops start-up and leaves nothing open.
//
//   ns S (facade server on 443 and 80, TUN) ── veth ── ns C (facade client)
//
// Traffic stays inside these namespaces (198.18.0.0/15 only).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { lookupAccount } from '../../src/server/privileges.js';
import { readStatusFile } from '../../src/server/status.js';
import {
  addUser as addUserWithCli,
  clientArgs,
  type FacadeProcess,
  field,
  startFacade,
  waitForStatus,
} from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, uniqueName } from '../helpers/netns.js';

const skip = netnsSkipReason();

// Per-run subnets inside 198.18.0.0/15, so parallel files never share addresses even by mistake.
const net = 160 + (process.pid % 18) * 2;
const LINK = `198.19.${net}`;
const POOL = `198.18.${net}`;
const SERVER = `${LINK}.1`;
const PATH = '/priv/tunnel';

interface ProcStatus {
  uid: number[];
  gid: number[];
  groups: number[];
  capEff: bigint;
  capPrm: bigint;
}

function procStatus(pid: number): ProcStatus {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const line = (name: string): string => {
    const m = new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text);
    assert.ok(m, `no ${name} in /proc/${pid}/status`);
    return (m[1] as string).trim();
  };
  const numbers = (name: string): number[] =>
    line(name)
      .split(/\s+/)
      .filter((x) => x !== '')
      .map(Number);
  return {
    uid: numbers('Uid'),
    gid: numbers('Gid'),
    groups: numbers('Groups'),
    capEff: BigInt(`0x${line('CapEff')}`),
    capPrm: BigInt(`0x${line('CapPrm')}`),
  };
}

describe('the server drops root after start-up', { skip: skip ?? false }, () => {
  let dir: string;
  let ns: { s: Netns; c: Netns } | undefined;
  let server: FacadeProcess | undefined;
  let serverTun: string;
  let fingerprint: string;
  let nobody: { uid: number; gid: number };
  const others: FacadeProcess[] = [];

  const usersPath = (): string => join(dir, 'users.json');
  const stateDir = (): string => join(dir, 'state');

  const addUser = async (user: string): Promise<void> => {
    await writeFile(join(dir, `${user}.pw`), `pw-of-${user}\n`);
    await addUserWithCli((ns as { s: Netns }).s, {
      users: usersPath(),
      tunnelPath: PATH,
      name: user,
      password: `pw-of-${user}`,
    });
  };

  const serverArgs = (tun: string, more: string[] = []): string[] => [
    'server',
    '--listen',
    '0.0.0.0:443',
    '--http-listen',
    '0.0.0.0:80',
    '--pool',
    `${POOL}.0/24`,
    '--users',
    usersPath(),
    '--tunnel-path',
    PATH,
    '--state-dir',
    stateDir(),
    '--tun',
    tun,
    '--keepalive',
    '1',
    ...more,
  ];

  const connect = (user: string): FacadeProcess => {
    const client = startFacade(
      (ns as { c: Netns }).c,
      clientArgs({
        url: `https://${SERVER}:443${PATH}`,
        user,
        passwordFile: join(dir, `${user}.pw`),
        pin: fingerprint,
        tun: uniqueName('pc'),
      }),
    );
    others.push(client);
    return client;
  };

  const tunExists = async (name: string): Promise<boolean> => {
    const out = await (ns as { s: Netns }).s.exec('ip', ['link', 'show', name]);
    return out.code === 0;
  };

  before(async () => {
    const account = await lookupAccount('nobody');
    assert.ok(account, 'this machine has a "nobody" user');
    nobody = account;
    dir = await mkdtemp(join(tmpdir(), 'facade-priv-'));
    // The unprivileged server must reach its state directory and users file through this one.
    await chmod(dir, 0o755);
    ns = { s: await Netns.create('ps'), c: await Netns.create('pc') };
    await createVethPair(ns.s, ns.c, { addrA: `${SERVER}/24`, addrB: `${LINK}.2/24` });
    await addUser('alice');
    serverTun = uniqueName('pt');
    // No --run-as: the default, auto, is nobody when the server was not started through sudo.
    server = startFacade(ns.s, serverArgs(serverTun), { env: withoutSudo() });
    fingerprint = String(field(await server.waitFor(/self-signed certificate/), 'fingerprint'));
    await server.waitFor(/facade server ready/);
  });

  after(async () => {
    for (const p of [server, ...others]) await p?.stop('SIGKILL');
    for (const n of Object.values(ns ?? {})) await n.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('after "ready": every uid and gid is nobody\'s, no capability is left, and it says so', async () => {
    const s = server as FacadeProcess;
    const pid = s.child.pid as number;
    const status = procStatus(pid);
    assert.deepEqual(
      status.uid,
      [nobody.uid, nobody.uid, nobody.uid, nobody.uid],
      'Uid: real, effective, saved, fs',
    );
    assert.deepEqual(
      status.gid,
      [nobody.gid, nobody.gid, nobody.gid, nobody.gid],
      'Gid: real, effective, saved, fs',
    );
    assert.ok(status.uid.every((u) => u !== 0) && status.gid.every((g) => g !== 0));
    assert.ok(
      status.groups.every((g) => g === nobody.gid),
      `supplementary groups: ${status.groups}`,
    );
    assert.equal(status.capEff, 0n, 'CapEff');
    assert.equal(status.capPrm, 0n, 'CapPrm');
    // It dropped root before it was ready, and logged who it runs as.
    const dropped = s.lines.findIndex((l) => /dropped root: running as nobody/.test(l));
    const ready = s.lines.findIndex((l) => /facade server ready/.test(l));
    assert.ok(dropped >= 0 && dropped < ready, s.lines.join('\n'));
    // The TUN, and ports 443 and 80 (privileged in the namespace), were opened before.
    assert.ok(await tunExists(serverTun));
    const ports = await (ns as { s: Netns }).s.exec('ss', ['-Htlnp']);
    assert.match(ports.stdout, new RegExp(`:443 .*pid=${pid}`), ports.stdout);
    assert.match(ports.stdout, new RegExp(`:80 .*pid=${pid}`), ports.stdout);
  });

  test("the state directory, its files and the users file are nobody's; the users file is still 0600", async () => {
    const dirInfo = await stat(stateDir());
    assert.equal(dirInfo.uid, nobody.uid);
    assert.equal(dirInfo.mode & 0o777, 0o700);
    for (const name of ['self-signed.key.pem', 'self-signed.crt.pem']) {
      const info = await stat(join(stateDir(), name));
      assert.equal(info.uid, nobody.uid, name);
      assert.equal(info.mode & 0o777, 0o600, name);
    }
    const users = await stat(usersPath());
    assert.equal(users.uid, nobody.uid);
    assert.equal(users.gid, nobody.gid);
    assert.equal(users.mode & 0o777, 0o600);
  });

  test('a client connects and a ping crosses the tunnel', async () => {
    const alice = connect('alice');
    await alice.waitFor(/connected:/);
    const out = await (ns as { c: Netns }).c.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', `${POOL}.1`]);
    assert.match(out.stdout, / 0% packet loss/, out.stdout);
  });

  test('status.json keeps being written, by nobody', async () => {
    const first = await waitForStatus(stateDir(), (st) => st.sessions.length >= 1);
    const later = await waitForStatus(stateDir(), (st) => st.updated > first.updated, 10_000);
    assert.equal(later.pid, (server as FacadeProcess).child.pid);
    const info = await stat(join(stateDir(), 'status.json'));
    assert.equal(info.uid, nobody.uid);
    assert.equal(info.mode & 0o777, 0o600);
    const leases = await stat(join(stateDir(), 'leases.json'));
    assert.equal(leases.uid, nobody.uid);
  });

  test("a user added by root afterwards is picked up by the reload and connects; the users file stays nobody's and 0600", async () => {
    const s = server as FacadeProcess;
    await addUser('bob');
    const users = await stat(usersPath());
    assert.equal(users.uid, nobody.uid, "root's `facade user add` kept the owner");
    assert.equal(users.gid, nobody.gid);
    assert.equal(users.mode & 0o777, 0o600);
    // The reload (every 5 s) reads the new file as nobody.
    const reloaded = await s.waitFor(/users file reloaded/, 15_000);
    assert.equal(field(reloaded, 'users'), 2, reloaded);
    assert.equal(s.count(/users file not reloaded/), 0, s.lines.slice(-10).join('\n'));
    const bob = connect('bob');
    const dev = String(field(await bob.waitFor(/connected:/), 'dev'));
    // bob's tunnel carries traffic (alice's TUN is in the same namespace: ping through bob's).
    const out = await (ns as { c: Netns }).c.exec('ping', [
      '-c',
      '2',
      '-i',
      '0.2',
      '-W',
      '2',
      '-I',
      dev,
      `${POOL}.1`,
    ]);
    assert.match(out.stdout, / 0% packet loss/, out.stdout);
  });

  test('a users file made readable to others while the server runs is warned about at its reload', async () => {
    const s = server as FacadeProcess;
    const warning = /has mode 0644; it should be 0600/;
    const before = s.count(warning);
    const reloads = s.count(/users file reloaded/);
    await chmod(usersPath(), 0o644);
    try {
      await s.waitFor(warning, 15_000).catch(() => undefined);
      assert.equal(s.count(/users file reloaded/) > reloads, true, 'the changed file was reloaded');
      assert.equal(s.count(warning), before + 1, s.lines.slice(-5).join('\n'));
    } finally {
      await chmod(usersPath(), 0o600);
    }
  });

  test('SIGTERM: a clean exit (0), and the TUN is gone', async () => {
    const s = server as FacadeProcess;
    const code = await s.stop('SIGTERM');
    assert.equal(code, 0, s.lines.slice(-10).join('\n'));
    assert.ok(s.lines.some((l) => /facade server stopped/.test(l)));
    assert.equal(await tunExists(serverTun), false, 'the TUN was removed');
    const last = await readStatusFile(stateDir());
    assert.ok(last !== undefined);
  });

  test('--run-as root keeps root, with a loud warning', async () => {
    const tun = uniqueName('pr');
    const root = startFacade((ns as { s: Netns }).s, serverArgs(tun, ['--run-as', 'root']));
    others.push(root);
    await root.waitFor(/facade server ready/);
    const warning = root.lines.find((l) => /RUNNING AS ROOT/.test(l));
    assert.ok(warning, root.lines.join('\n'));
    assert.equal(field(warning, 'level'), 40);
    const status = procStatus(root.child.pid as number);
    assert.deepEqual(status.uid, [0, 0, 0, 0]);
    assert.notEqual(status.capEff, 0n);
    assert.equal(await root.stop('SIGTERM'), 0);
    assert.equal(await tunExists(tun), false);
  });

  test('the default (auto) is the user who ran sudo', async () => {
    const tun = uniqueName('pa');
    const daemon = (await lookupAccount('daemon'))?.uid;
    assert.ok(daemon !== undefined && daemon !== 0, 'Debian has a daemon user');
    const viaSudo = startFacade((ns as { s: Netns }).s, serverArgs(tun), {
      env: { ...withoutSudo(), SUDO_USER: 'daemon' },
    });
    others.push(viaSudo);
    await viaSudo.waitFor(/facade server ready/);
    assert.deepEqual(procStatus(viaSudo.child.pid as number).uid, [daemon, daemon, daemon, daemon]);
    assert.equal(await viaSudo.stop('SIGTERM'), 0);
  });

  test('an unknown --run-as user stops start-up (FACADE_ERR_RUN_AS) and leaves no TUN and no port', async () => {
    const tun = uniqueName('pu');
    const bad = startFacade((ns as { s: Netns }).s, serverArgs(tun, ['--run-as', 'no-such-user-x']));
    others.push(bad);
    const code = await new Promise<number | null>((resolve) => {
      if (bad.child.exitCode !== null) resolve(bad.child.exitCode);
      else bad.child.once('exit', resolve);
    });
    assert.equal(code, 1, bad.lines.join('\n'));
    assert.ok(
      bad.lines.some((l) => /FACADE_ERR_RUN_AS/.test(l)),
      bad.lines.join('\n'),
    );
    assert.equal(await tunExists(tun), false);
    const ports = await (ns as { s: Netns }).s.exec('ss', ['-Htln']);
    assert.doesNotMatch(ports.stdout, /:443 |:80 /, ports.stdout);
  });
});

/** This environment without SUDO_USER: the tests decide who "ran sudo". */
function withoutSudo(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.SUDO_USER;
  return env;
}
