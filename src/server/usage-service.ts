// The primary's accounting and quotas at work: observes the engines' counters (a worker's reports, or
// the one engine every POLICY_TICK_MS), decides the quotas each tick and hands the decision to the data
// plane, and saves usage.json every USAGE_SAVE_MS and at shutdown (close()).

import type { Logger } from '../core/log.js';
import type { EngineCounters } from '../engine/engine.js';
import type { UserPolicy } from '../users/policy.js';
import { Accounting, type QuotaState, type UserUsageSummary } from './accounting.js';
import { POLICY_TICK_MS } from './policy-agent.js';

/** How often usage.json is written: a crash loses at most this much of the accounting. */
export const USAGE_SAVE_MS = 30_000;

export interface UsageServiceOptions {
  readonly stateDir: string;
  readonly logger: Logger;
  /** The users and their policy, as the users file has them now. */
  readonly users: () => Iterable<{ name: string; policy?: UserPolicy | undefined }>;
  readonly now?: () => number;
}

/** What the service needs of the data plane. */
export interface QuotaPlane {
  /** The one engine's counters in a single process (observed each tick); undefined with workers. */
  localCounters(): EngineCounters | undefined;
  setQuota(state: QuotaState): void;
}

export class UsageService {
  readonly accounting: Accounting;
  readonly #options: UsageServiceOptions;
  #plane: QuotaPlane | undefined;
  #tick: NodeJS.Timeout | undefined;
  #save: NodeJS.Timeout | undefined;
  #saveFailing = false;

  private constructor(accounting: Accounting, options: UsageServiceOptions) {
    this.accounting = accounting;
    this.#options = options;
  }

  static async load(options: UsageServiceOptions): Promise<UsageService> {
    const accounting = await Accounting.load(options.stateDir, options.now ? { now: options.now } : {});
    if (accounting.loadWarning !== undefined) options.logger.warn(accounting.loadWarning);
    return new UsageService(accounting, options);
  }

  /**
   * An engine's cumulative counters; `source` names one engine's life ("worker:pid"). The quota decision
   * follows at once: a worker reports within 100 ms of a session ending, so a user who spent their quota
   * there is refused on every worker before their client's next attempt (a second away) arrives.
   */
  readonly observe = (source: string, counters: EngineCounters): void => {
    this.accounting.observe(source, counters);
    this.#plane?.setQuota(this.accounting.quotaState(this.#options.users()));
  };

  /** Starts the ticks once the data plane exists. */
  start(plane: QuotaPlane): void {
    this.#plane = plane;
    this.tick();
    this.#tick = setInterval(() => this.tick(), POLICY_TICK_MS);
    this.#tick.unref();
    this.#save = setInterval(() => void this.save(), USAGE_SAVE_MS);
    this.#save.unref();
  }

  /** Observes the local engine (one process) and hands the quota decision to the plane. */
  tick(): void {
    const plane = this.#plane;
    if (plane === undefined) return;
    const local = plane.localCounters();
    if (local !== undefined) this.accounting.observe(`0:${process.pid}`, local);
    plane.setQuota(this.accounting.quotaState(this.#options.users()));
  }

  /** Each user's usage as status shows it. */
  summaries(): Record<string, UserUsageSummary> {
    const out: Record<string, UserUsageSummary> = {};
    const seen = new Set<string>();
    for (const user of this.#options.users()) {
      seen.add(user.name);
      out[user.name] = this.accounting.summary(user.name, user.policy);
    }
    for (const name of this.accounting.users())
      if (!seen.has(name)) out[name] = this.accounting.summary(name, undefined);
    return out;
  }

  async save(): Promise<void> {
    try {
      await this.accounting.save();
      if (this.#saveFailing) this.#options.logger.info('usage.json is written again');
      this.#saveFailing = false;
    } catch (err) {
      if (!this.#saveFailing)
        this.#options.logger.warn(
          { err: err instanceof Error ? err.message : String(err) },
          'could not save usage.json',
        );
      this.#saveFailing = true;
    }
  }

  /** The last observation (a single process's engine, already closed) and the last save. */
  async close(): Promise<void> {
    clearInterval(this.#tick);
    clearInterval(this.#save);
    const local = this.#plane?.localCounters();
    if (local !== undefined) this.observe(`0:${process.pid}`, local);
    await this.save();
  }
}
