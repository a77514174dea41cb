// `facade server`: assembles the parts. The order matters: state and users first (cheap checks that fail
// fast with a clear message), then certificates, the TUN, the tunnel engine, and the website last, so the
// port opens only when everything behind it works.

import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { CertificateManager, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING } from '../certs/acme.js';
import { type CertificatePair, checkCertificatePair, ensureStateDir } from '../certs/cert-store.js';
import { loadOrCreateSelfSigned } from '../certs/self-signed.js';
import type { ServerConfig } from '../config/schema.js';
import { writeFileAtomic } from '../core/atomic-file.js';
import { facadeError } from '../core/errors.js';
import { TUN_TX_QUEUE_PACKETS } from '../core/limits.js';
import type { Logger } from '../core/log.js';
import { TunnelServer } from '../engine/engine.js';
import { AddressPool } from '../engine/pool.js';
import { createTunnelAcceptor } from '../front/acceptor.js';
import { installFrontDoor } from '../front/front-door.js';
import { ChallengeStore, type HttpListener, startHttpListener } from '../front/http-listener.js';
import { createSiteApp, SITE_DEFAULT_DIR } from '../front/site.js';
import { addAddress, setLinkUp, setMtu, setTxQueueLength } from '../net/ifconfig.js';
import { TunDevice } from '../net/tun.js';
import { UsersFile } from '../users/users-file.js';

/** How often the users file is checked for changes (`facade user add` while the server runs). */
const USERS_RELOAD_MS = 5_000;
/** How often `<state-dir>/status.json` (read by `facade status`) is rewritten. */
const STATUS_WRITE_MS = 2_000;

export interface RunningServer {
  readonly app: FastifyInstance;
  readonly tunnel: TunnelServer;
  readonly tun: TunDevice;
  readonly port: number;
  /** 'sha256:…' of the served certificate when it is self-signed (what clients pin). */
  readonly fingerprint: string | undefined;
  readonly certificates: CertificateManager | undefined;
  close(): Promise<void>;
}

export async function startServer(config: ServerConfig, logger: Logger): Promise<RunningServer> {
  // It holds leases, keys and status: 0700, also when it already existed wider.
  await ensureStateDir(config.stateDir);
  const users = await UsersFile.load(config.users);
  if (users.size === 0)
    logger.warn({ users: config.users }, 'the users file has no users: nobody can connect');
  if (users.permissionsWarning !== undefined) logger.warn(users.permissionsWarning);

  const pool = new AddressPool({
    ipv4: config.pool,
    ipv6: config.pool6,
    statePath: join(config.stateDir, 'leases.json'),
    onSaveError: (err) => logger.warn({ err: err.message }, 'could not save address leases'),
  });
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

  // --- certificates -----------------------------------------------------------------------------------
  let tls: CertificatePair | undefined;
  let fingerprint: string | undefined;
  let certificates: CertificateManager | undefined;
  let httpListener: HttpListener | undefined;
  const challenges = new ChallengeStore();
  if (config.plaintext) {
    logger.warn(
      'PLAINTEXT MODE: no TLS. Everything, credentials included, crosses the network in clear. Debugging only.',
    );
  } else if (config.cert !== undefined && config.key !== undefined) {
    tls = await readPair(config.cert, config.key);
  } else if (config.domain !== undefined) {
    certificates = new CertificateManager({
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
    });
  } else {
    const names = [hostname()];
    if (config.listen.host !== '0.0.0.0' && config.listen.host !== '::') names.unshift(config.listen.host);
    const selfSigned = await loadOrCreateSelfSigned(config.stateDir, { names });
    tls = selfSigned;
    fingerprint = selfSigned.fingerprint;
    logger.info(
      { fingerprint, names, created: selfSigned.created },
      `self-signed certificate; clients connect with --pin ${fingerprint}`,
    );
  }

  // Port 80: ACME challenges and a redirect to HTTPS. Required for ACME; best effort otherwise.
  if (!config.plaintext) {
    const where = config.httpListen ?? { host: config.listen.host, port: 80 };
    try {
      httpListener = await startHttpListener({
        host: where.host,
        port: where.port,
        challenges,
        logger,
        httpsPort: config.listen.port,
        defaultHost: config.domain,
      });
    } catch (err) {
      if (certificates !== undefined || config.httpListen !== undefined) throw err;
      logger.warn({ err: String(err) }, `no plain-HTTP redirect on ${where.host}:${where.port}`);
    }
  }
  if (certificates !== undefined) tls = await certificates.start();

  // --- TUN and the tunnel engine ----------------------------------------------------------------------
  const tun = TunDevice.open({ name: config.tunName, vnetHdr: config.offload });
  try {
    await setMtu(tun.name, config.mtu);
    await setTxQueueLength(tun.name, TUN_TX_QUEUE_PACKETS);
    await addAddress(tun.name, `${pool.serverIpv4}/${pool.prefix4}`);
    if (pool.serverIpv6 !== undefined) await addAddress(tun.name, `${pool.serverIpv6}/${pool.prefix6}`);
    await setLinkUp(tun.name);
  } catch (err) {
    tun.close();
    throw err;
  }
  const tunnel = new TunnelServer({
    tun,
    pool,
    logger,
    mtu: config.mtu,
    keepaliveMs: config.keepaliveMs,
    clientToClient: config.clientToClient,
    routes: config.routes,
    dns: config.dns,
  });

  // --- the website, with the front door in it ---------------------------------------------------------
  const app = createSiteApp({
    siteDir: config.site ?? SITE_DEFAULT_DIR,
    ...(config.upstream === undefined ? {} : { upstream: config.upstream }),
    ...(tls === undefined ? {} : { tls }),
  });
  await app.ready();
  const acceptor = createTunnelAcceptor({ users, tunnel, logger });
  installFrontDoor(app.server, tls === undefined ? 'connection' : 'secureConnection', {
    ...acceptor,
    tunnelPath: config.tunnelPath,
    onError: (err) => logger.error({ err: String(err) }, 'tunnel acceptor failed; connection closed'),
  });
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (err) {
    tunnel.close();
    tun.close();
    await httpListener?.close();
    throw err;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.listen.port;

  certificates?.on('certificate', (pair) => {
    // New connections get the new certificate; open ones (tunnels included) keep theirs.
    (app.server as unknown as { setSecureContext(o: CertificatePair): void }).setSecureContext(pair);
    logger.info({ domain: config.domain }, 'renewed certificate in service');
  });

  const usersTimer = setInterval(() => {
    users
      .reloadIfChanged()
      .then((changed) => {
        if (!changed) return;
        logger.info({ users: users.size }, 'users file reloaded');
        reserveStatics();
      })
      .catch((err: unknown) =>
        logger.warn({ err: String(err) }, 'users file not reloaded; keeping the users loaded before'),
      );
  }, USERS_RELOAD_MS);
  usersTimer.unref();
  const statusPath = join(config.stateDir, 'status.json');
  // Atomic: `facade status` may read it at any moment and must never see half a file.
  const writeStatus = (): Promise<void> =>
    writeFileAtomic(
      statusPath,
      `${JSON.stringify(
        {
          pid: process.pid,
          updated: new Date().toISOString(),
          listen: `${config.listen.host}:${port}`,
          tun: tun.name,
          pool: pool.stats(),
          engine: tunnel.stats,
          tunStats: tun.stats,
          sessions: tunnel.describeSessions(),
        },
        null,
        2,
      )}\n`,
    ).catch(() => undefined);
  const statusTimer = setInterval(() => void writeStatus(), STATUS_WRITE_MS);
  statusTimer.unref();
  void writeStatus();

  logger.info(
    {
      listen: `${isIP(config.listen.host) === 6 ? `[${config.listen.host}]` : config.listen.host}:${port}`,
      tun: tun.name,
      serverAddress: pool.serverIpv4,
      pool: config.pool,
      pool6: config.pool6,
      tls: config.plaintext
        ? 'none'
        : config.domain !== undefined
          ? 'acme'
          : fingerprint === undefined
            ? 'files'
            : 'self-signed',
    },
    'facade server ready',
  );

  let closing: Promise<void> | undefined;
  return {
    app,
    tunnel,
    tun,
    port,
    fingerprint,
    certificates,
    close: () => {
      closing ??= (async () => {
        clearInterval(usersTimer);
        clearInterval(statusTimer);
        certificates?.close();
        acceptor.close();
        tunnel.close();
        await app.close();
        await httpListener?.close();
        tun.close();
        await pool.close();
        logger.info('facade server stopped');
      })();
      return closing;
    },
  };
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
