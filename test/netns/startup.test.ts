// The server's start-up fails at each step for real (no mocks), and a failure leaves nothing open:
//
//   port in use (the site port; the --http-listen port) ─ TUN denied (the name is a veth device; no
//   CAP_NET_ADMIN) ─ bad certificate (key does not fit; does not parse) ─ unreachable CA (ACME, nothing
//   stored, the directory URL is a closed loopback port)
//
// Each case runs twice, each time in a namespace of its own:
//  (a) in-process: test/helpers/startup-child.ts calls startServer() and reports the coded error, whether
//      the ports it bound can be bound again at once and whether a TUN of that name remains; then it must
//      exit by itself (its event loop drains: no listener, TUN reader or timer left) within a few seconds;
//  (b) the real CLI: `facade server` exits non-zero by itself, promptly, and stderr names [FACADE_ERR_…].
//
// And a TUN failure at run time: the server's TUN is deleted under a connected client; the server logs
// FACADE_ERR_TUN_IO, ends the session, never throws an uncaught exception, and exits non-zero on its own.
//
// Traffic stays inside these namespaces and on their loopback (198.18.0.0/15 only).

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Errors } from '../../src/core/errors.js';
import { UsersFile } from '../../src/users/users-file.js';
import { type FacadeProcess, field, startFacade } from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, uniqueName, withNetns } from '../helpers/netns.js';
import type { StartupChildInput, StartupChildReport } from '../helpers/startup-child.js';
import { makeTestCertificate } from '../helpers/tls-fixture.js';

const skip = netnsSkipReason();
const CHILD = fileURLToPath(new URL('../helpers/startup-child.js', import.meta.url));

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((path) => existsSync(path));
/** Runs node without CAP_NET_ADMIN (root otherwise): the kernel refuses to create a TUN. */
const NO_NET_ADMIN =
  SETPRIV === undefined ? undefined : [SETPRIV, '--inh-caps=-all', '--bounding-set=-net_admin', '--'];

// Per-run subnets inside 198.18.0.0/15, so parallel files never share addresses even by mistake.
const net = 200 + (process.pid % 27) * 2;
const POOL = `198.18.${net}`;
const LINK = `198.19.${net}`;
const SITE_PORT = 8443;
const HTTP_PORT = 8080;
const SITE = { host: '0.0.0.0', port: SITE_PORT };
const HTTP = { host: '127.0.0.1', port: HTTP_PORT };
/** A port nothing listens on in a fresh namespace: the ACME directory that cannot be reached. */
const CLOSED_PORT = 14999;

/** How long after its report the in-process child may take to exit by itself. */
const CHILD_EXIT_MS = 4_000;
/** How long the CLI may take to exit after a start-up failure (the unreachable CA has its own budget). */
const CLI_EXIT_MS = 10_000;
/** acme-client waits 5 s before its one retry of a refused request (server.ts: requestRetries 1). */
const ACME_BUDGET_MS = 25_000;

type Settings = Record<string, string>;

/** The flag of each setting used here (camelCase key → --flag). */
const FLAGS: Record<string, string> = {
  listen: 'listen',
  httpListen: 'http-listen',
  pool: 'pool',
  users: 'users',
  tunnelPath: 'tunnel-path',
  stateDir: 'state-dir',
  tunName: 'tun',
  logLevel: 'log-level',
  cert: 'cert',
  key: 'key',
  domain: 'domain',
  email: 'email',
  acmeDirectory: 'acme-directory',
};

function toFlags(settings: Settings): string[] {
  return Object.entries(settings).flatMap(([key, value]) => {
    const flag = FLAGS[key];
    if (flag === undefined) throw new Error(`startup.test: no flag known for setting ${key}`);
    return [`--${flag}`, value];
  });
}

interface Scenario {
  readonly ns: Netns;
  readonly dir: string;
  readonly tun: string;
  readonly settings: Settings;
}

interface Case {
  readonly name: string;
  /** The FacadeError code start-up must fail with. */
  readonly code: string;
  /** Its errno, when the failure is a system call's. */
  readonly errno?: string;
  /** Makes the step fail, for real; returns settings to add or replace. */
  arrange(s: Scenario): Promise<Settings>;
  /** A command that execs node (setpriv dropping a capability). */
  readonly wrapper?: readonly string[] | undefined;
  /** The port another process holds (not checked as freed: it never was ours). */
  readonly occupies?: { readonly host: string; readonly port: number };
  /** A non-TUN device of the --tun name exists before and must still exist after. */
  readonly keepsDevice?: boolean;
  readonly skip?: string | undefined;
  readonly budgetMs?: number;
}

/** A process in `ns` listening on host:port until the namespace goes. */
async function holdPort(ns: Netns, host: string, port: number): Promise<void> {
  const holder = ns.spawn(process.execPath, [
    '-e',
    `require('net').createServer().listen(${port}, '${host}', () => console.log('listening'))`,
  ]);
  let out = '';
  holder.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
  holder.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString()));
  for (let i = 0; i < 200 && !out.includes('listening'); i++) {
    if (holder.exitCode !== null) break;
    await sleep(25);
  }
  assert.match(out, /listening/, `could not occupy ${host}:${port} in ${ns.name}: ${out}`);
}

const CASES: readonly Case[] = [
  {
    // Credential v1 (bearer keys): no conversion exists; the operator must add the users again.
    name: 'a version 1 users file',
    code: 'FACADE_ERR_USERS_FILE_V1',
    arrange: async ({ dir }) => {
      const path = join(dir, 'users-v1.json');
      const storedKey = Buffer.alloc(32, 7).toString('base64');
      await writeFile(path, JSON.stringify({ version: 1, users: { alice: { storedKey, created: 'x' } } }));
      return { users: path };
    },
  },
  {
    // The users' keys are derived from the tunnel path: a file made for another one logs no one in.
    name: 'a users file made for another tunnel path',
    code: 'FACADE_ERR_USERS_FILE_REALM',
    arrange: async () => ({ tunnelPath: '/another/tunnel' }),
  },
  {
    name: 'port in use: the site port',
    code: 'FACADE_ERR_LISTEN',
    errno: 'EADDRINUSE',
    occupies: SITE,
    // The port-80 listener and the TUN are open by the time the site binds: both must be closed again.
    arrange: async ({ ns }) => {
      await holdPort(ns, SITE.host, SITE.port);
      return {};
    },
  },
  {
    name: 'port in use: the --http-listen port',
    code: 'FACADE_ERR_LISTEN',
    errno: 'EADDRINUSE',
    occupies: HTTP,
    arrange: async ({ ns }) => {
      await holdPort(ns, HTTP.host, HTTP.port);
      return {};
    },
  },
  {
    name: 'TUN denied: the --tun name belongs to a veth device',
    code: 'FACADE_ERR_TUN_OPEN',
    errno: 'EINVAL',
    keepsDevice: true,
    // A veth rather than a dummy: the dummy module is not everywhere (containers), veth is (the other
    // netns tests need it too). The port-80 listener is open by the time the TUN is asked for.
    arrange: async ({ ns, tun }) => {
      await ns.ip(['link', 'add', tun, 'type', 'veth', 'peer', 'name', uniqueName('fsp')]);
      return {};
    },
  },
  {
    name: 'TUN denied: no CAP_NET_ADMIN',
    code: 'FACADE_ERR_TUN_OPEN',
    errno: 'EPERM',
    wrapper: NO_NET_ADMIN,
    skip: NO_NET_ADMIN === undefined ? 'setpriv is missing (Debian: util-linux)' : undefined,
    arrange: async () => ({}),
  },
  {
    name: 'bad certificate: the key does not fit the certificate',
    code: 'FACADE_ERR_CERT_LOAD',
    arrange: async ({ dir }) => {
      const a = await makeTestCertificate(join(dir, 'cert-a'), ['vpn.example.test']);
      const b = await makeTestCertificate(join(dir, 'cert-b'), ['vpn.example.test']);
      return { cert: a.certPath, key: b.keyPath };
    },
  },
  {
    name: 'bad certificate: the files do not parse',
    code: 'FACADE_ERR_CERT_LOAD',
    arrange: async ({ dir }) => {
      await writeFile(join(dir, 'bad.crt.pem'), '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n');
      await writeFile(join(dir, 'bad.key.pem'), 'not a key\n', { mode: 0o600 });
      return { cert: join(dir, 'bad.crt.pem'), key: join(dir, 'bad.key.pem') };
    },
  },
  {
    name: 'unreachable CA: ACME with no stored certificate, the directory refuses connections',
    code: 'FACADE_ERR_ACME_ORDER',
    budgetMs: ACME_BUDGET_MS,
    arrange: async () => ({
      domain: 'vpn.example.test',
      email: 'ops@example.test',
      acmeDirectory: `https://127.0.0.1:${CLOSED_PORT}/dir`,
    }),
  },
];

/** The exit code core/errors.ts's table gives a code (its consequence). */
function exitCodeOf(code: string): number {
  const spec = Object.values(Errors).find((e) => e.code === code);
  assert.ok(spec !== undefined && spec.consequence.kind === 'exit', `${code} is not an exit error`);
  return spec.consequence.exitCode;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves with the exit code (null: killed by a signal), or 'timeout' when `child` is still running. */
function exitWithin(child: ChildProcess, ms: number): Promise<number | null | 'timeout'> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe('start-up failures leave nothing open and exit with the coded error', {
  skip: skip ?? false,
  // Two at a time: each run starts a node process (~1 s of CPU to load); more would only queue on the CPU.
  concurrency: 2,
}, () => {
  let root: string;
  let usersPath: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'facade-startup-'));
    // The server runs as nobody after start-up (--run-as): it must reach its files through this one.
    await chmod(root, 0o755);
    usersPath = join(root, 'users.json');
    const users = await UsersFile.load(usersPath, { allowMissing: true });
    await users.add('alice', 'pw-of-alice', '/k3y/tunnel');
    await users.save();
  });

  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  /** A namespace and settings of its own for one run of one case, the failure arranged. */
  const prepare = async (t: TestContext, c: Case): Promise<Scenario> => {
    const ns = await withNetns(t, 'fs');
    const dir = join(root, ns.name);
    await mkdir(dir);
    const tun = uniqueName('fst');
    const settings: Settings = {
      listen: `${SITE.host}:${SITE.port}`,
      httpListen: `${HTTP.host}:${HTTP.port}`,
      pool: `${POOL}.0/24`,
      users: usersPath,
      tunnelPath: '/k3y/tunnel',
      stateDir: join(dir, 'state'),
      tunName: tun,
      logLevel: 'debug',
    };
    const scenario = { ns, dir, tun, settings };
    Object.assign(settings, await c.arrange(scenario));
    return scenario;
  };

  for (const c of CASES) {
    test(`${c.name}: startServer rejects with ${c.code}, frees what it opened, leaves no handle`, {
      skip: c.skip ?? false,
    }, async (t) => {
      const { ns, tun, settings } = await prepare(t, c);
      const ports = [SITE, HTTP].filter((p) => p !== c.occupies);
      const input: StartupChildInput = { settings, ports, tun };
      const argv = [...(c.wrapper ?? []), process.execPath, CHILD, JSON.stringify(input)];
      const child = ns.spawn(argv[0] as string, argv.slice(1));
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const tail = (): string => stderr.split('\n').slice(-12).join('\n');

      const deadline = Date.now() + (c.budgetMs ?? CLI_EXIT_MS);
      while (!stdout.includes('\n') && child.exitCode === null && Date.now() < deadline) await sleep(20);
      assert.ok(stdout.includes('\n'), `the child reported nothing; its log:\n${tail()}`);
      const reportedAt = Date.now();
      const report = JSON.parse(stdout.split('\n')[0] as string) as StartupChildReport;
      t.diagnostic(`startServer failed after ${report.ms} ms: ${report.message}`);

      assert.equal(report.started, false, 'startServer must fail');
      assert.equal(report.code, c.code, report.message);
      if (c.errno !== undefined) assert.equal(report.errno, c.errno, report.message);
      for (const [address, state] of Object.entries(report.ports))
        assert.equal(state, 'free', `${address} cannot be bound again at once after the failure`);
      if (c.keepsDevice) {
        assert.ok(report.tunExists && !report.tunIsTun, 'the veth device of that name is left as it was');
      } else {
        assert.equal(report.tunExists, false, `interface ${tun} remains after the failure`);
      }

      // No listener, TUN reader or timer left: the event loop drains and the child ends by itself.
      const code = await exitWithin(child, CHILD_EXIT_MS);
      if (code === 'timeout') child.kill('SIGKILL');
      assert.notEqual(
        code,
        'timeout',
        `the child still runs ${CHILD_EXIT_MS} ms after startServer failed: something is left open:\n${tail()}`,
      );
      assert.equal(code, 0, tail());
      t.diagnostic(`the child exited by itself ${Date.now() - reportedAt} ms after the failure`);
    });

    test(`${c.name}: the CLI exits non-zero by itself, naming [${c.code}]`, {
      skip: c.skip ?? false,
    }, async (t) => {
      const { ns, tun, settings } = await prepare(t, c);
      const began = Date.now();
      const server = startFacade(ns, ['server', ...toFlags(settings)], {
        ...(c.wrapper === undefined ? {} : { wrapper: c.wrapper }),
      });
      let stderr = '';
      server.child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const budget = c.budgetMs ?? CLI_EXIT_MS;
      const code = await exitWithin(server.child, budget);
      if (code === 'timeout') await server.stop('SIGKILL');
      assert.notEqual(
        code,
        'timeout',
        `facade server still runs after ${budget} ms:\n${server.lines.join('\n')}`,
      );
      t.diagnostic(`exit code ${code} after ${Date.now() - began} ms`);
      assert.ok(typeof code === 'number' && code !== 0, `exit code ${code}`);
      assert.equal(code, exitCodeOf(c.code), `the exit code the error table gives ${c.code}`);
      assert.ok(stderr.includes(`[${c.code}]`), `stderr does not name [${c.code}]:\n${stderr}`);
      assert.ok(!server.lines.some((l) => /facade server ready/.test(l)), 'the server said it was ready');

      const links = await ns.ip(['-o', 'link', 'show']);
      if (c.keepsDevice) assert.match(links, new RegExp(`: ${tun}@`), 'the veth device remains');
      else assert.doesNotMatch(links, new RegExp(`: ${tun}[:@]`), `interface ${tun} remains`);
    });
  }
});

// With pings flowing, the write path (a client's packet into the deleted TUN) usually meets the failure
// first; idle, the read path (the TUN reader woken by the deletion) does.
for (const traffic of [true, false])
  describe(`a TUN failure at run time, ${traffic ? 'pings flowing' : 'idle'}`, {
    skip: skip ?? false,
  }, () => {
    let dir: string;
    let ns: { s: Netns; c: Netns } | undefined;
    let server: FacadeProcess | undefined;
    let client: FacadeProcess | undefined;
    let pinger: ChildProcess | undefined;
    let serverStderr = '';
    const serverTun = uniqueName('frs');
    const SERVER = `${LINK}.1`;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'facade-tun-fail-'));
      // The server runs as nobody after start-up (--run-as): it must reach its files through this one.
      await chmod(dir, 0o755);
      ns = { s: await Netns.create('rs'), c: await Netns.create('rc') };
      await createVethPair(ns.s, ns.c, { addrA: `${SERVER}/24`, addrB: `${LINK}.2/24` });
      const users = await UsersFile.load(join(dir, 'users.json'), { allowMissing: true });
      await users.add('alice', 'pw-of-alice', '/k3y/tunnel');
      await users.save();
      await writeFile(join(dir, 'alice.pw'), 'pw-of-alice\n');

      server = startFacade(ns.s, [
        'server',
        '--listen',
        `0.0.0.0:${SITE_PORT}`,
        '--http-listen',
        `127.0.0.1:${HTTP_PORT}`,
        '--pool',
        `${POOL}.0/24`,
        '--users',
        join(dir, 'users.json'),
        '--tunnel-path',
        '/k3y/tunnel',
        '--state-dir',
        join(dir, 'state'),
        '--tun',
        serverTun,
        '--keepalive',
        '1',
      ]);
      server.child.stderr?.on('data', (chunk: Buffer) => (serverStderr += chunk.toString()));
      const fingerprint = String(field(await server.waitFor(/self-signed certificate/), 'fingerprint'));
      await server.waitFor(/facade server ready/);
      client = startFacade(ns.c, [
        'client',
        `https://${SERVER}:${SITE_PORT}/k3y/tunnel`,
        '--user',
        'alice',
        '--password-file',
        join(dir, 'alice.pw'),
        '--pin',
        fingerprint,
        '--tun',
        uniqueName('frc'),
        '--keepalive',
        '1',
      ]);
      await client.waitFor(/connected:/);
      if (!traffic) {
        await ns.s.ip(['link', 'del', serverTun]);
        return;
      }
      // Traffic both ways through the server's TUN while it goes: reads and writes both meet the failure.
      pinger = ns.c.spawn('ping', ['-i', '0.02', '-W', '1', `${POOL}.1`]);
      let out = '';
      pinger.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
      for (let i = 0; i < 100 && (out.match(/bytes from/g) ?? []).length < 5; i++) await sleep(50);
      assert.ok((out.match(/bytes from/g) ?? []).length >= 5, `no ping replies through the tunnel:\n${out}`);

      await ns.s.ip(['link', 'del', serverTun]);
    });

    after(async () => {
      pinger?.kill('SIGKILL');
      for (const p of [client, server]) await p?.stop('SIGKILL');
      for (const n of Object.values(ns ?? {})) await n.destroy();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    test('the server logs FACADE_ERR_TUN_IO and ends the session; nothing escapes as an uncaught exception', async (t) => {
      const s = server as FacadeProcess;
      const failure = await s.waitFor(/FACADE_ERR_TUN_IO/, 10_000);
      assert.equal(field(failure, 'level'), 50, failure);
      t.diagnostic(String(field(failure, 'msg')));
      const ended = await s.waitFor(/client disconnected/, 10_000);
      assert.equal(field(ended, 'user'), 'alice');
      assert.ok(
        s.lines.indexOf(ended) > s.lines.indexOf(failure),
        'the session ended because the TUN failed',
      );
      // The client hears that the session ended (and starts reconnecting).
      await (client as FacadeProcess).waitFor(/tunnel closed|not connected|disconnected/i, 10_000);
      // An uncaught exception prints a stack and kills the process with code 1 or 7.
      await sleep(300);
      const crash = serverStderr
        .split('\n')
        .filter((l) => /Uncaught|^\s+at |node:internal|^\w*Error\b|triggerUncaughtException/.test(l));
      assert.deepEqual(crash, [], `the server crashed:\n${serverStderr}`);
    });

    test('the server exits non-zero on its own, promptly (commands/server.ts awaits server.failed)', async () => {
      const s = server as FacadeProcess;
      const code = await exitWithin(s.child, 10_000);
      assert.notEqual(
        code,
        'timeout',
        `the server still runs 10 s after its TUN failed (does commands/server.ts await server.failed?):\n${s.lines.slice(-10).join('\n')}`,
      );
      assert.ok(
        typeof code === 'number' && code !== 0,
        `exit code ${code}:\n${s.lines.slice(-10).join('\n')}`,
      );
      const crash = serverStderr
        .split('\n')
        .filter((l) => /Uncaught|^\s+at |triggerUncaughtException/.test(l));
      assert.deepEqual(crash, [], `the server crashed instead of stopping:\n${serverStderr}`);
    });
  });
