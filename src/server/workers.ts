// The primary's side of `facade server --workers N`: it forks the workers, gives each its TUN queue and
// the connections it accepts, answers their lease requests, restarts one that crashed, and stops them.
//
//   port 443 ─► primary: accept (never reads) ─ round robin ─IPC handle─► worker i ─► its queue i
//
// Why processes and not threads: a Node socket cannot move between worker threads, and a crash (a
// native one included) must cost only its own sessions. Why the primary accepts: Node 20 has no
// SO_REUSEPORT, and a connection handed over before its first byte costs the primary nothing it must
// parse; the TLS handshake and everything after run in the worker.
//
// A worker that exits on its own has crashed: its leases are released (its clients reconnect, to any
// worker, and keep their addresses for the grace period), and it is forked again on the same queue after
// a pause that doubles while it keeps crashing. Its queue stays attached meanwhile (the primary holds
// the fd), so the queue numbering never shifts.

import { type ChildProcess, fork } from 'node:child_process';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { ServerConfig } from '../config/schema.js';
import { facadeError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { type EngineStats, type PushedSettings, poolShape, type SessionStatus } from '../engine/engine.js';
import { emptyTunStats, type TunStats } from '../net/tun.js';
import type { TunQueues } from '../net/tun-queues.js';
import type { QuotaState } from './accounting.js';
import type { LeaseService } from './lease-service.js';
import type { EngineProcessMetrics } from './process-metrics.js';
import type { FromWorker, ToWorker } from './worker-messages.js';

const WORKER_MAIN = fileURLToPath(new URL('./worker-main.js', import.meta.url));
/** First pause before a crashed worker is forked again; doubles while it keeps crashing, up to the max. */
const RESTART_DELAY_MS = 250;
const RESTART_DELAY_MAX_MS = 30_000;
/** A worker that ran this long before it crashed starts again after the first pause. */
const STABLE_AFTER_MS = 30_000;
/** How long a worker has to start (ready) and to stop (exit) before it is killed. */
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 8_000;

export interface WorkerSetOptions {
  readonly config: ServerConfig;
  readonly queues: TunQueues;
  readonly leases: LeaseService;
  readonly tls: { readonly key: string; readonly cert: string } | undefined;
  readonly logger: Logger;
  /** A worker's TUN queue failed: the device is gone for all of them; called once. */
  readonly onFatal: (err: Error) => void;
  /** Each report's counters, from `source` ("index:pid", one worker's life): accounting. */
  readonly onMetrics?: ((source: string, metrics: EngineProcessMetrics) => void) | undefined;
}

/** One session as status shows it, with the worker that holds it. */
export type WorkerSessionStatus = SessionStatus & { readonly worker: number };

interface Slot {
  readonly index: number;
  child: ChildProcess | undefined;
  ready: boolean;
  startedAt: number;
  restartDelay: number;
  restartTimer: NodeJS.Timeout | undefined;
  restarts: number;
  status: Extract<FromWorker, { t: 'status' }> | undefined;
  /** The last quota message sent to this worker's life, to send only changes. */
  quotaSent?: string | undefined;
}

export class WorkerSet {
  readonly #options: WorkerSetOptions;
  readonly #slots: Slot[];
  #tls: { readonly key: string; readonly cert: string } | undefined;
  /** The settings a worker starts with: the server's, as reloads changed them. */
  #config: ServerConfig;
  #next = 0;
  #closing = false;

  constructor(options: WorkerSetOptions) {
    this.#options = options;
    this.#tls = options.tls;
    this.#config = options.config;
    this.#slots = options.queues.fds.map((_, index) => ({
      index,
      child: undefined,
      ready: false,
      startedAt: 0,
      restartDelay: RESTART_DELAY_MS,
      restartTimer: undefined,
      restarts: 0,
      status: undefined,
    }));
  }

  get size(): number {
    return this.#slots.length;
  }

  /** Forks every worker; resolves when all are ready, rejects (FACADE_ERR_WORKER) if one is not. */
  async start(): Promise<void> {
    await Promise.all(this.#slots.map((slot) => this.#fork(slot)));
  }

  /** Gives a new connection to the next ready worker; with none ready it is reset, as a closed port would. */
  dispatch(socket: Socket): void {
    const count = this.#slots.length;
    for (let tried = 0; tried < count; tried++) {
      const slot = this.#slots[this.#next++ % count] as Slot;
      if (!slot.ready || slot.child === undefined || !slot.child.connected) continue;
      slot.child.send({ t: 'connection' } satisfies ToWorker, socket, { keepOpen: false }, (err) => {
        if (err !== null) socket.destroy();
      });
      return;
    }
    socket.resetAndDestroy();
  }

  /** A reload, for every worker; one restarted later starts with the reloaded settings. */
  reconfigure(pushed: PushedSettings, logLevel: string): void {
    this.#config = {
      ...this.#config,
      routes: pushed.routes,
      dns: pushed.dns,
      dnsDomains: pushed.dnsDomains,
      keepaliveMs: pushed.keepaliveMs,
      logLevel,
    };
    for (const slot of this.#slots) this.#send(slot, { t: 'reload', pushed, logLevel });
  }

  /** The accounting's quota decision, to every worker (each gets the limits for its own counters). */
  setQuota(state: QuotaState): void {
    for (const slot of this.#slots) {
      const pid = slot.child?.pid;
      if (pid === undefined || !slot.ready) continue;
      const message: ToWorker = {
        t: 'quota',
        blocked: [...state.blocked],
        allowances: [...state.allowancesFor(`${slot.index}:${pid}`)].map(
          ([user, { limit, message: text }]) => [user, limit, text] as const,
        ),
      };
      const text = JSON.stringify(message);
      if (text === slot.quotaSent) continue;
      slot.quotaSent = text;
      this.#send(slot, message);
    }
  }

  /** Each worker's last metrics report (for /metrics), with its index. */
  processMetrics(): { worker: number; metrics: EngineProcessMetrics }[] {
    return this.#slots.flatMap((slot) =>
      slot.status?.metrics === undefined ? [] : [{ worker: slot.index, metrics: slot.status.metrics }],
    );
  }

  setCertificate(pair: { readonly key: string; readonly cert: string }): void {
    this.#tls = pair;
    for (const slot of this.#slots) this.#send(slot, { t: 'certificate', key: pair.key, cert: pair.cert });
  }

  /** The sessions every worker reported last (at most a second old), with the worker that holds each. */
  sessions(): WorkerSessionStatus[] {
    return this.#slots.flatMap((slot) =>
      (slot.status?.sessions ?? []).map((session) => ({ ...session, worker: slot.index })),
    );
  }

  /** The workers' engine counters, summed. */
  engineStats(): EngineStats {
    const total: EngineStats = {
      sessions: 0,
      unknownDestinationDrops: 0,
      clientToClientDrops: 0,
      tunWriteDrops: 0,
    };
    for (const slot of this.#slots) {
      const stats = slot.status?.engine;
      if (stats === undefined) continue;
      for (const key of Object.keys(total) as (keyof EngineStats)[]) total[key] += stats[key];
    }
    return total;
  }

  /** The workers' queue counters, summed (largestBatch: the largest of any). */
  tunStats(): TunStats {
    const total = emptyTunStats();
    for (const slot of this.#slots) {
      const stats = slot.status?.tunStats;
      if (stats === undefined) continue;
      total.packetsRead += stats.packetsRead;
      total.bytesRead += stats.bytesRead;
      total.batches += stats.batches;
      total.packetsWritten += stats.packetsWritten;
      total.writeDrops += stats.writeDrops;
      total.largestBatch = Math.max(total.largestBatch, stats.largestBatch);
    }
    return total;
  }

  /** Per worker: pid, whether it is serving, sessions, restarts (status and the log). */
  workers(): {
    index: number;
    pid: number | undefined;
    ready: boolean;
    sessions: number;
    restarts: number;
  }[] {
    return this.#slots.map((slot) => ({
      index: slot.index,
      pid: slot.child?.pid,
      ready: slot.ready,
      sessions: slot.status?.sessions.length ?? 0,
      restarts: slot.restarts,
    }));
  }

  /** Ends every worker's sessions and waits for the workers to exit (killing one that does not). */
  async close(): Promise<void> {
    this.#closing = true;
    await Promise.all(
      this.#slots.map(async (slot) => {
        clearTimeout(slot.restartTimer);
        const child = slot.child;
        if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        this.#send(slot, { t: 'close' });
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  #send(slot: Slot, message: ToWorker): void {
    const child = slot.child;
    if (child?.connected) child.send(message);
  }

  #fork(slot: Slot): Promise<void> {
    const { queues, logger } = this.#options;
    const config = this.#config;
    const child = fork(WORKER_MAIN, [], {
      // stdio 0-2 as the primary's (logs go where the server's go), IPC at 3, the queue at 4.
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', queues.fds[slot.index] as number],
      execArgv: process.execArgv,
    });
    slot.child = child;
    slot.ready = false;
    slot.status = undefined;
    slot.quotaSent = undefined;
    slot.startedAt = Date.now();
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err === undefined) resolve();
        else reject(err);
      };
      const timer = setTimeout(() => {
        settle(facadeError('WORKER', [String(slot.index), `not ready within ${START_TIMEOUT_MS} ms`]));
        child.kill('SIGKILL');
      }, START_TIMEOUT_MS);
      child.on('message', (message: FromWorker) => {
        if (message.t === 'ready') {
          slot.ready = true;
          logger.info({ worker: slot.index, workerPid: child.pid }, 'worker ready');
          settle();
          return;
        }
        this.#onMessage(slot, message);
      });
      child.on('error', (err) => logger.warn({ worker: slot.index, err: err.message }, 'worker IPC error'));
      child.on('exit', (code, signal) => {
        settle(
          facadeError('WORKER', [
            String(slot.index),
            `exited during start-up (${signal ?? `code ${code}`}); its output above says why`,
          ]),
        );
        this.#onExit(slot, child, code, signal);
      });
      this.#send(slot, {
        t: 'init',
        worker: slot.index,
        config,
        tls: this.#tls,
        pool: poolShape(this.#options.leases.pool),
        tunName: queues.name,
        vnetHdr: queues.vnetHdr,
      });
    });
  }

  #onMessage(slot: Slot, message: FromWorker): void {
    const { leases } = this.#options;
    switch (message.t) {
      case 'lease': {
        let reply: ToWorker;
        try {
          const grant = leases.lease(slot.index, message.user, message.request);
          if (grant.replaces !== undefined) {
            const previous = this.#slots[grant.replaces];
            if (previous !== undefined) this.#send(previous, { t: 'replaced', user: message.user });
          }
          reply = { t: 'lease', id: message.id, lease: grant.lease };
        } catch (err) {
          reply = { t: 'lease', id: message.id, error: err instanceof Error ? err.message : String(err) };
        }
        this.#send(slot, reply);
        return;
      }
      case 'release':
        leases.release(message.user, message.generation);
        return;
      case 'status':
        slot.status = message;
        if (message.metrics !== undefined && slot.child?.pid !== undefined)
          this.#options.onMetrics?.(`${slot.index}:${slot.child.pid}`, message.metrics);
        return;
      case 'fatal':
        this.#options.onFatal(
          facadeError('WORKER', [String(slot.index), `its TUN queue failed: ${message.message}`]),
        );
        return;
      default:
        return;
    }
  }

  #onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.child !== child) return;
    slot.child = undefined;
    slot.ready = false;
    slot.status = undefined;
    const released = this.#options.leases.releaseWorker(slot.index);
    if (this.#closing) return;
    const { logger } = this.#options;
    // Crashing soon after a start makes the next pause longer; a worker that ran a while starts over.
    slot.restartDelay =
      Date.now() - slot.startedAt > STABLE_AFTER_MS
        ? RESTART_DELAY_MS
        : Math.min(slot.restartDelay * 2, RESTART_DELAY_MAX_MS);
    logger.error(
      {
        worker: slot.index,
        workerPid: child.pid,
        code,
        signal,
        sessionsLost: released,
        restartInMs: slot.restartDelay,
      },
      'worker exited; its clients reconnect to the others; restarting it',
    );
    slot.restartTimer = setTimeout(() => {
      slot.restarts++;
      this.#fork(slot).catch((err: unknown) =>
        logger.error(
          { worker: slot.index, err: err instanceof Error ? err.message : String(err) },
          'worker restart failed',
        ),
      );
    }, slot.restartDelay);
  }
}
