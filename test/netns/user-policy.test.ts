// Per-user policy and metrics through real tunnels (issue 13), with --workers 2 and with --workers 1:
//
//   ns A (ann, --rate 20mbit) ──┐
//   ns B (bob, no limit)      ──┼── ns S: facade server --metrics 9477, iperf3 servers on its tunnel address
//   ns C (cat, quota; dan)    ──┘
//
// ann's iperf3 holds 20 Mbit/s within 10 % each way while bob's, at the same time, runs far faster; the
// metrics listener (loopback in ns S) shows both users' bytes while it flows and the site has no
// /metrics; ann's rate changed with `facade user set` applies within seconds to the running session; cat's
// few-MB quota ends her session at the quota with the reason and refuses her next login; dan, expired,
// is refused like a wrong password, and bob, set to expire while connected, is cut with the reason.
// Traffic stays inside 198.18.0.0/15.

import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { addUser, CLI, clientArgs, type FacadeProcess, field, startFacade } from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, run, uniqueName } from '../helpers/netns.js';

const skip = netnsSkipReason();
const PORT = 8443;
const PATH = '/p0l1cy/t';
const METRICS = 9477;
const USERS = ['ann', 'bob', 'cat', 'dan'] as const;
type User = (typeof USERS)[number];

interface IperfResult {
  end: { sum_received: { bytes: number; bits_per_second: number } };
}

for (const workers of [2, 1]) {
  const net = 100 + (process.pid % 18) * 2 + (workers === 1 ? 36 : 0);
  const POOL = `198.18.${net}`;
  const LINKS: Record<'A' | 'B' | 'C', string> = {
    A: `198.19.${net}`,
    B: `198.19.${net + 1}`,
    C: `198.18.${net + 1}`,
  };

  describe(`user policy and metrics, --workers ${workers}`, { skip: skip ?? false }, () => {
    let dir: string;
    let state: string;
    let users: string;
    let nsS: Netns;
    const ns: Partial<Record<'A' | 'B' | 'C', Netns>> = {};
    const clients: Partial<Record<User, FacadeProcess>> = {};
    let server: FacadeProcess;
    let fingerprint: string;
    const iperfServers: ReturnType<Netns['spawn']>[] = [];

    const userCommand = (...args: string[]) =>
      run(process.execPath, [CLI, 'user', ...args, '--users', users]);
    const startClient = (user: User, where: 'A' | 'B' | 'C'): FacadeProcess => {
      const client = startFacade(
        ns[where] as Netns,
        clientArgs({
          url: `https://${LINKS[where]}.1:${PORT}${PATH}`,
          user,
          passwordFile: join(dir, `${user}.pw`),
          pin: fingerprint,
          tun: uniqueName('fp'),
          // The policy is the engine's and the session's, whatever carries the tunnel: the raw upgrade here
          // (POLICY_TRANSPORT=h2 or websocket runs the same tests over another).
          more: ['--transport', process.env.POLICY_TRANSPORT ?? 'upgrade'],
        }),
      );
      clients[user] = client;
      return client;
    };
    /** The client's exit code, once it has stopped by itself. */
    const exited = (client: FacadeProcess): Promise<number | null> =>
      client.child.exitCode !== null || client.child.signalCode !== null
        ? Promise.resolve(client.child.exitCode)
        : new Promise((resolve) => client.child.once('exit', (code) => resolve(code)));
    const addressOf = async (client: FacadeProcess) =>
      String(/connected: (\S+)/.exec(await client.waitFor(/connected:/))?.[1]);
    /** iperf3 from `where` to the server's tunnel address on `port` for `seconds` (-R: the other way). */
    const iperf = async (where: 'A' | 'B' | 'C', port: number, seconds: number, reverse = false) => {
      const args = ['-c', `${POOL}.1`, '-p', String(port), '-t', String(seconds), '-O', '1', '-J'];
      if (reverse) args.push('-R');
      const result = await (ns[where] as Netns).exec('iperf3', args, { timeoutMs: (seconds + 15) * 1000 });
      assert.equal(result.code, 0, result.stdout + result.stderr);
      return (JSON.parse(result.stdout) as IperfResult).end.sum_received;
    };
    const scrape = async (): Promise<string> => {
      const result = await nsS.exec('curl', ['-sS', `http://127.0.0.1:${METRICS}/metrics`]);
      assert.equal(result.code, 0, result.stderr);
      return result.stdout;
    };
    const metric = (text: string, pattern: string): number => {
      const match = new RegExp(`^${pattern} (\\S+)$`, 'm').exec(text);
      assert.ok(match !== null, `no ${pattern} in\n${text}`);
      return Number(match[1]);
    };

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'facade-policy-'));
      await chmod(dir, 0o755);
      state = join(dir, 'state');
      users = join(dir, 'users.json');
      nsS = await Netns.create('ps');
      for (const where of ['A', 'B', 'C'] as const) {
        ns[where] = await Netns.create(`p${where.toLowerCase()}`);
        await createVethPair(nsS, ns[where] as Netns, {
          addrA: `${LINKS[where]}.1/24`,
          addrB: `${LINKS[where]}.2/24`,
        });
      }
      for (const user of USERS) {
        await writeFile(join(dir, `${user}.pw`), `pw-${user}\n`);
        await addUser(nsS, { users, tunnelPath: PATH, name: user, password: `pw-${user}` });
      }
      for (const [user, ...policy] of [
        ['ann', '--rate', '20mbit'],
        ['cat', '--quota', '3MB', '--quota-period', 'day'],
        ['dan', '--expires', '2020-01-01'],
      ]) {
        const set = await userCommand('set', user as string, ...policy);
        assert.equal(set.code, 0, set.stderr);
      }
      server = startFacade(nsS, [
        'server',
        '--listen',
        `0.0.0.0:${PORT}`,
        '--http-listen',
        '127.0.0.1:8080',
        '--pool',
        `${POOL}.0/24`,
        '--users',
        users,
        '--tunnel-path',
        PATH,
        '--state-dir',
        state,
        '--keepalive',
        '1',
        '--workers',
        String(workers),
        '--metrics',
        String(METRICS),
      ]);
      fingerprint = String(field(await server.waitFor(/self-signed certificate/), 'fingerprint'));
      await server.waitFor(/facade server ready/);
      for (const port of [5201, 5202])
        iperfServers.push(nsS.spawn('iperf3', ['-s', '-B', `${POOL}.1`, '-p', String(port)]));
      startClient('ann', 'A');
      startClient('bob', 'B');
      await addressOf(clients.ann as FacadeProcess);
      await addressOf(clients.bob as FacadeProcess);
    });

    after(async () => {
      for (const child of iperfServers) child.kill('SIGKILL');
      for (const client of Object.values(clients)) await client?.stop('SIGKILL');
      await server?.stop('SIGKILL');
      await nsS?.destroy();
      for (const where of Object.values(ns)) await where?.destroy();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("ann's 20 Mbit/s holds within 10 % each way while bob, at the same time, is not limited; metrics show both", async () => {
      const seconds = workers === 2 ? 4 : 3;
      const [annUp, bobUp] = await Promise.all([iperf('A', 5201, seconds), iperf('B', 5202, seconds)]);
      const scraped = await scrape();
      const annDown = await iperf('A', 5201, seconds, true);
      const mbit = (r: { bits_per_second: number }) => r.bits_per_second / 1e6;
      process.stderr.write(
        `# --workers ${workers}: ann (20mbit) up ${mbit(annUp).toFixed(1)}, down ${mbit(annDown).toFixed(1)} Mbit/s; bob (no limit) up ${mbit(bobUp).toFixed(0)} Mbit/s at the same time\n`,
      );
      for (const [what, result] of [
        ['up', annUp],
        ['down', annDown],
      ] as const)
        assert.ok(Math.abs(mbit(result) - 20) <= 2, `ann ${what}: ${mbit(result).toFixed(2)} Mbit/s`);
      assert.ok(mbit(bobUp) > 100, `bob: ${mbit(bobUp).toFixed(0)} Mbit/s`);

      // Scraped while both transfers ran: per-user bytes, sessions, logins, drops, pool, certificate.
      assert.equal(metric(scraped, 'facade_sessions'), 2);
      assert.ok(metric(scraped, 'facade_user_bytes_total\\{user="ann",direction="in"\\}') > 1_000_000);
      assert.ok(metric(scraped, 'facade_user_bytes_total\\{user="bob",direction="in"\\}') > 1_000_000);
      assert.ok(metric(scraped, 'facade_user_packets_total\\{user="bob",direction="out"\\}') > 0);
      assert.equal(metric(scraped, 'facade_logins_total\\{result="accepted"\\}'), 2);
      assert.ok(metric(scraped, 'facade_drops_total\\{reason="rate_limit"\\}') >= 0);
      assert.equal(metric(scraped, 'facade_pool_addresses\\{state="active"\\}'), 2);
      assert.ok(metric(scraped, 'facade_certificate_expiry_timestamp_seconds') > Date.now() / 1000);
      assert.ok(metric(scraped, 'facade_tun_batches_total') > 0);
      const process0 = workers === 2 ? 'worker0' : 'primary';
      assert.ok(
        metric(scraped, `facade_event_loop_delay_seconds\\{process="${process0}",stat="max"\\}`) >= 0,
      );
      // Never on the public site: there /metrics is the site's own 404.
      const site = await ns.A?.exec('curl', [
        '-sk',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        `https://${LINKS.A}.1:${PORT}/metrics`,
      ]);
      assert.equal(site?.stdout, '404');
    });

    test("a rate changed with `facade user set` applies to ann's running session within seconds", async () => {
      const set = await userCommand('set', 'ann', '--rate', '8mbit');
      assert.equal(set.code, 0, set.stderr);
      // The users file is re-read every 5 s, and the sessions checked every second.
      await new Promise((resolve) => setTimeout(resolve, 6_500));
      const annUp = await iperf('A', 5201, 3);
      const rate = annUp.bits_per_second / 1e6;
      process.stderr.write(`# --workers ${workers}: ann after set --rate 8mbit: ${rate.toFixed(1)} Mbit/s\n`);
      assert.ok(Math.abs(rate - 8) <= 0.8, `ann: ${rate.toFixed(2)} Mbit/s`);
      assert.equal((clients.ann as FacadeProcess).count(/tunnel closed/), 0, 'the session was not dropped');
    });

    test("cat's 3 MB quota ends her session at the quota with the reason, and her next login is refused", async () => {
      const cat = startClient('cat', 'C');
      await addressOf(cat);
      // More than the quota, offered as fast as it goes: the session ends under it.
      const upload = (ns.C as Netns).spawn('iperf3', ['-c', `${POOL}.1`, '-p', '5202', '-n', '20M']);
      const closed = await cat.waitFor(/tunnel closed/);
      upload.kill('SIGKILL');
      assert.match(String(field(closed, 'message')), /data quota of 3.0 MB a day used up; it renews at /);
      // The client tries again, is refused like a wrong password, and stops.
      await cat.waitFor(/did not accept the tunnel/, 15_000);
      assert.equal(await exited(cat), 1);
      const status = await run(process.execPath, [CLI, 'status', '--state-dir', state, '--json']);
      const usage = (JSON.parse(status.stdout) as { usage: Record<string, { quotaUsed: number }> }).usage;
      const used = usage.cat?.quotaUsed ?? 0;
      assert.ok(used >= 3_000_000 && used < 3_300_000, `cat used ${used} bytes of 3 MB`);
      // Workers report their login counts every second.
      let scraped = await scrape();
      for (let i = 0; i < 30 && metric(scraped, 'facade_logins_total\\{result="refused"\\}') < 1; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        scraped = await scrape();
      }
      assert.ok(metric(scraped, 'facade_logins_total\\{result="refused"\\}') >= 1);
      assert.doesNotMatch(scraped, /user="dan"/);
    });

    test('an expired user is refused at login; one that expires while connected is cut with the reason', async () => {
      const dan = startClient('dan', 'C');
      await dan.waitFor(/did not accept the tunnel/, 15_000);
      assert.equal(await exited(dan), 1);
      assert.equal(dan.count(/connected:/), 0);
      const scraped = await scrape();
      assert.doesNotMatch(scraped, /dan/, 'refused logins are never named');

      const set = await userCommand('set', 'bob', '--expires', new Date(Date.now() - 1000).toISOString());
      assert.equal(set.code, 0, set.stderr);
      const bob = clients.bob as FacadeProcess;
      const closed = await bob.waitFor(/tunnel closed/, 12_000);
      assert.match(String(field(closed, 'message')), /account expired at /);
      await bob.waitFor(/did not accept the tunnel/, 15_000);
      // ann's session went on through all of it.
      assert.equal((clients.ann as FacadeProcess).count(/tunnel closed/), 0);
      const ping = await (ns.A as Netns).exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', `${POOL}.1`]);
      assert.match(ping.stdout, / 0% packet loss/);
    });

    test('accounting survives a restart: usage.json is written at shutdown and `facade user list` shows it', async () => {
      await server.stop('SIGTERM');
      const listed = await run(process.execPath, [
        CLI,
        'user',
        'list',
        '--users',
        users,
        '--state-dir',
        state,
      ]);
      assert.equal(listed.code, 0, listed.stderr);
      const ann = /^ann\t.*today=(\S+) MB/m.exec(listed.stdout);
      assert.ok(ann !== null && Number(ann[1]) > 10, listed.stdout);
      assert.match(
        listed.stdout,
        /^cat\tquota=3\.0 MB\/day\ttoday=3\.\d MB\tmonth=3\.\d MB\tquota-used=3\.\d MB$/m,
      );
    });
  });
}
