// What the primary and its workers say to each other over the IPC channel of `facade server --workers N`
// (JSON; a handed-over connection travels as the handle of a 'connection' message).

import type { ServerConfig } from '../config/schema.js';
import type { EngineStats, PoolShape, PushedSettings, SessionStatus } from '../engine/engine.js';
import type { Lease, StaticAddressRequest } from '../engine/pool.js';
import type { TunStats } from '../net/tun.js';
import type { EngineProcessMetrics } from './process-metrics.js';

/** The queue fd's number in a worker: stdio 0-2, the IPC channel at 3, the queue at 4. */
export const WORKER_QUEUE_FD = 4;

export type ToWorker =
  | {
      readonly t: 'init';
      readonly worker: number;
      readonly config: ServerConfig;
      readonly tls: { readonly key: string; readonly cert: string } | undefined;
      readonly pool: PoolShape;
      readonly tunName: string;
      readonly vnetHdr: boolean;
    }
  /** Comes with a socket handle: a new TCP connection to the site's port. */
  | { readonly t: 'connection' }
  | { readonly t: 'certificate'; readonly key: string; readonly cert: string }
  | { readonly t: 'lease'; readonly id: number; readonly lease?: Lease; readonly error?: string }
  /** The user connected again on another worker: end their session here. */
  | { readonly t: 'replaced'; readonly user: string }
  /** A reload: pushed settings for new sessions, the log level; the worker re-reads the users file. */
  | { readonly t: 'reload'; readonly pushed: PushedSettings; readonly logLevel: string }
  /**
   * The primary's quota decision: users over quota (refused at login) and, per user with a quota, the
   * value of this worker's counter (bytesIn + bytesOut) at which their session ends, with the reason.
   */
  | {
      readonly t: 'quota';
      readonly blocked: readonly string[];
      readonly allowances: readonly (readonly [user: string, limit: number, message: string])[];
    }
  | { readonly t: 'close' };

export type FromWorker =
  | { readonly t: 'ready' }
  | {
      readonly t: 'lease';
      readonly id: number;
      readonly user: string;
      readonly request: StaticAddressRequest;
    }
  | { readonly t: 'release'; readonly user: string; readonly generation: number }
  | {
      readonly t: 'status';
      readonly engine: EngineStats;
      readonly tunStats: TunStats;
      readonly sessions: readonly SessionStatus[];
      /** Counters for accounting and metrics (policy and metrics, issue 13). */
      readonly metrics?: EngineProcessMetrics;
    }
  /** The worker's TUN queue failed: the whole server must stop (every worker shares the device). */
  | { readonly t: 'fatal'; readonly message: string; readonly code: string | undefined };
