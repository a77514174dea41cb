// Accounting: bytes each way per user per UTC day, kept by the primary (the one process with workers)
// from the engines' cumulative counters, saved atomically to <state-dir>/usage.json at an interval and
// at shutdown, so a crash loses at most one interval. It also keeps, since the server started, each
// user's bytes and packets and the drops by reason, monotonic, for the metrics.
//
//   engine.counters() (per worker, cumulative) ─► observe(source) ─► differences ─► days, totals
//
// A source is one engine's life ("worker:pid"): a restarted worker starts from zero under a new name,
// so nothing is counted twice and nothing it counted is lost (what it moved between its last report and
// a crash is, at most STATUS_PUSH_MS of traffic).
//
// Quotas are decided here too: quotaState() says who is over their quota (refused at login) and, for
// each source, the counter value at which a user's session there must end (engine.setAllowances).

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PRIVATE_FILE_MODE, writeFileAtomic } from '../core/atomic-file.js';
import type { ByteAllowance, DropCounters, EngineCounters, UserCounters } from '../engine/engine.js';
import { dayOf, formatBytes, periodEnd, periodStart, type UserPolicy } from '../users/policy.js';

const USAGE_FILE_VERSION = 1;
/** Days kept in usage.json: a little over a year, enough for a monthly quota and last year's month. */
const KEEP_DAYS = 400;

/** One day of one user: bytes received from the client (in) and sent to it (out). */
export interface DayUsage {
  bytesIn: number;
  bytesOut: number;
}

/** What `facade status` and `facade user list` show of a user. */
export interface UserUsageSummary {
  readonly today: DayUsage;
  readonly month: DayUsage;
  /** Bytes both ways in the current quota period, when the user has a quota. */
  readonly quotaUsed?: number;
  readonly quotaBytes?: number;
  readonly quotaPeriod?: string;
}

/** Who is over quota, and where each quota user's session must end, per source. */
export interface QuotaState {
  readonly blocked: ReadonlySet<string>;
  allowancesFor(source: string): Map<string, ByteAllowance>;
}

export function usagePath(stateDir: string): string {
  return join(stateDir, 'usage.json');
}

export class Accounting {
  readonly path: string;
  /** user → day → usage. */
  readonly #days = new Map<string, Map<string, DayUsage>>();
  /** source → the counters it reported last. */
  readonly #last = new Map<string, EngineCounters>();
  readonly #totals = new Map<string, UserCounters>();
  readonly #drops: DropCounters = { spoof: 0, queueFull: 0, rateLimit: 0, invalid: 0, offload: 0 };
  readonly #now: () => number;
  #dirty = false;

  private constructor(path: string, now: () => number) {
    this.path = path;
    this.#now = now;
  }

  /** Reads usage.json (none yet: empty). A damaged file starts over, with the reason in `loadWarning`. */
  static async load(stateDir: string, options: { now?: () => number } = {}): Promise<Accounting> {
    const accounting = new Accounting(usagePath(stateDir), options.now ?? Date.now);
    let text: string;
    try {
      text = await readFile(accounting.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        accounting.loadWarning = `cannot read ${accounting.path}: ${String(err)}; usage starts from zero`;
      return accounting;
    }
    try {
      const json = JSON.parse(text) as { version?: unknown; days?: Record<string, Record<string, unknown>> };
      if (json.version !== USAGE_FILE_VERSION || typeof json.days !== 'object' || json.days === null)
        throw new Error(`expected version ${USAGE_FILE_VERSION} with "days"`);
      for (const [user, days] of Object.entries(json.days)) {
        const map = new Map<string, DayUsage>();
        for (const [day, pair] of Object.entries(days)) {
          if (!Array.isArray(pair) || pair.length !== 2 || !pair.every(Number.isSafeInteger)) continue;
          map.set(day, { bytesIn: pair[0] as number, bytesOut: pair[1] as number });
        }
        accounting.#days.set(user, map);
      }
    } catch (err) {
      accounting.loadWarning = `${accounting.path} is damaged (${err instanceof Error ? err.message : String(err)}); usage starts from zero`;
    }
    return accounting;
  }

  loadWarning: string | undefined;

  /** An engine's cumulative counters: what grew since its last report is added to today. */
  observe(source: string, counters: EngineCounters): void {
    const last = this.#last.get(source);
    this.#last.set(source, counters);
    const today = dayOf(this.#now());
    for (const [user, now] of Object.entries(counters.users)) {
      const before = last?.users[user];
      const dIn = now.bytesIn - (before?.bytesIn ?? 0);
      const dOut = now.bytesOut - (before?.bytesOut ?? 0);
      const dPacketsIn = now.packetsIn - (before?.packetsIn ?? 0);
      const dPacketsOut = now.packetsOut - (before?.packetsOut ?? 0);
      if (dIn === 0 && dOut === 0 && dPacketsIn === 0 && dPacketsOut === 0) continue;
      const total = this.#totals.get(user) ?? { bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0 };
      total.bytesIn += dIn;
      total.bytesOut += dOut;
      total.packetsIn += dPacketsIn;
      total.packetsOut += dPacketsOut;
      this.#totals.set(user, total);
      let days = this.#days.get(user);
      if (days === undefined) {
        days = new Map();
        this.#days.set(user, days);
      }
      const day = days.get(today) ?? { bytesIn: 0, bytesOut: 0 };
      day.bytesIn += dIn;
      day.bytesOut += dOut;
      days.set(today, day);
      this.#dirty = true;
    }
    for (const key of Object.keys(this.#drops) as (keyof DropCounters)[])
      this.#drops[key] += counters.drops[key] - (last?.drops[key] ?? 0);
  }

  /** Forgets a source that is gone (a worker that exited), after its last report was observed. */
  forget(source: string): void {
    this.#last.delete(source);
  }

  /** Each user's bytes and packets since the server started (monotonic: Prometheus counters). */
  totals(): ReadonlyMap<string, UserCounters> {
    return this.#totals;
  }

  /** Drops by reason since the server started. */
  drops(): Readonly<DropCounters> {
    return this.#drops;
  }

  /** Bytes both ways in the days from `firstDay` (inclusive) to today. */
  usedSince(user: string, firstDay: string): number {
    let used = 0;
    for (const [day, usage] of this.#days.get(user) ?? []) {
      if (day >= firstDay) used += usage.bytesIn + usage.bytesOut;
    }
    return used;
  }

  summary(user: string, policy: UserPolicy | undefined): UserUsageSummary {
    const now = this.#now();
    const today = dayOf(now);
    const monthStart = periodStart('month', now);
    const month = { bytesIn: 0, bytesOut: 0 };
    for (const [day, usage] of this.#days.get(user) ?? []) {
      if (day < monthStart) continue;
      month.bytesIn += usage.bytesIn;
      month.bytesOut += usage.bytesOut;
    }
    const todayUsage = this.#days.get(user)?.get(today) ?? { bytesIn: 0, bytesOut: 0 };
    if (policy?.quotaBytes === undefined || policy.quotaPeriod === undefined)
      return { today: { ...todayUsage }, month };
    return {
      today: { ...todayUsage },
      month,
      quotaUsed: this.usedSince(user, periodStart(policy.quotaPeriod, now)),
      quotaBytes: policy.quotaBytes,
      quotaPeriod: policy.quotaPeriod,
    };
  }

  /** Every user with any usage recorded, sorted. */
  users(): string[] {
    return [...this.#days.keys()].sort();
  }

  /**
   * Who is over quota now, and for each source the counter value where each quota user's session there
   * ends: what the source reported last, plus what the user has left in the period.
   */
  quotaState(policies: Iterable<{ name: string; policy?: UserPolicy | undefined }>): QuotaState {
    const now = this.#now();
    const blocked = new Set<string>();
    const left = new Map<string, { remaining: number; message: string }>();
    for (const { name, policy } of policies) {
      if (policy?.quotaBytes === undefined || policy.quotaPeriod === undefined) continue;
      const remaining = policy.quotaBytes - this.usedSince(name, periodStart(policy.quotaPeriod, now));
      const message = `data quota of ${formatBytes(policy.quotaBytes)} a ${policy.quotaPeriod} used up; it renews at ${periodEnd(policy.quotaPeriod, now)}`;
      if (remaining <= 0) blocked.add(name);
      left.set(name, { remaining, message });
    }
    return {
      blocked,
      allowancesFor: (source) => {
        const last = this.#last.get(source);
        const out = new Map<string, ByteAllowance>();
        for (const [user, { remaining, message }] of left) {
          const counters = last?.users[user];
          const base = counters === undefined ? 0 : counters.bytesIn + counters.bytesOut;
          out.set(user, { limit: base + Math.max(0, remaining), message });
        }
        return out;
      },
    };
  }

  /** Writes usage.json atomically when anything changed since the last save; old days are dropped. */
  async save(): Promise<void> {
    if (!this.#dirty) return;
    this.#dirty = false;
    const oldest = dayOf(this.#now() - KEEP_DAYS * 86_400_000);
    const days: Record<string, Record<string, [number, number]>> = Object.create(null);
    for (const [user, map] of [...this.#days].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const out: Record<string, [number, number]> = {};
      for (const [day, usage] of [...map].sort(([a], [b]) => (a < b ? -1 : 1))) {
        if (day < oldest) map.delete(day);
        else out[day] = [usage.bytesIn, usage.bytesOut];
      }
      days[user] = out;
    }
    try {
      await writeFileAtomic(
        this.path,
        `${JSON.stringify({ version: USAGE_FILE_VERSION, days })}\n`,
        PRIVATE_FILE_MODE,
      );
    } catch (err) {
      this.#dirty = true;
      throw err;
    }
  }
}
