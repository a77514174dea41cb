// One worker process of `facade server --workers N`: its own event loop, TLS sockets, tunnel engine and
// queue of the multi-queue TUN. The primary (workers.ts) forked it after dropping root, so it never had
// a privilege; it inherited its queue's fd at WORKER_QUEUE_FD and receives accepted TCP connections over
// IPC. It serves the site and the front door on them exactly as a single-process server does.
//
//   primary: accept ─IPC─► worker: front (site, front door, acceptor) ─► engine ─► its TUN queue
//   kernel ─► steering map (destination → queue) ─► this worker's queue ─► engine ─► session
//
// Leases come from the primary (RemoteLeases); status goes to it every STATUS_PUSH_MS. When the IPC
// channel closes (the primary died) the worker exits at once: its sessions cannot outlive the server.

import type { Socket } from 'node:net';
import { facadeError, isFacadeError } from '../core/errors.js';
import { MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS } from '../core/limits.js';
import { createLogger, type Logger } from '../core/log.js';
import { TunnelEngine } from '../engine/engine.js';
import type { Lease, StaticAddressRequest } from '../engine/pool.js';
import { createFront, type Front } from '../front/front.js';
import { TunDevice } from '../net/tun.js';
import type { LoginCounters } from '../users/authenticator.js';
import { UsersFile } from '../users/users-file.js';
import { engineSettings, frontSettings } from './engine-settings.js';
import { PolicyAgent } from './policy-agent.js';
import { LoopDelayMonitor } from './process-metrics.js';
import { type FromWorker, type ToWorker, WORKER_QUEUE_FD } from './worker-messages.js';

const STATUS_PUSH_MS = 1_000;
const STATUS_CHANGE_MS = 100;
const USERS_RELOAD_MS = 5_000;

function send(message: FromWorker): void {
  if (process.connected) process.send?.(message);
}

/** The engine's leases, asked of the primary's lease service (the pool's shape comes with init). */
class RemoteLeases {
  readonly #pending = new Map<number, { resolve: (lease: Lease) => void; reject: (err: Error) => void }>();
  #next = 1;

  lease(user: string, request: StaticAddressRequest): Promise<Lease> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      send({ t: 'lease', id, user, request });
    });
  }

  answer(id: number, lease: Lease | undefined, error: string | undefined): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    if (lease !== undefined) pending.resolve(lease);
    else pending.reject(facadeError('POOL_EXHAUSTED', [error ?? 'no answer']));
  }

  release(user: string, lease: Lease): void {
    send({ t: 'release', user, generation: lease.generation });
  }
}

export async function runWorker(): Promise<void> {
  const init = await new Promise<Extract<ToWorker, { t: 'init' }>>((resolve) => {
    const onMessage = (message: ToWorker): void => {
      if (message.t !== 'init') return;
      process.off('message', onMessage);
      resolve(message);
    };
    process.on('message', onMessage);
  });
  const { config } = init;
  const logger: Logger = createLogger({ level: config.logLevel, format: config.logFormat }).child({
    worker: init.worker,
  });
  // The primary gone means the server is gone: no session may outlive it.
  process.on('disconnect', () => process.exit(0));

  const users = await UsersFile.load(config.users, { tunnelPath: config.tunnelPath });
  const tun = TunDevice.fromFd(WORKER_QUEUE_FD, { name: init.tunName, vnetHdr: init.vnetHdr });
  const leases = new RemoteLeases();
  // The user's rate, expiry and quota (policy-agent.ts), read from the users file this worker loads.
  let policy: PolicyAgent | undefined;
  const logins: LoginCounters = { accepted: 0, refused: 0 };
  const loopDelay = new LoopDelayMonitor();
  const engine = new TunnelEngine({
    tun,
    pool: {
      ...init.pool,
      lease: (user, request) => leases.lease(user, request),
      release: (user, lease) => leases.release(user, lease),
    },
    logger,
    ...engineSettings(config),
    staticAddresses: (user) => users.get(user),
    rateLimitOf: (user) => policy?.rateOf(user) ?? 0,
    onFatal: (err) => {
      send({ t: 'fatal', message: err.message, code: isFacadeError(err) ? err.code : undefined });
      process.exitCode = 1;
    },
  });
  const front: Front = await createFront({
    ...frontSettings(config, { tls: init.tls, users, policy: () => policy, logins, host: engine, logger }),
    // The primary hands connections out in turn, so each worker sees about 1/N of any one address's
    // connections: 1/N of each limit per worker keeps the server's totals what one process would allow.
    maxConnections: Math.ceil(MAX_CONNECTIONS / config.workers),
    maxConnectionsPerAddress: Math.ceil(MAX_CONNECTIONS_PER_ADDRESS / config.workers),
  });

  // Every second (the counters), and within STATUS_CHANGE_MS of a session starting or ending, so that the
  // primary's status.json is as fresh as a single process's.
  policy = new PolicyAgent(engine, users, logger).start();
  let reported = -1;
  let lastPush = 0;
  const pushStatus = (): void => {
    reported = engine.changes;
    lastPush = Date.now();
    send({
      t: 'status',
      engine: engine.stats,
      tunStats: tun.stats,
      sessions: engine.sessions(),
      metrics: { counters: engine.counters(), logins: { ...logins }, eventLoopDelay: loopDelay.read() },
    });
  };
  const statusTimer = setInterval(() => {
    if (engine.changes !== reported || Date.now() - lastPush >= STATUS_PUSH_MS) pushStatus();
  }, STATUS_CHANGE_MS);
  const usersTimer = setInterval(() => {
    users.reloadIfChanged().catch((err: unknown) => {
      logger.warn({ err: String(err) }, 'users file not reloaded; keeping the users loaded before');
    });
  }, USERS_RELOAD_MS);

  let closing = false;
  const close = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    clearInterval(statusTimer);
    clearInterval(usersTimer);
    policy?.close();
    engine.close();
    // The sessions' last bytes, for the primary's accounting.
    pushStatus();
    loopDelay.close();
    await front.close();
    tun.close();
    process.disconnect?.();
  };

  process.on('message', (message: ToWorker, handle: unknown) => {
    switch (message.t) {
      case 'connection':
        if (closing) (handle as Socket | undefined)?.destroy();
        else if (handle !== undefined) front.accept(handle as Socket);
        return;
      case 'lease':
        leases.answer(message.id, message.lease, message.error);
        return;
      case 'certificate':
        front.setCertificate(message);
        return;
      case 'replaced':
        engine.closeUser(message.user);
        return;
      case 'reload':
        engine.reconfigure(message.pushed);
        logger.level = message.logLevel;
        users
          .reloadIfChanged()
          .catch(() => undefined)
          .then(() => policy?.apply());
        return;
      case 'quota':
        policy?.setQuota(
          new Set(message.blocked),
          new Map(message.allowances.map(([user, limit, text]) => [user, { limit, message: text }])),
        );
        return;
      case 'close':
        void close();
        return;
      default:
        return;
    }
  });
  pushStatus();
  send({ t: 'ready' });
}
