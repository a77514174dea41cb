// One status snapshot: what `facade status`, status.json and (later) metrics read. Its type is declared
// here once; the engine, pool and TUN supply their parts.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../core/atomic-file.js';
import type { EngineStats, SessionStatus } from '../engine/engine.js';
import type { PoolStats } from '../engine/pool.js';
import type { TunStats } from '../net/tun.js';
import type { UserUsageSummary } from './accounting.js';

export interface StatusSnapshot {
  readonly pid: number;
  /** ISO 8601 time the snapshot was taken. */
  readonly updated: string;
  /** "host:port" of the site. */
  readonly listen: string;
  readonly tun: string;
  readonly pool: PoolStats;
  /** With --workers N: each worker process (absent with one process). */
  readonly workers?: readonly WorkerStatus[] | undefined;
  /** Summed over the workers. */
  readonly engine: EngineStats;
  readonly tunStats: TunStats;
  /** With --workers N each carries `worker`, the index of the worker holding it. */
  readonly sessions: readonly (SessionStatus & { readonly worker?: number })[];
  /** Each user's bytes today and this month (UTC), and of their quota period when they have a quota. */
  readonly usage?: Readonly<Record<string, UserUsageSummary>>;
}

export interface WorkerStatus {
  readonly index: number;
  readonly pid: number | undefined;
  /** Serving (false while it starts or restarts). */
  readonly ready: boolean;
  readonly sessions: number;
  /** Times it was restarted after a crash. */
  readonly restarts: number;
}

/** Where the server keeps its last snapshot. */
export function statusPath(stateDir: string): string {
  return join(stateDir, 'status.json');
}

/** Atomic: `facade status` may read at any moment and must never see half a file. */
export function writeStatusFile(stateDir: string, snapshot: StatusSnapshot): Promise<void> {
  return writeFileAtomic(statusPath(stateDir), `${JSON.stringify(snapshot, null, 2)}\n`);
}

/** The last snapshot a server wrote, or undefined when there is none (never started, other state dir). */
export async function readStatusFile(stateDir: string): Promise<StatusSnapshot | undefined> {
  try {
    return JSON.parse(await readFile(statusPath(stateDir), 'utf8')) as StatusSnapshot;
  } catch {
    return undefined;
  }
}
