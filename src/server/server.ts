// `facade server`, assembled: the composition root. It is the only place that knows every part; the parts
// know each other only through the small interfaces they declare (TunnelHost, Authenticate, TunLike).
//
// Steps, in order, each registering what it opened on one Disposer (closed in reverse on failure and on
// shutdown): state directory and users (cheap checks that fail fast) ─► address pool ─► certificate
// files (operator's or self-signed; no network) ─► TUN ─► ports 80 and 443 bound ─► root dropped
// (privileges.ts) ─► port 80 served ─► ACME ─► the data plane ─► port 443 served ─► timers.
//
// The data plane is one of two (the rest is the same):
//   --workers 1   engine and front (site + front door + acceptor) in this process, on a one-queue TUN;
//   --workers N   this process is the primary: a TUN with N queues and steering (net/tun-queues.ts), the
//                 leases for all (lease-service.ts), N worker processes forked after the drop, each with
//                 its own engine and front on its queue (worker.ts), and port 443 accepted here and
//                 handed to them in turn (workers.ts). Everything up to the drop is what needs root; nothing that answers the
// network (the site, TLS, ACME, port 80) starts before it (bound-port.ts). The public port is served last,
// so only when everything behind it works; a failure at any step leaves nothing open and rethrows the
// coded error (the command exits with its code).

import { readFile, writeFile } from 'node:fs/promises';
import { createServer, isIP } from 'node:net';
import { join } from 'node:path';
import { CertificateManager, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING } from '../certs/acme.js';
import { type CertificatePair, checkCertificatePair, ensureStateDir } from '../certs/cert-store.js';
import { ChallengeStore } from '../certs/challenges.js';
import { loadOrCreateSelfSigned } from '../certs/self-signed.js';
import type { ListenAddress, ServerConfig } from '../config/schema.js';
import { facadeError } from '../core/errors.js';
import { TUN_TX_QUEUE_PACKETS } from '../core/limits.js';
import type { Logger } from '../core/log.js';
import {
  type EngineCounters,
  type EngineStats,
  type PushedSettings,
  type SessionStatus,
  TunnelEngine,
} from '../engine/engine.js';
import { AddressPool } from '../engine/pool.js';
import { createFront } from '../front/front.js';
import { type HttpListener, startHttpListener } from '../front/http-listener.js';
import { SITE_DEFAULT_DIR } from '../front/site.js';
import { addAddress, setLinkUp, setMtu, setTxQueueLength } from '../net/ifconfig.js';
import { TunDevice, type TunStats } from '../net/tun.js';
import { TunQueues } from '../net/tun-queues.js';
import type { LoginCounters } from '../users/authenticator.js';
import { UsersFile } from '../users/users-file.js';
import type { QuotaState } from './accounting.js';
import { startAdminSocket } from './admin-socket.js';
import { BoundPort } from './bound-port.js';
import { Disposer } from './disposer.js';
import { engineSettings, frontSettings } from './engine-settings.js';
import { LeaseService } from './lease-service.js';
import { createMetricsRegistry, serveMetrics } from './metrics.js';
import { startNat } from './nat.js';
import { PolicyAgent } from './policy-agent.js';
import { dropPrivileges } from './privileges.js';
import { type EngineProcessMetrics, type EventLoopDelay, LoopDelayMonitor } from './process-metrics.js';
import { type StatusSnapshot, type WorkerStatus, writeStatusFile } from './status.js';
import { UsageService } from './usage-service.js';
import { WorkerSet } from './workers.js';

/** How often the users file is checked for changes (`facade user add` while the server runs). */
const USERS_RELOAD_MS = 5_000;
/** How often `<state-dir>/status.json` (read by `facade status`) is rewritten. */
const STATUS_WRITE_MS = 2_000;

export interface RunningServer {
  readonly port: number;
  /** 'sha256:…' of the served certificate when it is self-signed (what clients pin). */
  readonly fingerprint: string | undefined;
  readonly certificates: CertificateManager | undefined;
  /**
   * Settles with the error when the server had to stop on its own (its TUN failed); never on close(). By
   * then the sessions have ended and the server is closing everything; close() waits for that.
   */
  readonly failed: Promise<Error>;
  /** The snapshot `facade status` shows. */
  status(): StatusSnapshot;
  /**
   * Applies what can change while sessions run (SIGHUP with the re-read config): log level, pushed routes,
   * DNS and keepalive for new sessions, and the users file; names what else changed and needs a restart.
   */
  reload(next: ServerConfig): Promise<ReloadResult>;
  /** Closes everything, last opened first. Idempotent. */
  close(): Promise<void>;
}

export interface ReloadResult {
  /** Settings now in force (and `users` when the users file was re-read with changes). */
  readonly applied: string[];
  /** Settings that differ from the running ones and take effect only at the next start. */
  readonly needsRestart: string[];
}

/** The settings a reload applies; every other difference needs a restart. */
const LIVE_SETTINGS: ReadonlySet<keyof ServerConfig> = new Set([
  'logLevel',
  'routes',
  'dns',
  'dnsDomains',
  'keepaliveMs',
]);

export async function startServer(config: ServerConfig, logger: Logger): Promise<RunningServer> {
  const disposer = new Disposer(logger);
  try {
    return await assemble(config, logger, disposer);
  } catch (err) {
    await disposer.dispose();
    throw err;
  }
}

async function assemble(config: ServerConfig, logger: Logger, disposer: Disposer): Promise<RunningServer> {
  // --- state and users ------------------------------------------------------------------------------
  // The state directory holds leases, keys and status: 0700, also when it already existed wider.
  await ensureStateDir(config.stateDir);
  // Refuses a v1 file (USERS_FILE_V1) and one whose users were made for another tunnel path (USERS_FILE_REALM).
  const users = await UsersFile.load(config.users, { tunnelPath: config.tunnelPath });
  if (users.size === 0)
    logger.warn({ users: config.users }, 'the users file has no users: nobody can connect');
  if (users.permissionsWarning !== undefined) logger.warn(users.permissionsWarning);

  const pool = disposer.add(
    'address pool',
    new AddressPool({
      ipv4: config.pool,
      ipv6: config.pool6,
      statePath: join(config.stateDir, 'leases.json'),
      onSaveError: (err) => logger.warn({ err: err.message }, 'could not save address leases'),
    }),
    (p) => p.close(),
  );
  if (pool.loadWarning !== undefined) logger.warn(pool.loadWarning);
  const reserveStatics = (): void => {
    for (const user of users.list()) {
      if (user.staticIpv4 === undefined && user.staticIpv6 === undefined) continue;
      try {
        pool.reserveStatic(user.name, { staticIpv4: user.staticIpv4, staticIpv6: user.staticIpv6 });
      } catch (err) {
        logger.warn({ user: user.name, err: String(err) }, 'static address not reserved');
      }
    }
  };
  reserveStatics();

  // --- certificates (files only: ACME starts after the drop) -------------------------------------------
  const { fingerprint, certificates, challenges, ...loaded } = await loadCertificates(
    config,
    logger,
    disposer,
  );
  let tls = loaded.tls;

  // --- TUN: one queue, or one per worker with steering -----------------------------------------------
  const queues =
    config.workers > 1
      ? disposer.add(
          'TUN queues',
          TunQueues.open({
            name: config.tunName,
            queues: config.workers,
            vnetHdr: config.offload,
            maxAddresses: (pool.stats().size + 1) * (pool.ipv6Cidr === undefined ? 1 : 2),
          }),
          (q) => q.close(),
        )
      : undefined;
  const tun =
    queues === undefined
      ? disposer.add('TUN', TunDevice.open({ name: config.tunName, vnetHdr: config.offload }), (t) =>
          t.close(),
        )
      : undefined;
  const tunName = queues?.name ?? (tun as TunDevice).name;
  await setMtu(tunName, config.mtu);
  await setTxQueueLength(tunName, TUN_TX_QUEUE_PACKETS);
  await addAddress(tunName, `${pool.serverIpv4}/${pool.prefix4}`);
  if (pool.serverIpv6 !== undefined) await addAddress(tunName, `${pool.serverIpv6}/${pool.prefix6}`);
  await setLinkUp(tunName);
  // The server runs no `ip` command after this point (privileges.ts): every client is in the pool prefix,
  // the TUN's own kernel route; with workers, the steering map sends each address to its worker's queue.
  if (queues !== undefined && config.clientToClient) await forwardBetweenQueues(tunName, config, logger);
  // --nat: forwarding and facade's own nftables table, held by a root nft that outlives the drop (nat.ts).
  if (config.nat !== undefined) {
    const nat = await startNat({
      iface: config.nat.iface,
      pool4: pool.ipv4Cidr,
      pool6: pool.ipv6Cidr,
      tunName,
      mtu: config.mtu,
      logger,
    });
    disposer.add('NAT rules', nat, (n) => n.close());
  }

  // --- ports, bound as root and served after the drop ---------------------------------------------------
  const httpPort = await bindHttpPort(config, certificates !== undefined, logger, disposer);
  const sitePort = disposer.add(
    'website port',
    await listenOrFail('the website', config.listen, () =>
      BoundPort.bind(config.listen.host, config.listen.port),
    ),
    (p) => p.close(),
  );

  // --- root dropped: nothing below runs privileged ----------------------------------------------------
  await dropPrivileges({
    runAs: config.runAs,
    stateDir: config.stateDir,
    usersFile: config.users,
    siteDir: config.upstream === undefined ? (config.site ?? SITE_DEFAULT_DIR) : undefined,
    logger,
  });
  // Handing the users file over changed its ctime: read it again now, as the user, so that the reload
  // timer does not report a change nobody made.
  await users.reloadIfChanged();
  // Accounting and quotas (usage-service.ts): closed after the data plane (added before it), so the
  // sessions' last bytes are counted and saved.
  const usage = disposer.add(
    'usage accounting',
    await UsageService.load({ stateDir: config.stateDir, logger, users: () => users.list() }),
    (u) => u.close(),
  );

  // Port 80: ACME challenges and a redirect to HTTPS.
  if (httpPort !== undefined) {
    disposer.add(
      'port-80 listener',
      await startHttpListener({
        host: httpPort.where.host,
        port: httpPort.where.port,
        bound: httpPort.port.handOver(),
        challenges,
        logger,
        httpsPort: config.listen.port,
        defaultHost: config.domain,
      }),
      (listener: HttpListener) => listener.close(),
    );
  }
  if (certificates !== undefined) tls = await certificates.start();

  // The TUN failing under the engine (deleted, its namespace gone) stops the server on its own: during
  // start-up the failure is what startServer rejects with; once running, everything is closed and
  // `failed` tells the command, which exits non-zero.
  let fatal: Error | undefined;
  let running = false;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= disposer.dispose().then(() => logger.info('facade server stopped'));
    return closing;
  };
  let reportFailure: (err: Error) => void = () => undefined;
  const failed = new Promise<Error>((resolve) => {
    reportFailure = resolve;
  });
  const onFatal = (err: Error): void => {
    if (fatal !== undefined) return;
    fatal = err;
    reportFailure(err);
    if (running) void close();
  };
  const plane =
    queues === undefined
      ? await inProcessPlane(config, logger, disposer, { tun: tun as TunDevice, pool, users, tls, onFatal })
      : await workerPlane(config, logger, disposer, { queues, pool, tls, onFatal, usage });
  usage.start(plane);
  let servedCertificate = tls?.cert;
  const port = await plane.listen(sitePort.handOver());
  certificates?.on('certificate', (pair) => {
    plane.setCertificate(pair);
    servedCertificate = pair.cert;
    logger.info({ domain: config.domain }, 'renewed certificate in service');
  });

  // --- timers -----------------------------------------------------------------------------------------
  const usersTimer = setInterval(() => {
    users
      .reloadIfChanged()
      .then((changed) => {
        if (!changed) return;
        logger.info({ users: users.size }, 'users file reloaded');
        // Said again on every reload: a file made readable to others while we run is as bad as at start.
        if (users.permissionsWarning !== undefined) logger.warn(users.permissionsWarning);
        reserveStatics();
      })
      .catch((err: unknown) =>
        logger.warn({ err: String(err) }, 'users file not reloaded; keeping the users loaded before'),
      );
  }, USERS_RELOAD_MS);
  usersTimer.unref();
  disposer.defer('users reload timer', () => clearInterval(usersTimer));

  const listen = `${isIP(config.listen.host) === 6 ? `[${config.listen.host}]` : config.listen.host}:${port}`;
  const status = (): StatusSnapshot => ({
    pid: process.pid,
    updated: new Date().toISOString(),
    listen,
    tun: tunName,
    pool: pool.stats(),
    workers: plane.workers(),
    engine: plane.engineStats(),
    tunStats: plane.tunStats(),
    sessions: plane.sessions(),
    usage: usage.summaries(),
  });
  // A failure is said once, and again only after a write succeeded in between: not every 2 s.
  let statusFailing = false;
  const writeStatus = (): Promise<void> =>
    writeStatusFile(config.stateDir, status()).then(
      () => {
        if (statusFailing) logger.info('status.json is written again');
        statusFailing = false;
      },
      (err: unknown) => {
        if (!statusFailing)
          logger.warn(
            { err: err instanceof Error ? err.message : String(err) },
            'could not write status.json',
          );
        statusFailing = true;
      },
    );
  const statusTimer = setInterval(() => void writeStatus(), STATUS_WRITE_MS);
  statusTimer.unref();
  disposer.defer('status timer', () => clearInterval(statusTimer));
  void writeStatus();
  // `facade status` asks here (0600, in the state directory, made by the unprivileged user).
  disposer.add('admin socket', await startAdminSocket(config.stateDir, status), (admin) => admin.close());
  // --metrics: Prometheus on its own (loopback by default) listener, never on the site (metrics.ts).
  if (config.metrics !== undefined) {
    const primaryDelay = new LoopDelayMonitor();
    disposer.defer('event-loop monitor', () => primaryDelay.close());
    const registry = createMetricsRegistry({
      status,
      accounting: usage.accounting,
      logins: () => plane.logins(),
      loopDelays: () => [{ process: 'primary', delay: primaryDelay.read() }, ...plane.loopDelays()],
      certificate: () => servedCertificate,
    });
    const where = config.metrics;
    const metrics = await listenOrFail('the metrics listener', where, () => serveMetrics(registry, where));
    disposer.add('metrics listener', metrics.server, (server) => {
      server.closeAllConnections();
      server.close();
    });
    logger.info({ metrics: `${where.host}:${metrics.port}` }, 'Prometheus metrics at /metrics');
  }

  // SIGHUP's reload: the running settings, as far as a reload changed them.
  let current = config;
  const reload = async (next: ServerConfig): Promise<ReloadResult> => {
    const applied: string[] = [];
    const needsRestart: string[] = [];
    for (const key of Object.keys(next) as (keyof ServerConfig)[]) {
      if (JSON.stringify(current[key]) === JSON.stringify(next[key])) continue;
      (LIVE_SETTINGS.has(key) ? applied : needsRestart).push(key);
    }
    current = {
      ...current,
      logLevel: next.logLevel,
      routes: next.routes,
      dns: next.dns,
      dnsDomains: next.dnsDomains,
      keepaliveMs: next.keepaliveMs,
    };
    logger.level = current.logLevel;
    plane.reconfigure(
      {
        routes: current.routes,
        dns: current.dns,
        dnsDomains: current.dnsDomains,
        keepaliveMs: current.keepaliveMs,
      },
      current.logLevel,
    );
    if (await users.reloadIfChanged().catch(() => false)) {
      applied.push('users');
      reserveStatics();
    }
    return { applied, needsRestart };
  };

  logger.info(
    {
      listen,
      tun: tunName,
      workers: config.workers,
      serverAddress: pool.serverIpv4,
      pool: config.pool,
      pool6: config.pool6,
      tls:
        config.behindProxy !== undefined
          ? 'at the proxy'
          : config.plaintext
            ? 'none'
            : config.domain !== undefined
              ? 'acme'
              : fingerprint === undefined
                ? 'files'
                : 'self-signed',
    },
    'facade server ready',
  );

  // The TUN failed while the steps after it ran: start-up fails with that error (the caller disposes).
  if (fatal !== undefined) throw fatal;
  running = true;
  return {
    port,
    fingerprint,
    certificates,
    failed,
    status,
    reload,
    close,
  };
}

/** What serves port 443 and moves packets, whichever way it is built. */
interface DataPlane {
  /** Serves the bound site port; resolves with the port number. */
  listen(bound: { handle: unknown }): Promise<number>;
  setCertificate(pair: CertificatePair): void;
  sessions(): SessionStatus[];
  engineStats(): EngineStats;
  tunStats(): TunStats;
  workers(): WorkerStatus[] | undefined;
  /** A reload: pushed settings for new sessions, the log level (in workers too), the users file. */
  reconfigure(pushed: PushedSettings, logLevel: string): void;
  /** The one engine's cumulative counters (a single process); undefined with workers (they report). */
  localCounters(): EngineCounters | undefined;
  /** The accounting's quota decision, for every engine. */
  setQuota(state: QuotaState): void;
  /** Logins, summed over the engines' processes. */
  logins(): LoginCounters;
  /** Each worker's event-loop delay (none in a single process: the primary's is the engine's). */
  loopDelays(): { process: string; delay: EventLoopDelay }[];
}

/** --workers 1: the engine and the front in this process, on the one-queue TUN. */
async function inProcessPlane(
  config: ServerConfig,
  logger: Logger,
  disposer: Disposer,
  parts: {
    tun: TunDevice;
    pool: AddressPool;
    users: UsersFile;
    tls: CertificatePair | undefined;
    onFatal: (err: Error) => void;
  },
): Promise<DataPlane> {
  const { tun, pool, users } = parts;
  let policy: PolicyAgent | undefined;
  const logins: LoginCounters = { accepted: 0, refused: 0 };
  const engine = disposer.add(
    'tunnel engine',
    new TunnelEngine({
      tun,
      pool,
      logger,
      ...engineSettings(config),
      staticAddresses: (user) => users.get(user),
      onFatal: parts.onFatal,
      rateLimitOf: (user) => policy?.rateOf(user) ?? 0,
    }),
    (e) => e.close(),
  );
  policy = new PolicyAgent(engine, users, logger).start();
  disposer.defer('policy', () => policy?.close());
  const front = disposer.add(
    'website',
    await createFront(
      frontSettings(config, { tls: parts.tls, users, policy: () => policy, logins, host: engine, logger }),
    ),
    (f) => f.close(),
  );
  // Sessions end before the site closes: the site's close waits for every connection, tunnels included.
  disposer.defer('tunnel sessions', () => engine.close());
  return {
    listen: (bound) => front.listen(config.listen.host, config.listen.port, bound),
    setCertificate: (pair) => front.setCertificate(pair),
    sessions: () => engine.sessions(),
    engineStats: () => engine.stats,
    tunStats: () => tun.stats,
    workers: () => undefined,
    reconfigure: (pushed) => {
      engine.reconfigure(pushed);
      policy?.apply();
    },
    localCounters: () => engine.counters(),
    setQuota: (state) => policy?.setQuota(state.blocked, state.allowancesFor(`0:${process.pid}`)),
    logins: () => ({ ...logins }),
    loopDelays: () => [],
  };
}

/**
 * --workers N: the workers are forked (as the unprivileged user: root is gone by now) and port 443 is
 * accepted here and handed to them in turn (workers.ts).
 */
async function workerPlane(
  config: ServerConfig,
  logger: Logger,
  disposer: Disposer,
  parts: {
    queues: TunQueues;
    pool: AddressPool;
    tls: CertificatePair | undefined;
    onFatal: (err: Error) => void;
    usage: UsageService;
  },
): Promise<DataPlane> {
  const workers = new WorkerSet({
    onMetrics: (source, metrics: EngineProcessMetrics) => parts.usage.observe(source, metrics.counters),
    config,
    queues: parts.queues,
    leases: new LeaseService(parts.pool, parts.queues),
    tls: parts.tls,
    logger,
    onFatal: parts.onFatal,
  });
  disposer.add('workers', workers, (w) => w.close());
  await workers.start();
  const acceptor = createServer({ pauseOnConnect: true }, (socket) => workers.dispatch(socket));
  // Closing stops the accepting at once. Not waited for: the handed-over connections still count as
  // this server's in Node (its close callback would wait for them), but the workers own and end them.
  disposer.add('website port (primary)', acceptor, (server) => {
    server.close();
  });
  return {
    listen: (bound) =>
      new Promise<number>((resolve, reject) => {
        acceptor.once('error', reject);
        acceptor.listen(bound, () => {
          acceptor.off('error', reject);
          const address = acceptor.address();
          resolve(typeof address === 'object' && address !== null ? address.port : config.listen.port);
        });
      }),
    setCertificate: (pair) => workers.setCertificate(pair),
    sessions: () => workers.sessions(),
    engineStats: () => workers.engineStats(),
    tunStats: () => workers.tunStats(),
    workers: () => workers.workers(),
    reconfigure: (pushed, logLevel) => workers.reconfigure(pushed, logLevel),
    localCounters: () => undefined,
    setQuota: (state) => workers.setQuota(state),
    logins: () => {
      const total = { accepted: 0, refused: 0 };
      for (const { metrics } of workers.processMetrics()) {
        total.accepted += metrics.logins.accepted;
        total.refused += metrics.logins.refused;
      }
      return total;
    },
    loopDelays: () =>
      workers
        .processMetrics()
        .map(({ worker, metrics }) => ({ process: `worker${worker}`, delay: metrics.eventLoopDelay })),
  };
}

/**
 * Client-to-client with workers: a packet between clients of two workers leaves one worker's queue into
 * the kernel, which must route it back out of the same device (to the other worker's queue). IPv4
 * forwarding is a per-device switch, set on this device only; redirects are off (the kernel would tell
 * the client to talk to its peer "directly", which a tunnel cannot). IPv6 forwarding is host-wide: it is
 * not changed here, and the log says when IPv6 client-to-client needs it.
 */
async function forwardBetweenQueues(tunName: string, config: ServerConfig, logger: Logger): Promise<void> {
  const conf = `/proc/sys/net/ipv4/conf/${tunName}`;
  await writeFile(`${conf}/forwarding`, '1\n');
  await writeFile(`${conf}/send_redirects`, '0\n');
  if (config.pool6 === undefined) return;
  const v6 = await readFile('/proc/sys/net/ipv6/conf/all/forwarding', 'utf8').catch(() => '0');
  if (v6.trim() !== '1')
    logger.warn(
      'client-to-client over IPv6 between clients of different workers needs net.ipv6.conf.all.forwarding=1 (IPv4 works)',
    );
}

/**
 * The certificate to serve (none with --plaintext): the operator's files (read now, as root: they may be
 * root's only), or the self-signed one in the state directory; or, for ACME, the manager that gets one
 * once started (after the drop) and the challenge store it shares with the port-80 listener.
 */
async function loadCertificates(
  config: ServerConfig,
  logger: Logger,
  disposer: Disposer,
): Promise<{
  tls: CertificatePair | undefined;
  fingerprint: string | undefined;
  certificates: CertificateManager | undefined;
  challenges: ChallengeStore;
}> {
  const challenges = new ChallengeStore();
  if (config.behindProxy !== undefined) {
    logger.info(
      { listen: `${config.behindProxy.host}:${config.behindProxy.port}` },
      'behind a proxy: plain HTTP here, TLS ends at the proxy in front',
    );
    return { tls: undefined, fingerprint: undefined, certificates: undefined, challenges };
  }
  if (config.plaintext) {
    logger.warn(
      'PLAINTEXT MODE: no TLS. Everything, credentials included, crosses the network in clear. Debugging only.',
    );
    return { tls: undefined, fingerprint: undefined, certificates: undefined, challenges };
  }
  let tls: CertificatePair | undefined;
  let fingerprint: string | undefined;
  let certificates: CertificateManager | undefined;
  if (config.cert !== undefined && config.key !== undefined) {
    tls = await readPair(config.cert, config.key);
  } else if (config.domain !== undefined) {
    certificates = disposer.add(
      'certificate manager',
      new CertificateManager({
        domain: config.domain,
        email: config.email,
        directoryUrl:
          config.acmeDirectory ?? (config.acmeStaging ? LETS_ENCRYPT_STAGING : LETS_ENCRYPT_PRODUCTION),
        stateDir: config.stateDir,
        logger,
        challenges,
        // One retry inside an attempt: the manager's own backoff (minutes, doubling) handles the rest, and
        // a stopped CA then shows in the log within seconds, not after acme-client's 75 s of retries.
        requestRetries: 1,
      }),
      (c) => c.close(),
    );
  } else {
    // Only names asked for: never the machine's host name, which a scanner would read in the certificate.
    const wildcard = config.listen.host === '0.0.0.0' || config.listen.host === '::';
    const names =
      config.selfSignedNames.length > 0
        ? [...config.selfSignedNames]
        : [wildcard ? 'localhost' : config.listen.host];
    const selfSigned = await loadOrCreateSelfSigned(config.stateDir, { names });
    tls = selfSigned;
    fingerprint = selfSigned.fingerprint;
    logger.info(
      { fingerprint, names, created: selfSigned.created },
      `self-signed certificate; clients connect with --pin ${fingerprint}`,
    );
  }

  return { tls, fingerprint, certificates, challenges };
}

/**
 * Binds port 80 (ACME challenges and a redirect to HTTPS; none with --plaintext), to be served after the
 * drop. Required for ACME and when --http-listen names it; best effort otherwise (undefined, with a warning).
 */
async function bindHttpPort(
  config: ServerConfig,
  acme: boolean,
  logger: Logger,
  disposer: Disposer,
): Promise<{ where: ListenAddress; port: BoundPort } | undefined> {
  if (config.plaintext || config.behindProxy !== undefined) return undefined;
  const where = config.httpListen ?? { host: config.listen.host, port: 80 };
  try {
    const port = disposer.add(
      'port-80 socket',
      await listenOrFail('the plain-HTTP listener', where, () => BoundPort.bind(where.host, where.port)),
      (p) => p.close(),
    );
    return { where, port };
  } catch (err) {
    if (acme || config.httpListen !== undefined) throw err;
    logger.warn({ err: String(err) }, `no plain-HTTP redirect on ${where.host}:${where.port}`);
    return undefined;
  }
}

/** Binds a port; a refusal (taken, privileged, no such address) becomes FACADE_ERR_LISTEN with the reason. */
async function listenOrFail<T>(what: string, where: ListenAddress, bind: () => Promise<T>): Promise<T> {
  try {
    return await bind();
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    const address = `${isIP(where.host) === 6 ? `[${where.host}]` : where.host}:${where.port}`;
    const why =
      errno === 'EADDRINUSE'
        ? 'another process already listens there'
        : errno === 'EACCES'
          ? 'ports below 1024 need root or CAP_NET_BIND_SERVICE'
          : errno === 'EADDRNOTAVAIL'
            ? 'no interface of this machine has that address'
            : err instanceof Error
              ? err.message
              : String(err);
    throw facadeError('LISTEN', [address, what, errno === undefined ? why : `${errno}: ${why}`], {
      cause: err,
      ...(errno === undefined ? {} : { errno, syscall: 'listen' }),
    });
  }
}

/** The operator's --cert/--key, read and checked with cert-store's checks (PEM parses, key fits the leaf). */
async function readPair(certPath: string, keyPath: string): Promise<CertificatePair> {
  let pair: CertificatePair;
  try {
    pair = { cert: await readFile(certPath, 'utf8'), key: await readFile(keyPath, 'utf8') };
  } catch (err) {
    throw facadeError('CERT_LOAD', [
      `${certPath} / ${keyPath}`,
      err instanceof Error ? err.message : String(err),
    ]);
  }
  const checked = checkCertificatePair(pair, certPath);
  return { cert: checked.cert, key: checked.key };
}
