// CertificateManager against a real ACME server (pebble) with real HTTP-01 validation, inside a network
// namespace made here. The server side runs in a child node process inside the namespace
// (test/helpers/acme-child.ts), trusting pebble's listener through NODE_EXTRA_CA_CERTS like the real
// server would. The HTTP listener's own behaviour (redirects, tokens) is tested on loopback at the end.

import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { CertificateManager } from '../../src/certs/acme.js';
import { saveCertificatePair } from '../../src/certs/cert-store.js';
import { ChallengeStore } from '../../src/certs/challenges.js';
import type { Logger } from '../../src/core/log.js';
import { startHttpListener } from '../../src/front/http-listener.js';
import type { AcmeChildConfig, PeerAnswer } from '../helpers/acme-child.js';
import { Pebble, pebbleSkipReason } from '../helpers/acme-pebble.js';
import { Netns, netnsSkipReason, uniqueName } from '../helpers/netns.js';

const SERVER_ADDRESS = '198.18.0.1';
const HTTP_PORT = 80;
const HTTPS_PORT = 443;
const CHILD_SCRIPT = fileURLToPath(new URL('../helpers/acme-child.js', import.meta.url));

/** A command answered by the child; rejects with the child's coded error. */
interface ChildError extends Error {
  code?: string;
}

/** The server process inside the namespace, driven over stdin/stdout; its pino lines are kept. */
class ServerChild {
  readonly process: ChildProcess;
  readonly logLines: Record<string, unknown>[] = [];
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #nextId = 1;
  #stderrText = '';

  constructor(ns: Netns, config: AcmeChildConfig, extraCaPath: string) {
    this.process = ns.spawn(process.execPath, [CHILD_SCRIPT, JSON.stringify(config)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NODE_EXTRA_CA_CERTS: extraCaPath },
    });
    createInterface({ input: this.process.stdout! }).on('line', (line) => {
      const answer = JSON.parse(line) as {
        id: number;
        ok: boolean;
        result?: unknown;
        error?: { code?: string; message: string };
      };
      const waiter = this.#pending.get(answer.id);
      this.#pending.delete(answer.id);
      if (answer.ok) waiter?.resolve(answer.result);
      else {
        const err: ChildError = new Error(answer.error!.message);
        if (answer.error!.code !== undefined) err.code = answer.error!.code;
        waiter?.reject(err);
      }
    });
    createInterface({ input: this.process.stderr! }).on('line', (line) => {
      try {
        this.logLines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        this.#stderrText += `${line}\n`;
      }
    });
    this.process.once('exit', (code, signal) => {
      for (const waiter of this.#pending.values()) {
        waiter.reject(new Error(`server child exited (${code ?? signal}):\n${this.#stderrText}`));
      }
      this.#pending.clear();
    });
  }

  call<T>(cmd: string): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.process.stdin!.write(`${JSON.stringify({ id, cmd })}\n`);
    });
  }

  async stop(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.process.once('exit', () => resolve()));
    await this.call('exit').catch(() => {});
    this.process.stdin!.end();
    await exited;
  }

  /** Debug and info lines of acme-client and the manager, for failure messages. */
  logText(): string {
    return this.logLines.map((line) => JSON.stringify(line)).join('\n');
  }
}

/**
 * `after` does not run when the run is interrupted; netns.ts deletes the namespace (and kills what it
 * spawned) then, and this removes /etc/netns/NS, which is ours.
 */
function removeOnInterrupt(path: string): void {
  const remove = () => rmSync(path, { recursive: true, force: true });
  process.once('exit', remove);
  process.once('SIGINT', remove);
  process.once('SIGTERM', remove);
}

const skipReason = netnsSkipReason() ?? pebbleSkipReason();

describe('ACME certificates from pebble with HTTP-01', { skip: skipReason ?? false }, () => {
  let ns: Netns;
  let workDir: string;
  let netnsEtcDir: string | undefined;
  let pebble: Pebble;
  let domain: string;
  let stateDir: string;
  let rootPath: string;
  let childConfig: AcmeChildConfig;
  const children: ServerChild[] = [];

  // Shared by the steps below, which build on each other (issue, renew, restart, CA down).
  let issuedSerial: string;
  let renewedSerial: string;

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'facade-acme-'));
    ns = await Netns.create('acme');
    // acme-client checks the challenge itself before asking the CA, so the name must resolve here too;
    // `ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts.
    domain = `vpn-${uniqueName('a')}.test`;
    netnsEtcDir = join('/etc/netns', ns.name);
    await mkdir(netnsEtcDir, { recursive: true });
    removeOnInterrupt(netnsEtcDir);
    await writeFile(join(netnsEtcDir, 'hosts'), `127.0.0.1 localhost\n${SERVER_ADDRESS} ${domain}\n`);
    await ns.ip(['addr', 'add', `${SERVER_ADDRESS}/32`, 'dev', 'lo']);

    pebble = new Pebble(ns, { dir: workDir, serverAddress: SERVER_ADDRESS, httpPort: HTTP_PORT });
    await pebble.prepare();
    await pebble.start();
    rootPath = join(workDir, 'pebble-root.pem');
    await pebble.fetchRoot(rootPath);

    stateDir = join(workDir, 'state');
    childConfig = {
      domain,
      directoryUrl: pebble.directoryUrl,
      stateDir,
      address: SERVER_ADDRESS,
      httpsPort: HTTPS_PORT,
      httpPort: HTTP_PORT,
      rootPath,
      // Long enough that no automatic retry runs while a step looks at the state.
      retry: { initialMs: 120_000, maxMs: 3_600_000 },
    };
  });

  after(async () => {
    for (const child of children) await child.stop().catch(() => {});
    await pebble?.close().catch(() => {});
    await ns?.destroy();
    if (netnsEtcDir !== undefined) await rm(netnsEtcDir, { recursive: true, force: true });
    if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
  });

  function startChild(overrides: Partial<AcmeChildConfig> = {}): ServerChild {
    const child = new ServerChild(ns, { ...childConfig, ...overrides }, pebble.listenerCertPath);
    children.push(child);
    return child;
  }

  test('issues a certificate over real HTTP-01 and serves a chain that verifies against pebble’s root', async (t) => {
    const child = startChild();
    let started: { durationMs: number; serial: string };
    try {
      started = await child.call('start');
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${child.logText()}\n${pebble.output}`);
    }
    issuedSerial = started.serial;
    t.diagnostic(`issuance against pebble took ${started.durationMs} ms`);

    // pebble validated over HTTP-01 for real: its VA fetched the token from our listener.
    const answered = child.logLines.filter((l) => l.msg === 'answered ACME HTTP-01 challenge');
    t.diagnostic(`HTTP-01 answered to: ${answered.map((l) => l.userAgent).join(', ')}`);
    // Its own check first (acme-client), then pebble's validation authority, over real HTTP.
    assert.ok(
      answered.some((l) => /Pebble-VA/.test(String(l.userAgent))),
      `pebble did not fetch the HTTP-01 token:\n${child.logText()}`,
    );
    const status = await child.call<{ nextRenewalAt: string }>('status');
    const issued = child.logLines.find((l) => l.msg === 'certificate issued')!;
    const notBefore = Date.parse(String(issued.notBefore));
    const notAfter = Date.parse(String(issued.notAfter));
    t.diagnostic(
      `pebble certificate ${issued.notBefore} .. ${issued.notAfter}, renewal at ${status.nextRenewalAt}`,
    );
    // Renewal at two thirds of the lifetime (to the millisecond, up to rounding).
    assert.ok(
      Math.abs(Date.parse(status.nextRenewalAt) - (notBefore + ((notAfter - notBefore) * 2) / 3)) <= 1,
    );

    assert.equal((await stat(stateDir)).mode & 0o777, 0o700);
    const files = await readdir(stateDir);
    assert.deepEqual(
      files.sort(),
      [
        'acme-account.key.pem',
        `acme-${domain}.crt.pem`,
        `acme-${domain}.json`,
        `acme-${domain}.key.pem`,
      ].sort(),
    );
    for (const file of files) assert.equal((await stat(join(stateDir, file))).mode & 0o777, 0o600, file);

    // An independent client: openssl, trusting only pebble's root, checking the name.
    const verify = await ns.exec('sh', [
      '-c',
      `openssl s_client -connect ${SERVER_ADDRESS}:${HTTPS_PORT} -servername ${domain} -verify_hostname ${domain} -verify_return_error -CAfile ${rootPath} </dev/null`,
    ]);
    assert.equal(verify.code, 0, `openssl s_client failed:\n${verify.stdout}\n${verify.stderr}`);
    assert.match(verify.stdout, /Verify return code: 0 \(ok\)/);

    const fresh = await child.call<PeerAnswer>('freshRequest');
    assert.equal(fresh.authorized, true);
    assert.equal(fresh.serial, issuedSerial);
  });

  test('renewNow() swaps the served certificate; an open TLS connection keeps working', async () => {
    assert.ok(issuedSerial, 'needs the issuance step');
    const child = children[0]!;
    // pebble's certificates last 5 years: a renewal delay beyond setTimeout's 2^31-1 ms must not fire early.
    assert.equal(child.logLines.filter((l) => l.msg === 'ordering a certificate').length, 1);
    const before = await child.call<PeerAnswer>('keepAliveRequest');
    assert.equal(before.serial, issuedSerial);

    const renewed = await child.call<{ serial: string }>('renew');
    renewedSerial = renewed.serial;
    assert.notEqual(renewedSerial, issuedSerial);

    // The connection opened before the swap: still the same socket, still answering, old certificate.
    const afterSwap = await child.call<PeerAnswer>('keepAliveRequest');
    assert.equal(afterSwap.sameConnection, true);
    assert.equal(afterSwap.serial, issuedSerial);
    assert.notEqual(afterSwap.body, before.body);

    // A new connection gets the new certificate, verified against pebble's root.
    const fresh = await child.call<PeerAnswer>('freshRequest');
    assert.equal(fresh.authorized, true);
    assert.equal(fresh.serial, renewedSerial);
    await child.stop();
  });

  test('a restart with a valid stored certificate needs no CA', async () => {
    assert.ok(renewedSerial, 'needs the renewal step');
    // With pebble gone, any CA contact would fail: start() can only succeed from the state directory.
    await pebble.stop();
    const child = startChild({ requestRetries: 0 });
    const started = await child.call<{ serial: string }>('start');
    assert.equal(started.serial, renewedSerial);
    assert.ok(child.logLines.some((l) => l.msg === 'using the stored certificate'));
    assert.ok(!child.logLines.some((l) => l.msg === 'ordering a certificate'));
    const fresh = await child.call<PeerAnswer>('freshRequest');
    assert.equal(fresh.serial, renewedSerial);
  });

  test('CA unreachable at renewal: renewNow() rejects, the old certificate serves, the log says why and when', async (t) => {
    const child = children[1]!;
    assert.ok(child, 'needs the restart step');
    const askedAt = Date.now();
    await assert.rejects(child.call('renew'), (err: ChildError) => {
      assert.equal(err.code, 'FACADE_ERR_ACME_ORDER');
      assert.match(err.message, /ECONNREFUSED/);
      return true;
    });

    const warning = child.logLines.find((l) => l.level === 40 && String(l.msg).includes('renewal failed'));
    assert.ok(warning, `no warn line:\n${child.logText()}`);
    assert.match(String(warning.reason), /ECONNREFUSED/);
    const nextAttemptAt = Date.parse(String(warning.nextAttemptAt));
    // The first retry comes after retry.initialMs (120 s), measured from when renewal was asked.
    assert.ok(nextAttemptAt >= askedAt + 120_000, `next try ${warning.nextAttemptAt} is too early`);
    assert.ok(nextAttemptAt <= Date.now() + 120_000, `next try ${warning.nextAttemptAt} is too late`);
    assert.match(String(warning.msg), new RegExp(String(warning.nextAttemptAt)));
    t.diagnostic(`warn line: ${String(warning.msg)}`);

    const status = await child.call<{ serial: string; nextRenewalAt: string }>('status');
    assert.equal(status.serial, renewedSerial);
    assert.equal(Date.parse(status.nextRenewalAt), nextAttemptAt);
    const fresh = await child.call<PeerAnswer>('freshRequest');
    assert.equal(fresh.authorized, true);
    assert.equal(fresh.serial, renewedSerial);
  });
});

interface PlainAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function plainGet(port: number, path: string, headers: Record<string, string> = {}): Promise<PlainAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

test('plain-HTTP listener: 301 to https keeping path and query, tokens being validated answered', async (t) => {
  const challenges = new ChallengeStore();
  const listener = await startHttpListener({
    host: '127.0.0.1',
    port: 0,
    challenges,
    logger: pino({ level: 'silent' }),
  });
  t.after(() => listener.close());
  const { port } = listener.address();

  const redirect = await plainGet(port, '/some/page?x=1&y=%20', { host: `vpn.example.test:${port}` });
  assert.equal(redirect.status, 301);
  assert.equal(redirect.headers.location, 'https://vpn.example.test/some/page?x=1&y=%20');

  const v6 = await plainGet(port, '/', { host: '[fd00::1]:8080' });
  assert.equal(v6.headers.location, 'https://[fd00::1]/');

  const badHost = await plainGet(port, '/', { host: 'evil.test/\\@x' });
  assert.equal(badHost.status, 400);

  challenges.set('tok_en-1', 'tok_en-1.thumbprint');
  const served = await plainGet(port, '/.well-known/acme-challenge/tok_en-1', { host: 'vpn.example.test' });
  assert.equal(served.status, 200);
  assert.equal(served.body, 'tok_en-1.thumbprint');

  // Any other token is redirected like every other path, as on a plain redirect server (test/probe).
  const unknown = await plainGet(port, '/.well-known/acme-challenge/other', { host: 'vpn.example.test' });
  assert.equal(unknown.status, 301);
  assert.equal(unknown.headers.location, 'https://vpn.example.test/.well-known/acme-challenge/other');

  challenges.delete('tok_en-1');
  const removed = await plainGet(port, '/.well-known/acme-challenge/tok_en-1', { host: 'vpn.example.test' });
  assert.equal(removed.status, 301);

  // An HTTPS listener on another port shows in the redirect.
  const other = await startHttpListener({
    host: '127.0.0.1',
    port: 0,
    challenges,
    logger: pino({ level: 'silent' }),
    httpsPort: 8443,
  });
  t.after(() => other.close());
  const withPort = await plainGet(other.address().port, '/a', { host: 'vpn.example.test' });
  assert.equal(withPort.headers.location, 'https://vpn.example.test:8443/a');
});

/** A certificate for `domain` made by openssl, valid from now for `days`. */
function makeCertificate(dir: string, domain: string, days: number): { cert: string; key: string } {
  const certPath = join(dir, `${domain}-${days}.crt`);
  const keyPath = join(dir, `${domain}-${days}.key`);
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', String(days)]
      .concat(['-subj', `/CN=${domain}`, '-addext', `subjectAltName=DNS:${domain}`])
      .concat(['-keyout', keyPath, '-out', certPath]),
    { stdio: 'pipe' },
  );
  return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
}

/** pino writing JSON lines into an array. */
function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

const opensslSkip = pebbleSkipReason()?.includes('openssl') ? 'openssl is missing' : false;

describe('renewal scheduling from a stored certificate (no CA reachable)', { skip: opensslSkip }, () => {
  const domain = 'vpn.example.test';
  // Nothing listens on port 1 of loopback: any CA contact fails at once with ECONNREFUSED.
  const closedDirectory = 'https://127.0.0.1:1/dir';
  let dir: string;
  const managers: CertificateManager[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-acme-sched-'));
  });
  after(async () => {
    for (const manager of managers) manager.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function storedState(name: string, days: number): Promise<string> {
    const stateDir = join(dir, name);
    await saveCertificatePair(stateDir, `acme-${domain}`, makeCertificate(dir, domain, days));
    await writeFile(join(stateDir, `acme-${domain}.json`), JSON.stringify({ directoryUrl: closedDirectory }));
    return stateDir;
  }

  test('a far renewal date (beyond 2^31-1 ms) is scheduled, not fired at once', async () => {
    const stateDir = await storedState('far', 3650);
    const { logger, lines } = capturingLogger();
    const manager = new CertificateManager({
      domain,
      directoryUrl: closedDirectory,
      stateDir,
      logger,
      challenges: new ChallengeStore(),
      requestRetries: 0,
    });
    managers.push(manager);
    const pair = await manager.start();
    assert.match(pair.cert, /BEGIN CERTIFICATE/);
    const { notBefore, notAfter } = manager.current()!.validity;
    const expected = notBefore.getTime() + ((notAfter.getTime() - notBefore.getTime()) * 2) / 3;
    assert.equal(manager.nextRenewalAt()!.getTime(), expected);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(!lines.some((l) => l.msg === 'ordering a certificate'), 'a renewal started early');
    manager.close();
    assert.equal(manager.nextRenewalAt(), undefined);
    manager.close();
  });

  test('past its renewal point: start() serves the stored one, the failed renewal retries with backoff', async () => {
    const stateDir = await storedState('due', 3);
    const { logger, lines } = capturingLogger();
    // Two and a half days later: past two thirds of a three-day lifetime, not expired.
    const skew = 2.5 * 24 * 3600_000;
    const manager = new CertificateManager({
      domain,
      directoryUrl: closedDirectory,
      stateDir,
      logger,
      challenges: new ChallengeStore(),
      requestRetries: 0,
      retry: { initialMs: 60_000, maxMs: 100_000 },
      now: () => Date.now() + skew,
    });
    managers.push(manager);
    const stored = await manager.start();
    assert.equal(stored.cert, manager.current()!.cert);

    const deadline = Date.now() + 10_000;
    while (!lines.some((l) => l.level === 40) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const warning = lines.find((l) => l.level === 40);
    assert.ok(warning, 'no warn line after the background renewal');
    assert.match(String(warning.reason), /ECONNREFUSED/);
    assert.equal(warning.failures, 1);
    const firstRetry = manager.nextRenewalAt()!.getTime() - (Date.now() + skew);
    assert.ok(firstRetry > 50_000 && firstRetry <= 60_000, `first retry in ${firstRetry} ms`);

    // The next failure doubles the wait (120 s), capped at maxMs (100 s); the certificate stays.
    await assert.rejects(manager.renewNow(), { code: 'FACADE_ERR_ACME_ORDER' });
    const secondRetry = manager.nextRenewalAt()!.getTime() - (Date.now() + skew);
    assert.ok(secondRetry > 90_000 && secondRetry <= 100_000, `second retry in ${secondRetry} ms`);
    assert.equal(manager.current()!.cert, stored.cert);
  });
});
